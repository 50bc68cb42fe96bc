# The C declarations of _intake_c.pyx, for the native modules that hand inputs on without a
# Python call between (server/_link_c.pyx): its classes and their C state and entry points.

cdef enum:
    RING = 64  # > INPUT_BUFFER + MAX_INPUT_TICKS: the most a put holds before trimming


cdef class _Control:
    cdef str name
    cdef int kind
    cdef long long lo, hi  # INT's bounds; TEXT's longest in hi
    cdef object values  # CHOICE's, as a frozenset
    cdef type value_type  # CHOICE's values' type
    cdef object spec  # the declared field: its check words every refusal
    cdef bint fresh_list  # a ListOf's default: a new list for each input
    cdef bytes name_utf8  # the name as a JSON key's bytes


cdef class InputDecoder:
    cdef list _controls
    cdef dict _template  # the non-optional controls' defaults, in declaration order
    cdef frozenset _names
    cdef list _slots  # decode_json's values, by control, while it reads
    cdef bint _in_c  # whether decode_json reads this declaration (at most 64 controls)

    cdef dict decode(self, raw)
    cdef object decode_json(self, const unsigned char *s, Py_ssize_t n)


cdef class InputBudget:
    cdef public object limits
    cdef double _rate_messages, _rate_bytes
    cdef double _burst_messages, _burst_bytes
    cdef double _messages, _bytes, _debt_messages, _debt_bytes, _when
    cdef public str exhausted

    cdef str _take(self, Py_ssize_t size, double now)


cdef class InputQueue:
    cdef object _validate
    cdef InputDecoder _decoder
    cdef InputBudget _budget
    cdef public bint spectating
    cdef public object ack  # (any integer the client wrote)
    cdef public str refusal
    cdef public int dropped_now
    cdef long long _seqs[RING]
    cdef long long _ticks[RING]  # the match tick each was received at
    cdef list _controls  # RING slots; None: a later tick of an input that holds
    cdef int _head, _count
    cdef bint _primed
    cdef int _window_ticks, _window_min
    cdef public long long received_seq
    cdef public long long applied_seq
    cdef public long long inputs_dropped
    cdef public long long input_underruns
    cdef public long long inputs_merged

    cdef void _push(self, long long seq, object controls, long long tick)
    cdef object _pop_oldest(self)
    cdef bint _newest_held(self)
    cdef int receive_c(self, bytes data, double now, long long tick) except -1
    cdef int _put(self, list items, long long tick) except -1
    cdef int _put_packed(self, const unsigned char *buf, Py_ssize_t size, Py_ssize_t count, long long tick) except -1
    cdef int _check_jump(self, long long seq, object written) except -1
    cdef void _end_hold(self)
    cdef int _queue(self, long long seq, object controls, int ticks, long long tick)
    cdef object take_c(self, long long tick)
    cdef void _merge_oldest(self)
