# cython: language_level=3, boundscheck=False, wraparound=False
"""Many UDP datagrams in one system call: ``sendmmsg(2)`` for the fast path's sends of a tick.

The twin of ``_sendbatch_py.py``: a :class:`Sender` on a non-blocking UDP socket's file
descriptor; ``send(packets)`` sends each ``(payload, address)`` in order and returns how many
the kernel took, stopping at the first it would not take now, or whose address it cannot
read; the caller hands the rest to its transport, which buffers and reports as usual.
"""

from libc.stdlib cimport calloc, free
from libc.string cimport memset
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE

cdef extern from "<sys/uio.h>" nogil:
    struct iovec:
        void *iov_base
        size_t iov_len

cdef extern from "<sys/socket.h>" nogil:
    ctypedef unsigned int socklen_t
    ctypedef unsigned short sa_family_t
    struct sockaddr_storage:
        sa_family_t ss_family
    struct msghdr:
        void *msg_name
        socklen_t msg_namelen
        iovec *msg_iov
        size_t msg_iovlen
        void *msg_control
        size_t msg_controllen
        int msg_flags
    struct mmsghdr:
        msghdr msg_hdr
        unsigned int msg_len
    int sendmmsg(int sockfd, mmsghdr *msgvec, unsigned int vlen, int flags)
    int AF_INET
    int AF_INET6
    int MSG_DONTWAIT

cdef extern from "<netinet/in.h>" nogil:
    struct in_addr:
        pass
    struct in6_addr:
        pass
    struct sockaddr_in:
        sa_family_t sin_family
        unsigned short sin_port
        in_addr sin_addr
    struct sockaddr_in6:
        sa_family_t sin6_family
        unsigned short sin6_port
        unsigned int sin6_flowinfo
        in6_addr sin6_addr
        unsigned int sin6_scope_id
    unsigned short htons(unsigned short)
    unsigned int htonl(unsigned int)

cdef extern from "<arpa/inet.h>" nogil:
    int inet_pton(int af, const char *src, void *dst)

cdef enum:
    _MAX_BATCH = 1024  # messages a call at most (Linux's UIO_MAXIOV)


cdef bint _fill(int family, object address, sockaddr_storage *out, socklen_t *length) except -1:
    """Write ``address`` ((host, port), or IPv6's 4-tuple) as a sockaddr; False if it is not one."""
    cdef sockaddr_in *v4
    cdef sockaddr_in6 *v6
    if type(address) is not tuple or not (len(address) == 2 or (family == AF_INET6 and len(address) <= 4)):
        return False
    host, port = address[0], address[1]
    if type(host) is not str or "%" in host or type(port) is not int or not 0 <= port <= 65535:
        return False
    encoded = host.encode("ascii", "replace")
    memset(out, 0, sizeof(sockaddr_storage))
    if family == AF_INET:
        v4 = <sockaddr_in *>out
        v4.sin_family = AF_INET
        v4.sin_port = htons(port)
        if inet_pton(AF_INET, encoded, &v4.sin_addr) != 1:
            return False
        length[0] = sizeof(sockaddr_in)
        return True
    if family == AF_INET6:
        v6 = <sockaddr_in6 *>out
        v6.sin6_family = AF_INET6
        v6.sin6_port = htons(port)
        if len(address) >= 3:
            if type(address[2]) is not int or not 0 <= address[2] < 2**20:
                return False
            v6.sin6_flowinfo = htonl(address[2])
        if len(address) == 4:
            if type(address[3]) is not int or not 0 <= address[3] < 2**32:
                return False
            v6.sin6_scope_id = address[3]
        if inet_pton(AF_INET6, encoded, &v6.sin6_addr) != 1:
            return False
        length[0] = sizeof(sockaddr_in6)
        return True
    return False


cdef class Sender:
    """Sends batches of datagrams from the socket ``fd`` of address family ``family``."""

    cdef int fd
    cdef int family
    cdef public long long calls  # system calls made

    def __init__(self, int fd, int family):
        self.fd, self.family, self.calls = fd, family, 0

    def send(self, list packets):
        """Send ``packets`` ([(payload, address)], payloads bytes) in order; how many were sent."""
        cdef Py_ssize_t total = len(packets), done = 0, n, i
        cdef mmsghdr *messages
        cdef iovec *vectors
        cdef sockaddr_storage *names
        cdef socklen_t length
        cdef int sent
        if total == 0:
            return 0
        n = min(total, _MAX_BATCH)
        messages = <mmsghdr *>calloc(n, sizeof(mmsghdr))
        vectors = <iovec *>calloc(n, sizeof(iovec))
        names = <sockaddr_storage *>calloc(n, sizeof(sockaddr_storage))
        if messages == NULL or vectors == NULL or names == NULL:
            free(messages)
            free(vectors)
            free(names)
            raise MemoryError()
        try:
            while done < total:
                n = 0
                while done + n < total and n < _MAX_BATCH:
                    item = packets[done + n]
                    if type(item) is not tuple or len(<tuple>item) != 2:
                        break
                    payload = (<tuple>item)[0]
                    if type(payload) is not bytes or not _fill(self.family, (<tuple>item)[1], &names[n], &length):
                        break
                    vectors[n].iov_base = <void *>PyBytes_AS_STRING(payload)
                    vectors[n].iov_len = <size_t>PyBytes_GET_SIZE(payload)
                    messages[n].msg_hdr.msg_name = &names[n]
                    messages[n].msg_hdr.msg_namelen = length
                    messages[n].msg_hdr.msg_iov = &vectors[n]
                    messages[n].msg_hdr.msg_iovlen = 1
                    n += 1
                if n == 0:
                    break  # one it cannot send: the caller's transport takes it from here
                with nogil:  # (the list holds every payload until the call returns)
                    sent = sendmmsg(self.fd, messages, <unsigned int>n, MSG_DONTWAIT)
                self.calls += 1
                if sent <= 0:
                    break  # would block, or an error: the transport buffers, or reports it
                done += sent
                if sent < n:
                    break
        finally:
            free(messages)
            free(vectors)
            free(names)
        return done
