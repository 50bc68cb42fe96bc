# cython: language_level=3, boundscheck=False, wraparound=False
"""Many UDP datagrams in one system call: ``sendmmsg(2)`` for the fast path's sends of a tick,
``recvmmsg(2)`` for the server socket's reads at a tick boundary.

The twin of ``_udpbatch_py.py``, on a non-blocking UDP socket's file descriptor:

- a :class:`Sender`: ``send(packets)`` sends each ``(payload, address)`` in order and returns
  how many the kernel took, stopping at the first it would not take now, or whose address it
  cannot read; the caller hands the rest to its transport, which buffers and reports as usual.
- a :class:`Receiver`: ``receive(limit)`` returns up to ``limit`` queued datagrams as
  ``(payload, address)``, addresses as the socket module gives them (IPv6: host, port, flow
  label, scope id; a link-local host without its ``%zone``); an empty list when none is
  queued, OSError for an error the socket reported with nothing read before it.
- an :class:`Outbox`: the fast path's packets of one loop turn, each sealed as it is queued
  (``send(route, body)``, or through a route's :class:`Port`), sent together
  (``send_all(sender)``, each route's address written as a sockaddr once rather than per
  packet) or taken (``take()``). A session's deltas reach it with no Python frame between
  them and the seal.
- an :class:`Inbox`: the fast path's packets of a read, each opened (its replay window
  checked) and handed to its route (``receive_batch(batch, on_error)``, which returns the
  rest, QUIC's, in order): an input packet reaches its session with no Python frame before.
  ``drain(receiver, limit, on_error)`` reads the batch itself and opens each packet in the
  receiver's buffer: an input from its client's own address makes no Python object but its
  payload.
"""

from libc.errno cimport EAGAIN, EINTR, errno
from libc.stdint cimport uint8_t
from libc.stdlib cimport calloc, free, malloc
from libc.string cimport memcmp, memcpy, memset, strerror
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE

from tickline.shared._seal_c cimport Opener, Sealer

from tickline.server._udpbatch_py import address_key  # (one function for both twins)
from tickline.shared.fastpath import DATA, QUIC_FIXED_BIT, Dropped, server_ends, session_of

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
    int recvmmsg(int sockfd, mmsghdr *msgvec, unsigned int vlen, int flags, void *timeout)
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
    unsigned short ntohs(unsigned short)
    unsigned int htonl(unsigned int)
    unsigned int ntohl(unsigned int)

cdef extern from "<arpa/inet.h>" nogil:
    int inet_pton(int af, const char *src, void *dst)
    const char *inet_ntop(int af, const void *src, char *dst, socklen_t size)

cdef enum:
    _MAX_BATCH = 1024  # messages a call at most (Linux's UIO_MAXIOV)
    _V4_KEY = 7  # address_key's lengths: family, port, address
    _V6_KEY = 27  # family, port, flow info, address, scope id


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


cdef inline void _message(mmsghdr *message, iovec *vector, bytes payload, void *name, socklen_t size) noexcept:
    """``message`` (with ``vector``) to send ``payload`` to the sockaddr ``name``."""
    vector.iov_base = <void *>PyBytes_AS_STRING(payload)
    vector.iov_len = <size_t>PyBytes_GET_SIZE(payload)
    message.msg_hdr.msg_name = name
    message.msg_hdr.msg_namelen = size
    message.msg_hdr.msg_iov = vector
    message.msg_hdr.msg_iovlen = 1


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
        cdef Py_ssize_t sent
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
                    _message(&messages[n], &vectors[n], <bytes>payload, &names[n], length)
                    n += 1
                if n == 0:
                    break  # one it cannot send: the caller's transport takes it from here
                sent = self._transmit(messages, n)  # (the list holds every payload meanwhile)
                done += sent
                if sent < n:
                    break
        finally:
            free(messages)
            free(vectors)
            free(names)
        return done

    cdef Py_ssize_t _transmit(self, mmsghdr *messages, Py_ssize_t n) noexcept:
        """Send ``messages[:n]`` (n <= _MAX_BATCH) in one call; how many the kernel took (0 when
        it would block, or on an error: the transport buffers the rest, or reports it)."""
        cdef int sent
        with nogil:
            sent = sendmmsg(self.fd, messages, <unsigned int>n, MSG_DONTWAIT)
        self.calls += 1
        return sent if sent > 0 else 0


cdef enum:
    _RECEIVE_BATCH = 64  # datagrams a system call at most
    _SLOT = 65536  # bytes a datagram may have (UDP's largest payload fits)
    _HOST = 64  # enough for any numeric IPv6 host


cdef object _address(sockaddr_storage *name):
    cdef char host[_HOST]
    cdef sockaddr_in *v4
    cdef sockaddr_in6 *v6
    if name.ss_family == AF_INET:
        v4 = <sockaddr_in *>name
        inet_ntop(AF_INET, &v4.sin_addr, host, _HOST)
        return (host.decode("ascii"), ntohs(v4.sin_port))
    if name.ss_family == AF_INET6:
        v6 = <sockaddr_in6 *>name
        inet_ntop(AF_INET6, &v6.sin6_addr, host, _HOST)
        return (host.decode("ascii"), ntohs(v6.sin6_port), ntohl(v6.sin6_flowinfo), v6.sin6_scope_id)
    return None


cdef inline void _put16(uint8_t *at, unsigned int value) noexcept:
    at[0], at[1] = (value >> 8) & 0xFF, value & 0xFF


cdef inline void _put32(uint8_t *at, unsigned int value) noexcept:
    _put16(at, value >> 16)
    _put16(at + 2, value & 0xFFFF)


cdef bint _same_address(sockaddr_storage *name, object key) except -1:
    """Whether ``key`` (a route's address as ``address_key`` makes it) names ``name``: one
    comparison of bytes, as every input from a client's own address asks it."""
    cdef uint8_t mine[_V6_KEY]
    cdef Py_ssize_t size
    cdef sockaddr_in *v4
    cdef sockaddr_in6 *v6
    if name.ss_family == AF_INET:
        v4 = <sockaddr_in *>name
        mine[0] = 0x34  # "4"
        _put16(mine + 1, ntohs(v4.sin_port))
        memcpy(mine + 3, &v4.sin_addr, 4)
        size = _V4_KEY
    elif name.ss_family == AF_INET6:
        v6 = <sockaddr_in6 *>name
        mine[0] = 0x36  # "6"
        _put16(mine + 1, ntohs(v6.sin6_port))
        _put32(mine + 3, ntohl(v6.sin6_flowinfo))
        memcpy(mine + 7, &v6.sin6_addr, 16)
        _put32(mine + 23, v6.sin6_scope_id)
        size = _V6_KEY
    else:
        return False
    return (
        type(key) is bytes
        and PyBytes_GET_SIZE(key) == size
        and memcmp(PyBytes_AS_STRING(key), mine, size) == 0
    )


cdef class Receiver:
    """Reads batches of datagrams from the socket ``fd`` of address family ``family``."""

    cdef int fd
    cdef int family
    cdef mmsghdr messages[_RECEIVE_BATCH]
    cdef iovec vectors[_RECEIVE_BATCH]
    cdef sockaddr_storage names[_RECEIVE_BATCH]
    cdef char *slots
    cdef public long long calls  # system calls made

    def __cinit__(self, int fd, int family):
        self.slots = <char *>malloc(_RECEIVE_BATCH * <size_t>_SLOT)
        if self.slots == NULL:
            raise MemoryError()

    def __init__(self, int fd, int family):
        self.fd, self.family, self.calls = fd, family, 0

    def __dealloc__(self):
        free(self.slots)

    def receive(self, int limit=_RECEIVE_BATCH):
        """Up to ``limit`` queued datagrams, [(payload, address)], in arrival order."""
        cdef list out = []
        cdef int got, i, want
        while len(out) < limit:
            want = min(limit - len(out), _RECEIVE_BATCH)
            got = self._read(want, len(out) > 0)
            for i in range(got):
                out.append(self._datagram(i))
            if got < want:
                break  # the queue is empty
        return out

    cdef int _read(self, int want, bint some) except -2:
        """Read up to ``want`` datagrams into the slots; how many (0 when none is queued, or
        on an error once ``some`` were read: the next call reports it)."""
        cdef int got, i, err
        for i in range(want):
            self.vectors[i].iov_base = self.slots + <size_t>i * _SLOT
            self.vectors[i].iov_len = _SLOT
            memset(&self.messages[i], 0, sizeof(mmsghdr))
            self.messages[i].msg_hdr.msg_name = &self.names[i]
            self.messages[i].msg_hdr.msg_namelen = sizeof(sockaddr_storage)
            self.messages[i].msg_hdr.msg_iov = &self.vectors[i]
            self.messages[i].msg_hdr.msg_iovlen = 1
        with nogil:
            got = recvmmsg(self.fd, self.messages, <unsigned int>want, MSG_DONTWAIT, NULL)
            err = errno
        self.calls += 1
        if got < 0:
            if err == EAGAIN or err == EINTR or some:  # (EWOULDBLOCK is EAGAIN on Linux)
                return 0
            raise OSError(err, strerror(err).decode())
        return got

    cdef tuple _datagram(self, int i):
        """Slot ``i`` as (payload, address)."""
        return (PyBytes_FromStringAndSize(self.slots + <size_t>i * _SLOT, self.messages[i].msg_len), _address(&self.names[i]))


cdef int _DATA = DATA


cdef class Route:
    """One connection's fast path: its ``keys`` and their ``sealer`` and ``opener``; ``addr``,
    where its deltas go (validated), and ``addr_key``, that address as ``address_key``
    makes it (:meth:`move_to` sets both); ``active``, whether its client's newest input came
    this way; ``deliver``, its session's datagram handler; ``quic_addr()``, the QUIC
    connection's validated address; and the challenge sent to a new address (``challenge``,
    ``challenge_addr``, ``challenged_at``). ``server/fastpath.py`` decides what moves it."""

    cdef public object keys, sealer, opener, addr, deliver, quic_addr, challenge_addr
    cdef public bytes addr_key, challenge
    cdef public bint active
    cdef public double challenged_at
    # addr as a sockaddr of the family name_family (0: none yet), written from name_of: an
    # outbox writes it once, not for every packet (see Outbox.send_all)
    cdef sockaddr_storage name
    cdef socklen_t name_size
    cdef int name_family
    cdef object name_of

    def __init__(self, keys, deliver, quic_addr):
        self.keys = keys
        self.sealer, self.opener = server_ends(keys)
        self.addr = None
        self.addr_key = b""
        self.active = False
        self.deliver = deliver
        self.quic_addr = quic_addr
        self.challenge = b""
        self.challenge_addr = None
        self.challenged_at = -1e9

    def move_to(self, addr):
        """Send deltas to ``addr`` from now on (validated: by QUIC or by a challenge)."""
        self.addr, self.addr_key = addr, address_key(addr)


cdef struct _Name:  # a sockaddr_in or sockaddr_in6, as a message names it
    uint8_t data[28]


cdef class Outbox:
    """The fast path's packets of one loop turn, sealed as they are queued; ``on_first`` is
    called when the first goes in (to schedule the flush that takes them)."""

    cdef object _on_first
    cdef list _packets, _addrs, _routes  # side by side, in the order queued
    cdef public long long packets_out
    cdef public long long bytes_out
    cdef mmsghdr *_messages  # _MAX_BATCH of each, once the first send_all needs them
    cdef iovec *_vectors
    cdef _Name *_names

    def __init__(self, on_first):
        self._on_first = on_first
        self._packets, self._addrs, self._routes = [], [], []
        self.packets_out = self.bytes_out = 0

    def __dealloc__(self):
        free(self._messages)
        free(self._vectors)
        free(self._names)

    def __len__(self):
        return len(self._packets)

    def send(self, Route route, bytes body):
        """Seal ``body`` as a data packet under ``route``'s sealer, to its address; False, with
        nothing sealed, when the route cannot carry it now (not active, or no address yet)."""
        return self._send(route, NULL, 0, body)

    cdef bint _send(self, Route route, const uint8_t *head, Py_ssize_t head_size, bytes body) except -1:
        """send's, of ``head`` (when not NULL) then ``body`` as one payload."""
        addr = route.addr
        if not route.active or addr is None:
            return False
        sealer = route.sealer
        if type(sealer) is Sealer:
            packet = (<Sealer>sealer).seal_parts(
                _DATA, head, head_size, <const uint8_t *>PyBytes_AS_STRING(body), PyBytes_GET_SIZE(body)
            )
        else:
            packet = sealer.seal(_DATA, body if head == NULL else PyBytes_FromStringAndSize(<const char *>head, head_size) + body)
        if not self._packets:
            self._on_first()
        self._packets.append(packet)
        self._addrs.append(addr)
        self._routes.append(route)
        self.packets_out += 1
        self.bytes_out += PyBytes_GET_SIZE(packet)
        return True

    def take(self):
        """Every packet queued since the last take, in order, as (packet, address)."""
        packets = list(zip(self._packets, self._addrs))
        self._packets, self._addrs, self._routes = [], [], []
        return packets

    def send_all(self, sender):
        """Send every packet queued since the last take with ``sender`` (this module's Sender,
        or None), in order; what it did not take now, as ``take`` gives it, for the transport.
        Each route's address is written as a sockaddr once, not for every packet."""
        cdef Py_ssize_t done = 0
        packets, addrs, routes = self._packets, self._addrs, self._routes
        self._packets, self._addrs, self._routes = [], [], []
        if type(sender) is Sender and packets:
            done = self._send_all(<Sender>sender, packets, addrs, routes)
        elif sender is not None and packets:
            done = sender.send(list(zip(packets, addrs)))
        return list(zip(packets[done:], addrs[done:]))

    cdef Py_ssize_t _send_all(self, Sender sender, list packets, list addrs, list routes) except -1:
        cdef Py_ssize_t total = len(packets), done = 0, n, sent
        cdef Route route
        if self._messages == NULL:
            self._messages = <mmsghdr *>calloc(_MAX_BATCH, sizeof(mmsghdr))
            self._vectors = <iovec *>calloc(_MAX_BATCH, sizeof(iovec))
            self._names = <_Name *>calloc(_MAX_BATCH, sizeof(_Name))
            if self._messages == NULL or self._vectors == NULL or self._names == NULL:
                free(self._messages)
                free(self._vectors)
                free(self._names)
                self._messages, self._vectors, self._names = NULL, NULL, NULL
                raise MemoryError()
        while done < total:
            n = 0
            while done + n < total and n < _MAX_BATCH:
                route = <Route>routes[done + n]
                addr = addrs[done + n]
                if route.name_of is not addr or route.name_family != sender.family:
                    route.name_family = 0
                    if not _fill(sender.family, addr, &route.name, &route.name_size):
                        break  # (the transport takes it from here, as Sender.send leaves it)
                    route.name_of, route.name_family = addr, sender.family
                memcpy(self._names[n].data, &route.name, route.name_size)
                _message(&self._messages[n], &self._vectors[n], <bytes>packets[done + n], self._names[n].data, route.name_size)
                n += 1
            if n == 0:
                break
            sent = sender._transmit(self._messages, n)  # (the list holds every packet meanwhile)
            done += sent
            if sent < n:
                break
        return done


cdef class Port:
    """What sends a body on ``route`` through ``outbox``: called with the body, the outbox's
    ``send(route, body)``. A native link gives it a header and a body it already has
    (``send_parts``), sealed as one payload without joining them first."""

    def __init__(self, Outbox outbox, Route route):
        self.outbox, self.route = outbox, route

    def __call__(self, bytes body):
        return (<Outbox>self.outbox)._send(<Route>self.route, NULL, 0, body)

    cdef int send_parts(self, const uint8_t *head, Py_ssize_t head_size, bytes body) except -1:
        return (<Outbox>self.outbox)._send(<Route>self.route, head, head_size, body)


cdef int _QUIC_FIXED_BIT = QUIC_FIXED_BIT


cdef class Inbox:
    """The fast path's packets as they are read: each authentic data packet from its route's
    address is counted and delivered to the route; ``other(route, kind, payload, packet,
    address)`` decides about the rest (True: deliver the payload as data); ``dropped``
    counts what fails, by reason. ``routes`` maps session ids to this module's Routes."""

    cdef public dict routes
    cdef public object dropped
    cdef object _other
    cdef public long long packets_in
    cdef public long long bytes_in

    def __init__(self, dict routes, dropped, other):
        self.routes = routes
        self.dropped = dropped
        self._other = other
        self.packets_in = self.bytes_in = 0

    def receive_batch(self, list batch, on_error):
        """Take the fast-path packets of ``batch`` and return the others, in order; a packet whose
        handling raises goes to ``on_error``, and the batch goes on."""
        cdef list rest = []
        for item in batch:
            data = item[0]
            if type(data) is not bytes or PyBytes_GET_SIZE(data) == 0 or (<unsigned char>PyBytes_AS_STRING(data)[0]) & _QUIC_FIXED_BIT:
                rest.append(item)
                continue
            try:
                self._receive(<bytes>data, item[1])
            except Exception as exc:
                on_error(exc)
        return rest

    def drain(self, Receiver receiver, int limit, on_error):
        """Read up to ``limit`` datagrams from ``receiver`` as ``receive_batch`` takes them,
        straight from its buffers: the fast path's packets are opened where they were read, an
        input from its route's own address making no Python object but its payload (no packet,
        no address, no tuple). Returns (the rest in order, as ``receive`` gives them; how many
        datagrams were read)."""
        cdef list rest = []
        cdef int got, i, want, read = 0
        cdef const uint8_t *data
        cdef Py_ssize_t size
        while read < limit:
            want = min(limit - read, _RECEIVE_BATCH)
            got = receiver._read(want, read > 0)
            for i in range(got):
                data = <const uint8_t *>(receiver.slots + <size_t>i * _SLOT)
                size = receiver.messages[i].msg_len
                if size == 0 or data[0] & _QUIC_FIXED_BIT:
                    rest.append(receiver._datagram(i))
                    continue
                try:
                    self._open(receiver, i, data, size)
                except Exception as exc:
                    on_error(exc)
            read += got
            if got < want:
                break  # the queue is empty
        return rest, read

    cdef _open(self, Receiver receiver, int i, const uint8_t *data, Py_ssize_t size):
        """Slot ``i`` of ``receiver``'s read, a fast-path packet, as ``_receive`` takes it."""
        cdef int kind = 0
        cdef Route route
        found = self.routes.get(PyBytes_FromStringAndSize(<const char *>data + 1, 8)) if size >= 9 else None
        if found is None or type((<Route?>found).opener) is not Opener:
            item = receiver._datagram(i)  # (no route; or an opener of the pure twin's)
            self._receive(item[0], item[1])
            return
        route = <Route>found
        try:
            payload = (<Opener>route.opener).open_c(data, size, &kind)
        except Dropped as drop:
            self.dropped[drop.reason] += 1
            return
        if kind != _DATA or not _same_address(&receiver.names[i], route.addr_key):
            addr = _address(&receiver.names[i])
            if not self._other(route, kind, payload, PyBytes_FromStringAndSize(<const char *>data, size), addr):
                return
        self.packets_in += 1
        self.bytes_in += size
        route.active = True
        route.deliver(payload)

    def receive(self, bytes data, addr):
        """One fast-path packet."""
        self._receive(data, addr)

    cdef _receive(self, bytes data, addr):
        cdef int kind = 0
        route = self.routes.get(data[1:9])
        try:
            if route is None:
                session_of(data)  # (a short packet or an unknown kind is counted as such)
                raise Dropped("session")
            opener = route.opener
            if type(opener) is Opener:
                payload = (<Opener>opener).open_c(<const uint8_t *>PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data), &kind)
            else:
                kind, payload = opener.open(data)
        except Dropped as drop:
            self.dropped[drop.reason] += 1
            return
        if (kind != _DATA or addr != route.addr) and not self._other(route, kind, payload, data, addr):
            return
        self.packets_in += 1
        self.bytes_in += PyBytes_GET_SIZE(data)
        route.active = True
        route.deliver(payload)
