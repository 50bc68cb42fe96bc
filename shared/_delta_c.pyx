# cython: language_level=3, boundscheck=False, wraparound=False
"""Snapshot deltas in native code: ``diff`` and ``apply`` as ``shared/delta.py`` describes them.

The twin of ``_delta_py.py``, line for line, with the loops typed for Cython: the same
results and the same errors (the tests compare the two with hypothesis). Change both or
neither. A delta from the network is at most 1024 levels deep (orjson's limit when it is
decoded), so the recursion here stays well within the C stack.
"""

from cpython.long cimport PyLong_AsLongLongAndOverflow, PyLong_FromLongLong
from libc.limits cimport LLONG_MAX, LLONG_MIN

from tickline.shared._delta_py import DeltaError

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
