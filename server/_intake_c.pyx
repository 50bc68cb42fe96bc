# cython: language_level=3, boundscheck=False, wraparound=False
"""A player's inputs on their way in, in native code: the twin of ``_intake_py.py``.

``server/intake.py`` describes both and picks one at import. The queue is a ring of C
integers (sequence, tick received) beside the controls; the checks are the twin's, in the
same order with the same words. A datagram that is anything but a well-formed input frame
is read again by the twin's decoder, so that its refusal reads the same.

A packed datagram is read where it lies: the inputs already taken make no objects, and a
new input's controls, when their JSON is the compact flat object every SDK writes, are read
and checked against the declaration in one pass (``InputDecoder.decode_json``) rather than
made into a dict and then checked. Anything else is read the twin's way.
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.long cimport PyLong_AsLongLongAndOverflow
from cpython.unicode cimport PyUnicode_DecodeASCII
from libc.string cimport memcmp

import weakref

import orjson

from tickline.server._intake_py import NOT_IN_A_MATCH, SPECTATOR_INPUTS
from tickline.server._intake_py import decode_input as _decode_slowly
from tickline.server.intake import (
    DRAIN_WINDOW_TICKS,
    INPUT_BUFFER,
    JITTER_TICKS,
    MAX_INPUTS_PER_DATAGRAM,
    MAX_SEQ,
    MAX_SEQ_JUMP,
)
from tickline.shared.game import InvalidInput
from tickline.shared.schema import Bool, Choice, Inputs, Int, ListOf, Text
from tickline.shared.protocol import MAX_DATAGRAM, MAX_INPUT_TICKS, PACKED_INPUT, MalformedFrame, input_controls

assert INPUT_BUFFER + MAX_INPUT_TICKS < RING

cdef object _loads = orjson.loads
cdef Py_ssize_t _MAX_DATAGRAM = MAX_DATAGRAM
cdef unsigned char _PACKED_INPUT_TAG = PACKED_INPUT[0]
cdef long long _MAX_SEQ = MAX_SEQ
cdef long long _MAX_SEQ_JUMP = MAX_SEQ_JUMP
cdef object _MAX_SEQ_OBJECT = MAX_SEQ
cdef int _INPUT_BUFFER = INPUT_BUFFER
cdef int _JITTER_TICKS = JITTER_TICKS
cdef int _DRAIN_WINDOW_TICKS = DRAIN_WINDOW_TICKS
cdef int _MAX_INPUTS = MAX_INPUTS_PER_DATAGRAM
cdef int _MAX_INPUT_TICKS = MAX_INPUT_TICKS
cdef str _SHAPE = "each input must be [seq, controls] or [seq, controls, ticks] with a positive integer seq"


def decode_input(bytes data):
    """(ack, inputs) of a client's input datagram; a ProtocolError for anything else."""
    return _decode(data)


cdef tuple _decode(bytes data):
    cdef dict obj
    cdef Py_ssize_t size = PyBytes_GET_SIZE(data)
    if size and <unsigned char>PyBytes_AS_STRING(data)[0] == _PACKED_INPUT_TAG:
        if size <= _MAX_DATAGRAM:
            packed = _split_packed(data, size)
            if packed is not None:
                return packed
        return _decode_slowly(data)
    if size <= _MAX_DATAGRAM:
        try:
            parsed = _loads(data)
        except orjson.JSONDecodeError:
            parsed = None
        if type(parsed) is dict:
            obj = <dict>parsed
            if len(obj) == 3 and obj.get("t") == "in":
                ack = obj.get("ack")
                inputs = obj.get("inputs")
                if type(ack) is int and type(inputs) is list:
                    return ack, inputs
    return _decode_slowly(data)


cdef inline long long _be(const unsigned char* at, int width) noexcept:
    cdef long long value = 0
    cdef int i
    for i in range(width):
        value = (value << 8) | at[i]
    return value


cdef Py_ssize_t _packed_count(const unsigned char *buf, Py_ssize_t size) noexcept:
    """How many inputs a packed datagram of ``size`` bytes holds; -1 when it is cut short."""
    cdef Py_ssize_t at = 5, count = 0
    if size < 5:
        return -1
    while at < size:
        if size - at < 7 or size - at - 7 < _be(buf + at + 5, 2):
            return -1
        at += 7 + _be(buf + at + 5, 2)
        count += 1
    return count


cdef object _split_packed(bytes data, Py_ssize_t size):
    """split_packed_input's (ack, inputs) of a packed datagram no longer than a datagram, or
    None when it is cut short (the twin's decoder then says so)."""
    cdef const unsigned char* buf = <const unsigned char*>PyBytes_AS_STRING(data)
    cdef Py_ssize_t at = 5, length
    cdef list inputs = []
    if _packed_count(buf, size) < 0:
        return None
    while at < size:
        length = _be(buf + at + 5, 2)
        inputs.append([_be(buf + at, 4), PyBytes_FromStringAndSize(<const char*>buf + at + 7, length), buf[at + 4]])
        at += 7 + length
    return _be(buf + 1, 4), inputs


cdef object _controls(bytes raw):
    """input_controls, with its refusal in its words."""
    try:
        return _loads(raw)
    except orjson.JSONDecodeError:
        return input_controls(raw)


# ---------------------------------------------------------------------- declared inputs

cdef enum:
    OTHER = 0  # the field's own check, every time (ListOf, mixed Choices, bounds beyond C's)
    INT = 1
    BOOL = 2
    TEXT = 3
    CHOICE = 4  # of ints alone, or of strings alone

cdef object _MISSING = object()
cdef str _NOT_AN_OBJECT = "an input must be an object of controls"


cdef class _Control:
    """One declared control, as the decoder tests it (its fields: _intake_c.pxd)."""


cdef bint _contiguous(frozenset values):
    """Whether ``values`` (ints) are every int from their least to their greatest, in C's range."""
    lo, hi = min(values), max(values)
    return -(2**62) <= lo <= hi <= 2**62 and hi - lo + 1 == len(values)


# One decoder per declaration, shared by every queue that reads it (so that its state stays in
# the cache from one player's input to the next): id -> (a weak reference to it, its decoder).
cdef dict _decoders = {}


cdef InputDecoder _decoder_for(inputs):
    key = id(inputs)
    entry = _decoders.get(key)
    if entry is not None and (<tuple>entry)[0]() is inputs:
        return (<tuple>entry)[1]
    decoder = InputDecoder(inputs)
    _decoders[key] = (weakref.ref(inputs, lambda _, key=key: _decoders.pop(key, None)), decoder)
    return decoder


cdef class InputDecoder:
    """An :class:`Inputs` declaration's decoder, in native code: the same controls, in the same
    order, with the same types as ``Inputs.decode`` (shared/schema.py), and the same refusal;
    a value that fails a control's test goes to the field's own ``check`` for its words."""

    def __init__(self, inputs):
        cdef _Control c
        self._controls = []
        self._template = {}
        self._names = frozenset(inputs.controls)
        self._slots = [None] * len(inputs.controls)
        self._in_c = len(inputs.controls) <= 64  # (decode_json's mask of the controls seen)
        for name, spec in inputs.controls.items():
            c = _Control()
            c.name, c.spec, c.kind, c.fresh_list = name, spec, OTHER, isinstance(spec, ListOf)
            c.name_utf8 = name.encode()
            if isinstance(spec, Int) and -(2**62) <= spec.lo <= spec.hi <= 2**62:
                c.kind, c.lo, c.hi = INT, spec.lo, spec.hi
            elif isinstance(spec, Bool):
                c.kind = BOOL
            elif isinstance(spec, Text):
                c.kind, c.hi = TEXT, spec.max_len
            elif isinstance(spec, Choice) and {type(v) for v in spec.values} in ({int}, {str}):
                c.kind, c.values, c.value_type = CHOICE, frozenset(spec.values), type(spec.values[0])
                if c.value_type is int and _contiguous(c.values):  # (-1, 0, 1: compared in C, as an Int)
                    c.kind, c.lo, c.hi = INT, min(c.values), max(c.values)
            if name not in inputs.optional:
                self._template[name] = spec.default
            self._controls.append(c)

    def __call__(self, raw):
        return self.decode(raw)

    cdef dict decode(self, raw):
        cdef _Control c
        cdef dict out
        cdef Py_ssize_t seen = 0
        cdef bint ok
        cdef long long number
        cdef int overflow
        if type(raw) is not dict:
            raise InvalidInput(_NOT_AN_OBJECT)
        out = self._template.copy()
        for c in self._controls:
            v = (<dict>raw).get(c.name, _MISSING)
            if v is _MISSING:
                if c.fresh_list and c.name in out:
                    out[c.name] = []  # (no list shared between inputs)
                continue
            if c.kind == INT:
                ok = False
                if type(v) is int:  # (compared in C: no int object made for the bounds)
                    number = PyLong_AsLongLongAndOverflow(v, &overflow)
                    ok = overflow == 0 and c.lo <= number <= c.hi
            elif c.kind == BOOL:
                ok = type(v) is bool
            elif c.kind == TEXT:
                ok = type(v) is str and len(<str>v) <= c.hi
            elif c.kind == CHOICE:
                ok = type(v) is c.value_type and v in c.values
            else:
                ok = False
            out[c.name] = v if ok else c.spec.check(v, c.name)
            seen += 1
        if seen != len(<dict>raw):
            extra = sorted(str(k) for k in (<dict>raw).keys() - self._names)
            raise InvalidInput(f"input has unknown control {extra[0][:32]!r}")
        return out

    cdef object decode_json(self, const unsigned char *s, Py_ssize_t n):
        """``decode(orjson.loads(s[:n]))`` when ``s[:n]`` is a compact JSON object of declared
        controls, each once, whose values pass their tests: ASCII strings without escapes,
        integers of at most 18 digits, true and false. None for anything else, which the
        caller reads the twin's way (and so refuses in its words)."""
        cdef _Control c
        cdef Py_ssize_t i = 1, end, nc = len(self._controls)
        cdef int k, at, hint = 0
        cdef unsigned long long seen = 0, bit
        cdef long long number
        cdef list slots = self._slots
        if not self._in_c or n < 2 or s[0] != b"{" or s[n - 1] != b"}":
            return None
        while n > 2:
            # a key: which control (the SDKs write them in declaration order: look there first)
            if s[i] != b'"':
                return None
            end = _string_end(s, i, n)
            if end < 0:
                return None
            at = -1
            for k in range(nc):
                c = <_Control>self._controls[(hint + k) % nc]
                if PyBytes_GET_SIZE(c.name_utf8) == end - i - 1 and memcmp(
                    PyBytes_AS_STRING(c.name_utf8), s + i + 1, end - i - 1
                ) == 0:
                    at = (hint + k) % nc
                    break
            if at < 0:
                return None
            bit = 1ULL << at
            if seen & bit:
                return None  # (a key twice: the twin's reading says which value counts)
            seen |= bit
            hint = at + 1
            i = end + 1
            if i >= n or s[i] != b":":
                return None
            i += 1
            # its value, tested as decode tests it
            if c.kind == INT or (c.kind == CHOICE and c.value_type is int):
                i = _integer_end(s, i, n, &number)
                if i < 0 or c.kind == INT and not c.lo <= number <= c.hi:
                    return None
                value = number
                if c.kind == CHOICE and value not in c.values:
                    return None
            elif c.kind == BOOL:
                if n - i >= 4 and memcmp(s + i, b"true", 4) == 0:
                    value, i = True, i + 4
                elif n - i >= 5 and memcmp(s + i, b"false", 5) == 0:
                    value, i = False, i + 5
                else:
                    return None
            elif c.kind == TEXT or c.kind == CHOICE:  # (a CHOICE here is of strings)
                if i >= n or s[i] != b'"':
                    return None
                end = _string_end(s, i, n)
                if end < 0:
                    return None
                value = PyUnicode_DecodeASCII(<const char *>s + i + 1, end - i - 1, NULL)
                if c.kind == TEXT and end - i - 1 > c.hi or c.kind == CHOICE and value not in c.values:
                    return None
                i = end + 1
            else:
                return None
            slots[at] = value
            if i >= n:
                return None
            if s[i] == b",":
                i += 1
            elif s[i] == b"}" and i == n - 1:
                break
            else:
                return None
        # as decode builds it: the template, then the controls given, in declaration order
        out = self._template.copy()
        for k in range(nc):
            c = <_Control>self._controls[k]
            if seen & (1ULL << k):
                out[c.name] = slots[k]
                slots[k] = None
            elif c.fresh_list and c.name in out:
                out[c.name] = []  # (no list shared between inputs)
        return out


cdef inline Py_ssize_t _string_end(const unsigned char *s, Py_ssize_t i, Py_ssize_t n) noexcept:
    """Where the JSON string opening at ``s[i]`` closes, when it holds only printable ASCII
    without escapes; -1 otherwise."""
    cdef unsigned char ch
    i += 1
    while i < n:
        ch = s[i]
        if ch == b'"':
            return i
        if ch == b"\\" or ch < 0x20 or ch >= 0x80:
            return -1
        i += 1
    return -1


cdef inline Py_ssize_t _integer_end(const unsigned char *s, Py_ssize_t i, Py_ssize_t n, long long *value) noexcept:
    """Where the JSON integer at ``s[i]`` ends, its value in ``value``; -1 when there is none
    of at most 18 digits (orjson reads a longer one as a float past 64 bits)."""
    cdef bint negative = False
    cdef long long number = 0
    cdef Py_ssize_t start
    if i < n and s[i] == b"-":
        negative, i = True, i + 1
    start = i
    while i < n and b"0" <= s[i] <= b"9":
        if i - start == 18:
            return -1
        number = number * 10 + (s[i] - 48)
        i += 1
    if i == start or (s[start] == b"0" and i - start > 1):
        return -1  # no digits, or a leading zero (not JSON)
    value[0] = -number if negative else number
    return i


cdef inline double _min(double x, double y) noexcept:
    return y if y < x else x  # (Python's min: the first of equals)


cdef inline double _max(double x, double y) noexcept:
    return y if y > x else x


cdef class InputBudget:
    """One client's buckets for messages and bytes, in server time (the twin's, in doubles)."""

    def __init__(self, limits, double now):
        self.limits = limits
        self._rate_messages = limits.messages_per_s
        self._rate_bytes = limits.bytes_per_s
        self._burst_messages = self._rate_messages * <double>limits.burst_s
        self._burst_bytes = _max(self._rate_bytes * <double>limits.burst_s, 1200.0)
        self._messages, self._bytes = self._burst_messages, self._burst_bytes
        self._debt_messages = self._debt_bytes = 0.0
        self._when = now
        self.exhausted = ""

    def take(self, Py_ssize_t size, double now):
        """Admit a datagram of ``size`` bytes at ``now``: "" when admitted, else why it is
        refused ("messages" or "bytes")."""
        return self._take(size, now)

    cdef str _take(self, Py_ssize_t size, double now):
        cdef double elapsed = _max(0.0, now - self._when)
        self._when = now
        if elapsed != 0.0:
            self._messages = _min(self._burst_messages, self._messages + elapsed * self._rate_messages)
            self._bytes = _min(self._burst_bytes, self._bytes + elapsed * self._rate_bytes)
            self._debt_messages = _max(0.0, self._debt_messages - elapsed * self._rate_messages)
            self._debt_bytes = _max(0.0, self._debt_bytes - elapsed * self._rate_bytes)
        if self._messages >= 1 and self._bytes >= size:
            self._messages -= 1
            self._bytes -= size
            return ""
        self._debt_messages += 1
        self._debt_bytes += size
        if not self.exhausted:  # (the first reason stands)
            if self._debt_messages > self._burst_messages:
                self.exhausted = f"sent more than {self.limits.messages_per_s:g} datagrams a second for too long"
            elif self._debt_bytes > self._burst_bytes:
                self.exhausted = f"sent more than {self.limits.bytes_per_s:g} bytes of datagrams a second for too long"
        return "messages" if self._messages < 1 else "bytes"


cdef class InputQueue:
    """One player's inputs between their datagrams and the ticks; ``validate`` is the game's
    input check (``Rules.validate_input``)."""

    def __init__(self, validate, InputBudget budget=None, bint spectating=False):
        # None: not in a match yet (datagrams are budgeted, then ignored); a declaration
        # (Rules.input_check) is read by its own decoder, natively
        self._decoder = _decoder_for(validate) if isinstance(validate, Inputs) else None
        self._validate = validate
        self._budget = budget
        self.spectating = spectating
        self.ack = 0
        self.refusal = ""
        self.dropped_now = 0
        self._controls = [None] * RING
        self._head = self._count = 0
        self._primed = False
        self._window_ticks = 0
        self._window_min = _INPUT_BUFFER
        self.received_seq = self.applied_seq = 0
        self.inputs_dropped = self.input_underruns = self.inputs_merged = 0

    def __len__(self):
        return self._count

    cdef void _push(self, long long seq, object controls, long long tick):
        cdef int at = (self._head + self._count) % RING
        self._seqs[at] = seq
        self._ticks[at] = tick
        self._controls[at] = controls
        self._count += 1

    cdef object _pop_oldest(self):
        """The oldest entry's controls (None for a held tick); the entry leaves the ring."""
        controls = self._controls[self._head]
        self._controls[self._head] = None
        self._head = (self._head + 1) % RING
        self._count -= 1
        return controls

    cdef bint _newest_held(self):
        return self._count > 0 and self._controls[(self._head + self._count - 1) % RING] is None

    def receive(self, bytes data, double now, long long tick):
        """One input datagram at server time ``now`` and match tick ``tick``: budgeted, read and
        queued: False when the budget refused it (``refusal`` says why), else True, with the
        datagram's ack in ``ack``. MalformedFrame or InvalidInput for a bad one."""
        return self.receive_c(data, now, tick) == 1

    cdef int receive_c(self, bytes data, double now, long long tick) except -1:
        """``receive``'s work: 1 for True, 0 for False."""
        cdef str refused
        if self._budget is not None:
            refused = self._budget._take(len(data), now)
            if refused:
                self.refusal = refused
                return 0
        self.dropped_now = 0
        if self._validate is None:
            return 1  # (before the match it is not read: the client resends)
        cdef const unsigned char *buf = <const unsigned char *>PyBytes_AS_STRING(data)
        cdef Py_ssize_t size = PyBytes_GET_SIZE(data), count
        if 0 < size <= _MAX_DATAGRAM and buf[0] == _PACKED_INPUT_TAG:
            count = _packed_count(buf, size)
            if count >= 0:  # (else cut short: the twin's decoder says so)
                if self.spectating and count:
                    raise MalformedFrame(SPECTATOR_INPUTS)
                self.dropped_now = self._put_packed(buf, size, count, tick)
                self.ack = _be(buf + 1, 4)
                return 1
        ack, items = _decode(data)
        if self.spectating and items:
            raise MalformedFrame(SPECTATOR_INPUTS)
        self.dropped_now = self._put(items, tick)
        self.ack = ack
        return 1

    def put(self, list items, long long tick):
        """Queue the new inputs of one datagram, received at match tick ``tick``; how many were
        dropped because the queue was full. MalformedFrame or InvalidInput for a bad one."""
        return self._put(items, tick)

    cdef int _put(self, list items, long long tick) except -1:
        cdef long long seq, ticks
        cdef int dropped = 0
        cdef Py_ssize_t size
        if self._validate is None:
            raise InvalidInput(NOT_IN_A_MATCH)
        if len(items) > _MAX_INPUTS:
            raise MalformedFrame(f"input datagram carries more than {MAX_INPUTS_PER_DATAGRAM} inputs")
        for item in items:
            if type(item) is not list:
                raise MalformedFrame(_SHAPE)
            size = len(<list>item)
            if not 2 <= size <= 3:
                raise MalformedFrame(_SHAPE)
            first = (<list>item)[0]
            if type(first) is not int or not first > 0:
                raise MalformedFrame(_SHAPE)
            raw = (<list>item)[1]
            held = (<list>item)[2] if size == 3 else 1
            if type(held) is not int or not 1 <= held <= _MAX_INPUT_TICKS:
                raise MalformedFrame(f"an input holds for 1 to {MAX_INPUT_TICKS} ticks, not {held!r}")
            ticks = held
            if first > _MAX_SEQ_OBJECT:  # (beyond any sequence: never a redundant copy)
                seq = _MAX_SEQ + 1
            else:
                seq = first
                if seq <= self.received_seq:
                    continue  # a redundant copy of an input already taken
            self._check_jump(seq, first)
            self._end_hold()
            if type(raw) is bytes:  # (a packed input's: no JSON value is bytes)
                raw = _controls(<bytes>raw)
            controls = self._decoder.decode(raw) if self._decoder is not None else self._validate(raw)
            dropped += self._queue(seq, controls, ticks, tick)
        return dropped

    cdef int _put_packed(self, const unsigned char *buf, Py_ssize_t size, Py_ssize_t count, long long tick) except -1:
        """``_put`` of the ``count`` inputs of a packed datagram (``_packed_count``), read where
        they lie: the same checks in the same order, and no object made for an input already
        taken (most of them: each datagram repeats the inputs not yet acknowledged)."""
        cdef long long seq
        cdef int dropped = 0, ticks
        cdef Py_ssize_t at = 5, length
        if self._validate is None:
            raise InvalidInput(NOT_IN_A_MATCH)
        if count > _MAX_INPUTS:
            raise MalformedFrame(f"input datagram carries more than {MAX_INPUTS_PER_DATAGRAM} inputs")
        while at < size:
            seq, ticks, length = _be(buf + at, 4), buf[at + 4], _be(buf + at + 5, 2)
            at += 7
            if seq == 0:
                raise MalformedFrame(_SHAPE)
            if not 1 <= ticks <= _MAX_INPUT_TICKS:
                raise MalformedFrame(f"an input holds for 1 to {MAX_INPUT_TICKS} ticks, not {ticks}")
            if seq > self.received_seq:  # (else a redundant copy of an input already taken)
                self._check_jump(seq, seq)
                self._end_hold()
                controls = self._decoder.decode_json(buf + at, length) if self._decoder is not None else None
                if controls is None:
                    raw = _controls(PyBytes_FromStringAndSize(<const char *>buf + at, length))
                    controls = self._decoder.decode(raw) if self._decoder is not None else self._validate(raw)
                dropped += self._queue(seq, controls, ticks, tick)
            at += length
        return dropped

    cdef int _check_jump(self, long long seq, object written) except -1:
        """MalformedFrame when new input ``seq`` (``written`` so by the client) jumps too far
        past the last one."""
        if seq > (self.received_seq + _MAX_SEQ_JUMP if self.received_seq else _MAX_SEQ):
            raise MalformedFrame(
                f"input seq {written} jumps more than {MAX_SEQ_JUMP} past the last one ({self.received_seq})"
                if self.received_seq
                else f"input seq {written} is over {MAX_SEQ}"
            )
        return 0

    cdef void _end_hold(self):
        """What is left of the previous input's hold gives way to a new one (before the new one
        is read, which may refuse it): the newest controls win a tick sooner, and held inputs
        never stand in a queue."""
        while self._newest_held():
            self._count -= 1
            self._controls[(self._head + self._count) % RING] = None

    cdef int _queue(self, long long seq, object controls, int ticks, long long tick):
        """A new input in the ring, holding for ``ticks`` ticks: how many the full ring dropped."""
        cdef int dropped = 0, i
        self._push(seq, controls, tick)
        for i in range(ticks - 1):
            self._push(seq, None, tick)
        self.received_seq = seq
        while self._count > _INPUT_BUFFER:
            if self._pop_oldest() is not None:
                self.inputs_dropped += 1
                dropped += 1
        return dropped

    def take(self, long long tick):
        """The next input in sequence order for ``tick``, or None (the player keeps its controls)."""
        return self.take_c(tick)

    cdef object take_c(self, long long tick):
        cdef long long seq
        if not self._primed:
            if self._count == 0 or (self._count < _JITTER_TICKS and tick - self._ticks[self._head] < _JITTER_TICKS):
                return None
            self._primed = True
        if self._count == 0:
            self._primed = False
            self.input_underruns += 1
            self._window_ticks, self._window_min = 0, _INPUT_BUFFER
            return None
        while self._count > _JITTER_TICKS + 2:
            self._merge_oldest()
        self._window_ticks += 1
        if self._window_ticks >= _DRAIN_WINDOW_TICKS:
            if self._window_min > 0 and self._count > 1:
                self._merge_oldest()
            self._window_ticks, self._window_min = 0, _INPUT_BUFFER
        seq = self._seqs[self._head]
        controls = self._pop_oldest()
        self._window_min = min(self._window_min, self._count)
        if controls is None:
            return None  # a later tick of an input that holds: nothing new to apply
        self.applied_seq = seq
        return seq, controls

    cdef void _merge_oldest(self):
        """Drop the oldest tick of input; the newer controls win."""
        if self._pop_oldest() is not None:
            self.inputs_merged += 1
