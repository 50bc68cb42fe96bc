# The C declarations of _seal_c.pyx, for the native modules that open and seal packets
# without a Python call between (server/_udpbatch_c.pyx): its classes, their C state and
# their C entry points.

from libc.stdint cimport uint8_t, uint64_t

cdef extern from "<openssl/evp.h>" nogil:
    ctypedef struct EVP_CIPHER_CTX:
        pass
    ctypedef struct EVP_CIPHER:
        pass
    ctypedef struct ENGINE:
        pass
    EVP_CIPHER_CTX *EVP_CIPHER_CTX_new()
    void EVP_CIPHER_CTX_free(EVP_CIPHER_CTX *ctx)
    int EVP_CIPHER_CTX_ctrl(EVP_CIPHER_CTX *ctx, int type, int arg, void *ptr)
    const EVP_CIPHER *EVP_aes_256_gcm()
    int EVP_EncryptInit_ex(EVP_CIPHER_CTX *ctx, const EVP_CIPHER *cipher, ENGINE *impl, const unsigned char *key, const unsigned char *iv)
    int EVP_EncryptUpdate(EVP_CIPHER_CTX *ctx, unsigned char *out, int *outl, const unsigned char *inp, int inl)
    int EVP_EncryptFinal_ex(EVP_CIPHER_CTX *ctx, unsigned char *out, int *outl)
    int EVP_DecryptInit_ex(EVP_CIPHER_CTX *ctx, const EVP_CIPHER *cipher, ENGINE *impl, const unsigned char *key, const unsigned char *iv)
    int EVP_DecryptUpdate(EVP_CIPHER_CTX *ctx, unsigned char *out, int *outl, const unsigned char *inp, int inl)
    int EVP_DecryptFinal_ex(EVP_CIPHER_CTX *ctx, unsigned char *outm, int *outl)
    int EVP_CTRL_GCM_GET_TAG
    int EVP_CTRL_GCM_SET_TAG

cdef enum:
    HEADER_SIZE = 17  # kind, session id (8), sequence (8)
    TAG_SIZE = 16
    KEY_SIZE = 32
    SESSION_ID_SIZE = 8
    WINDOW = 64  # ReplayWindow.SIZE
    MAX_LABEL = 64


cdef class _Direction:
    cdef EVP_CIPHER_CTX *ctx
    cdef uint8_t session_id[SESSION_ID_SIZE]
    cdef uint8_t aad[HEADER_SIZE + MAX_LABEL]  # the header, then the protocol label
    cdef uint8_t nonce[12]


cdef class Sealer(_Direction):
    cdef public unsigned long long seq

    cdef bytes seal_c(self, int kind, bytes payload)
    cdef bytes seal_parts(self, int kind, const uint8_t *head, Py_ssize_t head_size, const uint8_t *body, Py_ssize_t body_size)


cdef class Opener(_Direction):
    cdef public unsigned long long newest  # the newest sequence authenticated (0: none yet)
    cdef uint64_t seen  # bit i: newest - 1 - i was authenticated

    cdef bytes open_c(self, const uint8_t *data, Py_ssize_t size, int *kind)
