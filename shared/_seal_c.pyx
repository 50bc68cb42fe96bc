# cython: language_level=3, boundscheck=False, wraparound=False
"""The fast path's packet protection in native code: AES-256-GCM through OpenSSL's EVP,
with the cipher's key schedule set up once per direction rather than once per packet.

The twin of ``_seal_py.py`` (``cryptography``'s AESGCM, which builds a cipher context for
every call): the same packets, byte for byte, and the same refusals for the same reasons.
``shared/fastpath.py`` describes the packet and picks one at import.
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from libc.string cimport memcmp, memcpy, memset

from tickline.shared.fastpath import KINDS, LABEL, Dropped

cdef bytes _LABEL = LABEL
cdef Py_ssize_t _LABEL_SIZE = len(LABEL)
cdef frozenset _KINDS = KINDS
assert _LABEL_SIZE <= MAX_LABEL


cdef inline void _put_u64(uint8_t *out, uint64_t value) noexcept nogil:
    cdef int i
    for i in range(8):
        out[7 - i] = <uint8_t>(value >> (8 * i))


cdef inline uint64_t _get_u64(const uint8_t *data) noexcept nogil:
    cdef uint64_t value = 0
    cdef int i
    for i in range(8):
        value = (value << 8) | data[i]
    return value


cdef class _Direction:
    """One key, its EVP context, and the session id every packet names."""

    def __cinit__(self, bytes key, bytes session_id):
        if len(key) != KEY_SIZE:
            raise ValueError("AESGCM key must be 128, 192, or 256 bits.")
        if len(session_id) != SESSION_ID_SIZE:
            raise ValueError(f"a session id is {SESSION_ID_SIZE} bytes")
        self.ctx = EVP_CIPHER_CTX_new()
        if self.ctx == NULL:
            raise MemoryError()
        memcpy(self.session_id, PyBytes_AS_STRING(session_id), SESSION_ID_SIZE)
        memcpy(&self.aad[HEADER_SIZE], PyBytes_AS_STRING(_LABEL), _LABEL_SIZE)
        memset(self.nonce, 0, 4)

    def __dealloc__(self):
        if self.ctx != NULL:
            EVP_CIPHER_CTX_free(self.ctx)


cdef class Sealer(_Direction):
    """One direction's sending side: seals payloads under its key with rising sequences."""

    def __init__(self, bytes key, bytes session_id):
        if EVP_EncryptInit_ex(self.ctx, EVP_aes_256_gcm(), NULL, <const unsigned char *>PyBytes_AS_STRING(key), NULL) != 1:
            raise RuntimeError("OpenSSL refused the AES-256-GCM key")
        self.seq = 0

    def seal(self, int kind, bytes payload):
        """The packet of ``payload`` as ``kind``, sealed under the next sequence."""
        return self.seal_c(kind, payload)

    cdef bytes seal_c(self, int kind, bytes payload):
        return self.seal_parts(kind, NULL, 0, <const uint8_t *>PyBytes_AS_STRING(payload), PyBytes_GET_SIZE(payload))

    cdef bytes seal_parts(self, int kind, const uint8_t *head, Py_ssize_t head_size, const uint8_t *body, Py_ssize_t body_size):
        """The packet of ``head`` then ``body`` as one payload: a caller that writes a header
        before bytes it already has seals them without joining them first."""
        cdef Py_ssize_t size = head_size + body_size
        cdef int outl = 0, finl = 0
        cdef uint8_t *out
        if not 0 <= kind <= 255:
            raise ValueError("a packet kind is one byte")
        if size > 65535:
            raise ValueError("a fast-path payload must fit a datagram")
        self.seq += 1
        packet = PyBytes_FromStringAndSize(NULL, HEADER_SIZE + size + TAG_SIZE)
        out = <uint8_t *>PyBytes_AS_STRING(packet)
        out[0] = <uint8_t>kind
        memcpy(&out[1], self.session_id, SESSION_ID_SIZE)
        _put_u64(&out[9], self.seq)
        memcpy(self.aad, out, HEADER_SIZE)
        memcpy(&self.nonce[4], &out[9], 8)
        # The payload is put together in the packet and encrypted where it lies: one call to
        # the cipher, as for one body (a second, for a few bytes of header, costs more than
        # the copy).
        if head_size:
            memcpy(&out[HEADER_SIZE], head, head_size)
        memcpy(&out[HEADER_SIZE + head_size], body, body_size)
        if (
            EVP_EncryptInit_ex(self.ctx, NULL, NULL, NULL, self.nonce) != 1
            or EVP_EncryptUpdate(self.ctx, NULL, &outl, self.aad, <int>(HEADER_SIZE + _LABEL_SIZE)) != 1
            or EVP_EncryptUpdate(self.ctx, &out[HEADER_SIZE], &outl, &out[HEADER_SIZE], <int>size) != 1
            or EVP_EncryptFinal_ex(self.ctx, &out[HEADER_SIZE + size], &finl) != 1
            or EVP_CIPHER_CTX_ctrl(self.ctx, EVP_CTRL_GCM_GET_TAG, TAG_SIZE, &out[HEADER_SIZE + size]) != 1
        ):
            raise RuntimeError("OpenSSL failed to seal a packet")
        return packet


cdef class Opener(_Direction):
    """One direction's receiving side: authenticates packets and keeps the replay window."""

    def __init__(self, bytes key, bytes session_id):
        if EVP_DecryptInit_ex(self.ctx, EVP_aes_256_gcm(), NULL, <const unsigned char *>PyBytes_AS_STRING(key), NULL) != 1:
            raise RuntimeError("OpenSSL refused the AES-256-GCM key")
        self.newest = 0
        self.seen = 0

    def open(self, bytes packet):
        """(kind, payload) of an authentic, new packet; raises Dropped otherwise."""
        cdef int kind = 0
        payload = self.open_c(<const uint8_t *>PyBytes_AS_STRING(packet), PyBytes_GET_SIZE(packet), &kind)
        return kind, payload

    cdef bytes open_c(self, const uint8_t *data, Py_ssize_t size, int *kind):
        """The payload of the authentic, new packet at ``data`` (its kind in ``kind``); raises
        Dropped otherwise."""
        cdef Py_ssize_t body
        cdef uint64_t seq, behind, shift
        cdef int outl = 0, finl = 0
        cdef uint8_t rest[TAG_SIZE]  # (GCM's final step writes nothing here)
        if size < HEADER_SIZE + TAG_SIZE:
            raise Dropped("short")
        if data[0] not in _KINDS:
            raise Dropped("kind")
        if memcmp(&data[1], self.session_id, SESSION_ID_SIZE) != 0:
            raise Dropped("session")
        seq = _get_u64(&data[9])
        if seq <= self.newest:  # the replay window, checked before decrypting
            behind = self.newest - seq
            if behind == 0:
                raise Dropped("replayed")
            if behind > WINDOW:
                raise Dropped("too_old")
            raise Dropped("replayed" if (self.seen >> (behind - 1)) & 1 else "late")
        body = size - HEADER_SIZE - TAG_SIZE
        payload = PyBytes_FromStringAndSize(NULL, body)
        memcpy(self.aad, data, HEADER_SIZE)
        memcpy(&self.nonce[4], &data[9], 8)
        if (
            EVP_DecryptInit_ex(self.ctx, NULL, NULL, NULL, self.nonce) != 1
            or EVP_DecryptUpdate(self.ctx, NULL, &outl, self.aad, <int>(HEADER_SIZE + _LABEL_SIZE)) != 1
            or EVP_DecryptUpdate(self.ctx, <uint8_t *>PyBytes_AS_STRING(payload), &outl, &data[HEADER_SIZE], <int>body) != 1
            or EVP_CIPHER_CTX_ctrl(self.ctx, EVP_CTRL_GCM_SET_TAG, TAG_SIZE, <void *>&data[size - TAG_SIZE]) != 1
            or EVP_DecryptFinal_ex(self.ctx, rest, &finl) != 1
        ):
            raise Dropped("auth")
        shift = seq - self.newest
        if shift >= WINDOW + 1:
            self.seen = 0
        elif shift == WINDOW:  # (a shift by 64 is undefined in C)
            self.seen = <uint64_t>1 << (WINDOW - 1)
        else:
            self.seen = (self.seen << shift) | (<uint64_t>1 << (shift - 1))
        self.newest = seq
        kind[0] = data[0]
        return payload
