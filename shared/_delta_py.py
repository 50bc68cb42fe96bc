"""Snapshot deltas in pure Python: ``diff`` and ``apply`` as ``shared/delta.py`` describes them.

The twin of the native ``_delta_c.pyx``: the same results, the same errors. ``shared/delta.py``
picks one at import, and the tests run both.
"""

from __future__ import annotations

from typing import Any

import orjson

View = dict[str, Any]


def diff(a: object, b: object) -> View:
    """The delta that turns view ``a`` into view ``b`` (TypeError for what is not a view)."""
    if not isinstance(a, dict) or not isinstance(b, dict):
        raise TypeError("diff takes two views (dicts)")
    return _diff(a, b)


def _diff(a: View, b: View) -> View:
    # The server's hottest loop (a 50-player room's diff is 51 calls): parts are
    # made only when something goes in them, and keys removed are looked for only
    # when some key of ``a`` is not in ``b``.
    sets: dict[str, Any] | None = None
    increments: dict[str, int] | None = None
    updates: dict[str, Any] | None = None
    kept = 0  # keys of b that a has too
    get = a.get
    for key, new in b.items():
        old = get(key, _ABSENT)
        if old is new:
            kept += 1
            continue
        if old is not _ABSENT:
            kept += 1
        if type(new) is int and type(old) is int:  # not bool, which is an int too
            if new != old:
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
            sub = _diff(old, new)
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
    out: View = {}
    if sets:
        out["s"] = sets
    if increments:
        out["n"] = increments
    if updates:
        out["u"] = updates
    if kept != len(a):
        out["r"] = [key for key in a if key not in b]
    return out


def diff_json(a: object, b: object) -> bytes:
    """``orjson.dumps(diff(a, b))``: the delta as it travels (the native twin writes it as it
    finds it, without the dicts)."""
    return orjson.dumps(diff(a, b))


def apply(base: View, delta: View) -> View:
    """``base`` with ``delta`` applied, as a new view; ``base`` is not modified.

    Raises :class:`DeltaError` when the delta does not fit the base (a nested
    update of a key that is missing or not a dict, or a malformed delta).
    The parts of a delta made by :func:`diff` touch disjoint keys, so they are
    applied in one pass in whatever order they come (this is a client's
    hottest loop: a 50-player room's delta is 50 nested applies).
    """
    if not isinstance(delta, dict):
        raise DeltaError("delta is not an object")
    if not delta:
        return base
    out = dict(base)
    for part, value in delta.items():
        if part == "u" and isinstance(value, dict):
            for key, sub in value.items():
                old = out.get(key)
                if not isinstance(old, dict):
                    raise DeltaError(f"delta updates {str(key)[:32]!r}, which the base lacks")
                out[key] = apply(old, sub)
        elif part == "n" and isinstance(value, dict):
            for key, inc in value.items():
                old = out.get(key)
                if type(old) is not int or type(inc) is not int:
                    raise DeltaError(f"delta adds to {str(key)[:32]!r}, which is not an integer on both sides")
                out[key] = old + inc
        elif part == "s" and isinstance(value, dict):
            out.update(value)
        elif part == "r" and isinstance(value, list):
            for key in value:
                if not isinstance(key, str):
                    raise DeltaError("delta removes a key that is not a string")
                out.pop(key, None)
        elif part in _PARTS:
            raise DeltaError("delta parts have the wrong type")
        else:
            raise DeltaError("delta has unknown parts")
    return out


_PARTS = frozenset(("s", "n", "u", "r"))


class DeltaError(ValueError):
    """A delta that cannot be applied to the base it names."""


_ABSENT = object()
_INT64 = 2**63


def _same(a: Any, b: Any) -> bool:
    """Equal as JSON: unlike ``==``, 1, 1.0 and True differ, also inside lists."""
    if type(a) is not type(b):
        return False
    if isinstance(a, list):
        return len(a) == len(b) and all(map(_same, a, b))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(v, b[k]) for k, v in a.items())
    return bool(a == b)
