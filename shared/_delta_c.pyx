# cython: language_level=3, boundscheck=False, wraparound=False
"""Snapshot deltas in native code: ``diff``, ``diff_json`` and ``apply`` as ``shared/delta.py``
describes them.

The twin of ``_delta_py.py``, line for line, with the loops typed for Cython: the same
results and the same errors (the tests compare the two with hypothesis). Change both or
neither. A delta from the network is at most 1024 levels deep (orjson's limit when it is
decoded), so the recursion here stays well within the C stack.

``_diff_json`` walks the views as ``_diff`` does, branch for branch, but writes the delta's
JSON into C buffers as it goes instead of building its dicts for orjson to write: a change to
one walk is a change to the other (the tests hold them to the same bytes).
"""

from cpython.bytes cimport PyBytes_FromStringAndSize
from cpython.long cimport PyLong_AsLongLongAndOverflow, PyLong_FromLongLong
from cpython.unicode cimport PyUnicode_GET_LENGTH
from libc.limits cimport LLONG_MAX, LLONG_MIN
from libc.stdlib cimport free, realloc
from libc.string cimport memcpy

import orjson

from tickline.shared._delta_py import DeltaError

cdef object _dumps = orjson.dumps


cdef extern from "Python.h":
    bint PyUnicode_IS_ASCII(object text)
    void *PyUnicode_DATA(object text)

cdef object _ABSENT = object()
cdef object _INT64 = 2**63
cdef frozenset _PARTS = frozenset(("s", "n", "u", "r"))


def diff(a, b):
    """The delta that turns view ``a`` into view ``b``."""
    if not isinstance(a, dict) or not isinstance(b, dict):
        raise TypeError("diff takes two views (dicts)")
    return _diff(<dict>a, <dict>b)


cdef dict _diff(dict a, dict b):
    cdef dict sets = None
    cdef dict increments = None
    cdef dict updates = None
    cdef dict out
    cdef dict sub
    cdef Py_ssize_t kept = 0  # keys of b that a has too
    cdef long long x, y
    cdef int x_over, y_over
    for key, new in b.items():
        old = a.get(key, _ABSENT)
        if old is new:
            kept += 1
            continue
        if old is not _ABSENT:
            kept += 1
        if type(new) is int and type(old) is int:  # not bool, which is an int too
            x = PyLong_AsLongLongAndOverflow(old, &x_over)
            y = PyLong_AsLongLongAndOverflow(new, &y_over)
            if not x_over and not y_over:  # (the usual case, in C: no int objects but the step)
                if x != y:
                    if (x < 0 and y > LLONG_MAX + x) or (x > 0 and y < LLONG_MIN + x):
                        if sets is None:  # (the step is past 64 bits: as below)
                            sets = {}
                        sets[key] = new
                    else:
                        if increments is None:
                            increments = {}
                        increments[key] = PyLong_FromLongLong(y - x)
            elif new != old:
                step = new - old
                if -_INT64 <= step < _INT64:
                    if increments is None:
                        increments = {}
                    increments[key] = step
                else:  # an increment JSON carries as a 64-bit integer, or the new value whole
                    if sets is None:
                        sets = {}
                    sets[key] = new
        elif isinstance(new, dict) and isinstance(old, dict):
            sub = _diff(<dict>old, <dict>new)
            if sub:
                if updates is None:
                    updates = {}
                updates[key] = sub
        elif (
            old is _ABSENT
            or old != new
            or type(old) is not type(new)
            or (isinstance(new, list) and not _same(old, new))
        ):
            if sets is None:
                sets = {}
            sets[key] = new
    out = {}
    if sets:
        out["s"] = sets
    if increments:
        out["n"] = increments
    if updates:
        out["u"] = updates
    if kept != len(a):
        out["r"] = [key for key in a if key not in b]
    return out


# ---------------------------------------------------------------------- the delta as JSON

cdef struct _Out:
    char *data
    Py_ssize_t size, cap


cdef int _put(_Out *out, const char *s, Py_ssize_t n) except -1:
    cdef Py_ssize_t cap
    cdef char *grown
    if out.size + n > out.cap:
        cap = max(out.cap * 2, out.size + n, 256)
        grown = <char *>realloc(out.data, cap)
        if grown == NULL:
            raise MemoryError()
        out.data, out.cap = grown, cap
    memcpy(out.data + out.size, s, n)
    out.size += n
    return 0


cdef int _put_int(_Out *out, long long value) except -1:
    cdef char digits[24]
    cdef int at = 24
    cdef unsigned long long u = <unsigned long long>(-(value + 1)) + 1 if value < 0 else <unsigned long long>value
    while True:
        at -= 1
        digits[at] = <char>(48 + u % 10)
        u //= 10
        if u == 0:
            break
    if value < 0:
        at -= 1
        digits[at] = b"-"
    return _put(out, digits + at, 24 - at)


cdef int _put_str(_Out *out, object text) except -1:
    """``text`` as a JSON string, as orjson writes it: 1 (nothing written) unless it is a str
    of printable ASCII that needs no escape."""
    cdef Py_ssize_t i, n
    cdef const unsigned char *chars
    if type(text) is not str or not PyUnicode_IS_ASCII(text):
        return 1
    n = PyUnicode_GET_LENGTH(text)
    chars = <const unsigned char *>PyUnicode_DATA(text)  # (ASCII: one byte a character)
    for i in range(n):
        if chars[i] < 0x20 or chars[i] == 34 or chars[i] == 92:  # (a control character, ", \\)
            return 1
    _put(out, b'"', 1)
    _put(out, <const char *>chars, n)
    return _put(out, b'"', 1)


cdef int _put_value(_Out *out, object value) except -1:
    """``value`` as orjson writes it: 1 (stop: the caller falls back on orjson) for anything
    but ints of 64 bits, bools, None, strs ``_put_str`` writes, and lists and dicts of them."""
    cdef long long number
    cdef int over = 0
    cdef bint first = True
    if value is None:
        return _put(out, b"null", 4)
    if value is True:
        return _put(out, b"true", 4)
    if value is False:
        return _put(out, b"false", 5)
    if type(value) is int:
        number = PyLong_AsLongLongAndOverflow(value, &over)
        return 1 if over else _put_int(out, number)
    if type(value) is str:
        return _put_str(out, value)
    if type(value) is list:
        _put(out, b"[", 1)
        for item in <list>value:
            if not first:
                _put(out, b",", 1)
            first = False
            if _put_value(out, item):
                return 1
        return _put(out, b"]", 1)
    if type(value) is dict:
        _put(out, b"{", 1)
        for key, item in (<dict>value).items():
            if not first:
                _put(out, b",", 1)
            first = False
            if _put_str(out, key) or _put(out, b":", 1) or _put_value(out, item):
                return 1
        return _put(out, b"}", 1)
    return 1


cdef int _put_part(_Out *out, const char *name, _Out *part, bint *first) except -1:
    """A part of a delta (``"s":{...}``), when it holds anything."""
    if part.size == 0:
        return 0
    if not first[0]:
        _put(out, b",", 1)
    first[0] = False
    _put(out, name, 5)
    _put(out, part.data, part.size)
    return _put(out, b"}", 1)


cdef int _entry(_Out *part, object key) except -1:
    """The start of ``key``'s entry in a part: 1 when the key is not one _put_str writes."""
    if part.size:
        _put(part, b",", 1)
    if _put_str(part, key):
        return 1
    return _put(part, b":", 1)


cdef int _diff_json(dict a, dict b, _Out *out) except -1:
    """``_diff(a, b)`` written to ``out`` as orjson writes it; 1 (stop) at the first key or value
    it does not write, or an integer step past C's (the caller then falls back on orjson)."""
    cdef _Out sets, increments, updates, sub
    cdef Py_ssize_t kept = 0
    cdef long long x, y
    cdef int x_over, y_over
    cdef bint first = True, removed = False
    sets.data = increments.data = updates.data = sub.data = NULL
    sets.size = sets.cap = increments.size = increments.cap = 0
    updates.size = updates.cap = sub.size = sub.cap = 0
    try:
        for key, new in b.items():
            old = a.get(key, _ABSENT)
            if old is new:
                kept += 1
                continue
            if old is not _ABSENT:
                kept += 1
            if type(new) is int and type(old) is int:
                x = PyLong_AsLongLongAndOverflow(old, &x_over)
                y = PyLong_AsLongLongAndOverflow(new, &y_over)
                if x_over or y_over:
                    return 1  # (past 64 bits: _diff's Python ints, and orjson's say on them)
                if x != y:
                    if (x < 0 and y > LLONG_MAX + x) or (x > 0 and y < LLONG_MIN + x):
                        if _entry(&sets, key) or _put_int(&sets, y):
                            return 1
                    elif _entry(&increments, key) or _put_int(&increments, y - x):
                        return 1
            elif isinstance(new, dict) and isinstance(old, dict):
                sub.size = 0
                if _diff_json(<dict>old, <dict>new, &sub):
                    return 1
                if sub.size > 2:  # (not "{}")
                    if _entry(&updates, key):
                        return 1
                    _put(&updates, sub.data, sub.size)
            elif (
                old is _ABSENT
                or old != new
                or type(old) is not type(new)
                or (isinstance(new, list) and not _same(old, new))
            ):
                if _entry(&sets, key) or _put_value(&sets, new):
                    return 1
        _put(out, b"{", 1)
        _put_part(out, b'"s":{', &sets, &first)
        _put_part(out, b'"n":{', &increments, &first)
        _put_part(out, b'"u":{', &updates, &first)
        if kept != len(a):
            if not first:
                _put(out, b",", 1)
            _put(out, b'"r":[', 5)
            for key in a:
                if key not in b:
                    if removed:
                        _put(out, b",", 1)
                    removed = True
                    if _put_str(out, key):
                        return 1
            _put(out, b"]", 1)
        return _put(out, b"}", 1)
    finally:
        free(sets.data)
        free(increments.data)
        free(updates.data)
        free(sub.data)


def diff_json(a, b):
    """``orjson.dumps(diff(a, b))``, written while the differences are found, with no dict made;
    for a key or value it does not write as orjson would, exactly that expression."""
    cdef _Out out
    if not isinstance(a, dict) or not isinstance(b, dict):
        raise TypeError("diff takes two views (dicts)")
    out.data, out.size, out.cap = NULL, 0, 0
    try:
        if _diff_json(<dict>a, <dict>b, &out) == 0:
            return PyBytes_FromStringAndSize(out.data, out.size)
    finally:
        free(out.data)
    return _dumps(_diff(<dict>a, <dict>b))


def apply(base, delta):
    """``base`` with ``delta`` applied, as a new view; ``base`` is not modified.

    Raises :class:`DeltaError` when the delta does not fit the base (a nested
    update of a key that is missing or not a dict, or a malformed delta).
    """
    return _apply(base, delta)


cdef object _apply(object base, object delta):
    cdef dict out
    cdef dict parts
    if not isinstance(delta, dict):
        raise DeltaError("delta is not an object")
    parts = <dict>delta
    if not parts:
        return base
    out = dict(base)
    for part, value in parts.items():
        if part == "u" and isinstance(value, dict):
            for key, sub in (<dict>value).items():
                old = out.get(key)
                if not isinstance(old, dict):
                    raise DeltaError(f"delta updates {str(key)[:32]!r}, which the base lacks")
                out[key] = _apply(old, sub)
        elif part == "n" and isinstance(value, dict):
            for key, inc in (<dict>value).items():
                old = out.get(key)
                if type(old) is not int or type(inc) is not int:
                    raise DeltaError(f"delta adds to {str(key)[:32]!r}, which is not an integer on both sides")
                out[key] = old + inc
        elif part == "s" and isinstance(value, dict):
            out.update(<dict>value)
        elif part == "r" and isinstance(value, list):
            for key in <list>value:
                if not isinstance(key, str):
                    raise DeltaError("delta removes a key that is not a string")
                out.pop(key, None)
        elif part in _PARTS:
            raise DeltaError("delta parts have the wrong type")
        else:
            raise DeltaError("delta has unknown parts")
    return out


cdef bint _same(object a, object b) except -1:
    """Equal as JSON: unlike ``==``, 1, 1.0 and True differ, also inside lists."""
    if type(a) is not type(b):
        return False
    if isinstance(a, list):
        if len(<list>a) != len(<list>b):
            return False
        for x, y in zip(<list>a, <list>b):
            if not _same(x, y):
                return False
        return True
    if isinstance(a, dict):
        if (<dict>a).keys() != (<dict>b).keys():
            return False
        for k, v in (<dict>a).items():
            if not _same(v, (<dict>b)[k]):
                return False
        return True
    return bool(a == b)
