# cython: language_level=3, boundscheck=False, wraparound=False
"""A client's link on the hot path, in native code: the twin of ``_link_py.py``.

``server/link.py`` describes both. The baselines are a ring of C integers (the ticks)
beside the views, in the order the twin's ordered dict keeps; the packed delta's header is
written here, and everything out of the routine goes through the same Python calls as the
twin's. A delta for the fast path's port (``_udpbatch_c.Port``) goes to it as that header
and the shared packed diff, sealed as one body: the same packet as the twin's, without the
body's bytes in between.
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.ref cimport PyObject
from libc.stdint cimport uint8_t
from libc.string cimport memcpy

from collections import Counter

from tickline.server._intake_c cimport InputQueue
from tickline.server._udpbatch_c cimport Port
from tickline.server.link import BASELINE_RING
from tickline.shared import delta
from tickline.shared.game import InvalidInput
from tickline.shared.protocol import (
    DEFLATE,
    MAX_DATAGRAM,
    PACKED_DELTA,
    ProtocolError,
    encode_delta,
    encode_packed_delta,
    pack_diff,
)

cdef enum:
    RING = 64

cdef extern from *:
    void prefetch "__builtin_prefetch"(const void *address) noexcept nogil

assert BASELINE_RING == RING

cdef object _diff_json = delta.diff_json
cdef object _DEFLATE = DEFLATE
cdef Py_ssize_t _MAX_DATAGRAM = MAX_DATAGRAM
cdef unsigned char _PACKED_TAG = PACKED_DELTA[0]
cdef long long _U32 = 0xFFFFFFFF


cdef inline void _u32(char* at, long long value) noexcept:
    at[0] = <char>((value >> 24) & 0xFF)
    at[1] = <char>((value >> 16) & 0xFF)
    at[2] = <char>((value >> 8) & 0xFF)
    at[3] = <char>(value & 0xFF)


cdef enum:
    _HEADER = 13  # a packed delta's: its tag, then tick, base and seq as u32


cdef bint _header(char* buf, long long tick, long long base, object seq_obj):
    """Write a packed delta's header; False, with nothing written, for numbers it cannot hold."""
    if type(seq_obj) is not int or not (0 <= seq_obj <= _U32) or not (0 <= tick <= _U32) or not (0 <= base <= _U32):
        return False
    buf[0] = <char>_PACKED_TAG
    _u32(buf + 1, tick)
    _u32(buf + 5, base)
    _u32(buf + 9, <long long>seq_obj)
    return True


cdef bytes _packed_delta(long long tick, long long base, object seq_obj, bytes packed):
    """encode_packed_delta's bytes; numbers it cannot write go to it, for the same error."""
    cdef Py_ssize_t size = PyBytes_GET_SIZE(packed)
    cdef bytes out = PyBytes_FromStringAndSize(NULL, _HEADER + size)
    cdef char* buf = PyBytes_AS_STRING(out)
    if not _header(buf, tick, base, seq_obj):
        return encode_packed_delta(tick, base, seq_obj, packed)
    memcpy(buf + _HEADER, PyBytes_AS_STRING(packed), size)
    return out


cdef class Link:
    """One client's datagrams in and deltas out: see ``_link_py.Link``."""

    cdef public object queue
    cdef object _clock
    cdef readonly object owner  # the session: what is not routine goes to it
    cdef object _send_datagram
    cdef double _ack_timeout_s
    cdef public object fast_send
    cdef public bint packed
    cdef public bint closed
    cdef public object match
    cdef public long long bytes_up
    cdef public long long bytes_down
    cdef public long long deltas_sent
    cdef public long long diffs_encoded
    cdef public long long acked
    cdef public double acked_at
    cdef public double sent_at
    cdef public object refused
    cdef long long _ticks[RING]
    cdef list _views  # RING slots, beside _ticks
    cdef int _head, _count
    cdef long long _highest  # no tick in the ring is higher

    def __init__(self, queue, clock, owner, send_datagram, double ack_timeout_s):
        self.queue = queue
        self._clock = clock
        self.owner = owner
        self._send_datagram = send_datagram
        self._ack_timeout_s = ack_timeout_s
        self.fast_send = None
        self.packed = False
        self.closed = False
        self.match = None
        self.bytes_up = self.bytes_down = self.deltas_sent = self.diffs_encoded = 0
        self.refused = Counter()
        self.acked = 0
        self.acked_at = 0.0
        self.sent_at = -ack_timeout_s - 1.0
        self._views = [None] * RING
        self._head = self._count = 0
        self._highest = -1

    cdef inline int _find(self, long long tick) noexcept:
        """The ring slot of ``tick``'s view, or -1 (newest first: acks are recent)."""
        cdef int i, at
        for i in range(self._count - 1, -1, -1):
            at = (self._head + i) % RING
            if self._ticks[at] == tick:
                return at
        return -1

    # ------------------------------------------------------------ in

    def deliver(self, bytes data):
        """One input datagram from the client."""
        cdef long long ack
        cdef bint known = False, native
        if self.closed:
            return
        self.bytes_up += PyBytes_GET_SIZE(data)
        cdef double now = self._clock()
        cdef long long tick = self.match.tick if self.match is not None else 0
        queue = self.queue
        native = type(queue) is InputQueue  # (then it is called, and its fields read, in C)
        try:
            if native:
                admitted = (<InputQueue>queue).receive_c(data, now, tick) == 1
            else:
                admitted = queue.receive(data, now, tick)
        except (ProtocolError, InvalidInput) as exc:
            self.owner.fail(str(exc))
            return
        if not admitted:
            self.owner.input_refused(queue.refusal)
            return
        dropped = (<InputQueue>queue).dropped_now if native else queue.dropped_now
        if dropped:
            self.owner.inputs_overflowed(dropped)
        ack_obj = (<InputQueue>queue).ack if native else queue.ack
        if -0x7FFFFFFFFFFFFFFF <= ack_obj <= 0x7FFFFFFFFFFFFFFF:
            ack = ack_obj
            known = ack > self.acked and self._find(ack) >= 0
        if known:
            self.acked = ack
            self.acked_at = now
            self._forget_before(ack)
        elif self._count and now - self.acked_at > self._ack_timeout_s:
            self.owner.acks_stopped()

    cdef inline void _forget_before(self, long long tick) noexcept:
        """Let the views older than ``tick`` (in the ring) go: acks only rise, so none of them
        is a baseline again (see the twin)."""
        while self._count and self._ticks[self._head] < tick:
            self._views[self._head] = None
            self._head = (self._head + 1) % RING
            self._count -= 1

    def take(self, long long tick):
        """The next input for match tick ``tick`` (the queue's ``take``)."""
        return self._take(tick)

    cdef object _take(self, long long tick):
        queue = self.queue
        if type(queue) is InputQueue:
            return (<InputQueue>queue).take_c(tick)
        return queue.take(tick)

    # ------------------------------------------------------------ out

    def send_view(self, long long tick, view, dict cache, bint full, seq):
        """Send ``view`` for ``tick`` as a delta: see ``_link_py.Link.send_view``."""
        return self._send_view(tick, view, cache, full, seq, None)

    cdef object _send_view(self, long long tick, view, dict cache, bint full, seq, list memo):
        # memo: [base view, packed diff, ...] of ``view`` for one send_views call, searched by
        # identity before the cache, whose keys are tuples to make (a room has 2-3 baselines)
        cdef int at
        cdef Py_ssize_t i
        cdef long long base = 0
        cdef char head[_HEADER]
        if self.closed:
            return None
        cdef double now = self._clock()
        if now - self.sent_at > self._ack_timeout_s:
            self.acked_at = now  # the first view, or the first after a pause in sending: the clock starts
        self.sent_at = now
        base_view = None
        if not full:
            at = self._find(self.acked)
            if at >= 0:
                base_view = self._views[at]
                base = self.acked
        if seq is None:
            queue = self.queue
            seq = (<InputQueue>queue).applied_seq if type(queue) is InputQueue else queue.applied_seq
        body = None
        if self.packed:
            # (the packed diff is looked up first: most clients share it, and skip the JSON)
            packed = None
            if memo is not None:
                for i in range(0, len(memo), 2):
                    if memo[i] is base_view:
                        packed = memo[i + 1]
                        break
            if packed is None:
                key = (id(view), id(base_view), _DEFLATE)
                packed = cache.get(key)
                if packed is None:
                    packed = cache[key] = pack_diff(self._diff(cache, view, base_view))
                if memo is not None:
                    memo += (base_view, packed)
            if (
                type(self.fast_send) is Port
                and _HEADER + PyBytes_GET_SIZE(packed) <= _MAX_DATAGRAM
                and _header(head, tick, base, seq)
                and (<Port>self.fast_send).send_parts(<const uint8_t *>head, _HEADER, packed)
            ):
                # (the fast path's port seals the header and the packed diff as one body)
                self._note(tick, view, _HEADER + PyBytes_GET_SIZE(packed))
                return None
            body = _packed_delta(tick, base, seq, packed)
        if body is None or PyBytes_GET_SIZE(body) > _MAX_DATAGRAM:
            body = encode_delta(tick, base, seq, self._diff(cache, view, base_view))
        if PyBytes_GET_SIZE(body) > _MAX_DATAGRAM:
            return body
        fast = self.fast_send
        if fast is None or not fast(body):  # (on the fast path: sealed and queued in one call)
            self._send_datagram(body)
        self._note(tick, view, PyBytes_GET_SIZE(body))
        return None

    cdef bytes _diff(self, dict cache, view, base_view):
        key = (id(view), id(base_view))
        diff_json = cache.get(key)
        if diff_json is None:
            diff_json = cache[key] = _diff_json(base_view or {}, view)
            self.diffs_encoded += 1
        return diff_json

    def sent(self, long long tick, view, Py_ssize_t size):
        """``view`` went out for ``tick`` in ``size`` bytes: a baseline from now on."""
        self._note(tick, view, size)

    cdef void _note(self, long long tick, view, Py_ssize_t size):
        cdef int at
        self.bytes_down += size
        self.deltas_sent += 1
        if tick <= self._highest:
            at = self._find(tick)  # (only then: ticks rise, and a higher one is in no slot)
            if at >= 0:  # (the same tick again: its view is replaced where it stands)
                self._views[at] = view
                return
        if self._count == RING:  # (one view comes in: one goes)
            self._views[self._head] = None
            self._head = (self._head + 1) % RING
            self._count -= 1
        at = (self._head + self._count) % RING
        self._ticks[at] = tick
        if tick > self._highest:
            self._highest = tick
        self._views[at] = view
        self._count += 1

    def sent_ticks(self):
        """The ticks whose views are kept as baselines, oldest first."""
        return [self._ticks[(self._head + i) % RING] for i in range(self._count)]


def take_inputs(dict links, long long tick, dict seqs, dict inputs):
    """Each link's next input for a tick: see ``_link_py.take_inputs``."""
    cdef Py_ssize_t applied = 0, i, n = len(links)
    cdef list refused = []
    cdef list ids = list(links), values = list(links.values())
    cdef Link link
    for i in range(n):
        _prefetch_ahead(values, i, n)
        player_id = ids[i]
        link = <Link?>values[i]
        taken = link._take(tick)
        if taken is not None:
            seqs[player_id] = (<tuple?>taken)[0]
            inputs[player_id] = (<tuple>taken)[1]
            applied += 1
        if link.refused:
            refused.append(player_id)
    return applied, refused


cdef inline void _prefetch_object(object thing, int lines) noexcept:
    cdef const char *at = <const char *><PyObject *>thing
    cdef int i
    for i in range(lines):
        prefetch(at + 64 * i)


cdef inline void _prefetch_state(Link link) noexcept:
    """What a tick's take and send read of ``link`` beyond its own first lines: its queue's
    first line, its ring's place and its applied sequence; its ring's newest tick; the count of
    what it refused."""
    queue = link.queue
    if type(queue) is InputQueue:
        _prefetch_object(queue, 1)
        prefetch(&(<InputQueue>queue)._head)
        prefetch(&(<InputQueue>queue).applied_seq)
    if link._count:
        prefetch(&link._ticks[(link._head + link._count - 1) % RING])
    _prefetch_object(link.refused, 1)


cdef inline void _prefetch_ahead(list links, Py_ssize_t i, Py_ssize_t n) noexcept:
    """Before ``links[i]``'s turn in a tick's take or send: a room's links are many objects,
    each cold by its turn, so each is fetched two links ahead and what it points to one ahead,
    and the memory waits overlap the work."""
    if i + 2 < n:
        _prefetch_object(links[i + 2], 4)
    if i + 1 < n and type(links[i + 1]) is Link:
        _prefetch_state(<Link>links[i + 1])


def send_views(list links, long long tick, view, dict cache, bint full):
    """A view to each link: see ``_link_py.send_views``."""
    cdef list oversized = []
    cdef list memo = []
    cdef Py_ssize_t i, n = len(links)
    for i in range(n):
        link = links[i]
        _prefetch_ahead(links, i, n)
        body = (<Link?>link)._send_view(tick, view, cache, full, None, memo)
        if body is not None:
            oversized.append((link, body))
    return oversized
