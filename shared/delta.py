"""Snapshot deltas: the difference between two views, and applying it.

A view (what one player may see at one tick) is a tree of dicts with string
keys whose leaves are JSON values; lists are leaves. ``diff(a, b)`` describes
how to turn ``a`` into ``b`` and ``apply(a, diff(a, b)) == b``. A delta is
itself a small JSON object, so it travels inside a :class:`shared.protocol.Delta`:

    {"s": {key: new value},      keys set or replaced whole
     "n": {key: increment},      integer leaves that were integers: new - old
     "u": {key: nested delta},   dict-valued keys changed in part
     "r": [key, ...]}            keys removed

Integers are sent as increments because the big ones in a game's view are
positions, which move by a little each tick: ``"x":-71`` instead of
``"x":12345``, and runs of small numbers compress far better on the wire.

Parts that are empty are left out; the delta of a view to itself is ``{}``.
A full snapshot is simply ``diff({}, b)``.

``diff_json(a, b)`` is ``orjson.dumps(diff(a, b))``, the bytes a delta travels as; the
server makes one per baseline a tick, and the native twin writes it while it finds the
differences, without making the delta's dicts (falling back on exactly that expression for
any key or value it does not write itself).

All three leave their inputs untouched; ``apply`` shares every subtree the
delta does not change with the base, so a client can keep a ring of recent
views cheaply. Views are therefore treated as immutable once built.

The work is done by native code where it was built (``_delta_c.pyx``) and by its
pure-Python twin otherwise (``_delta_py.py``); ``shared/native.py`` says which.
"""

from __future__ import annotations

from collections.abc import Callable

from tickline.shared import native
from tickline.shared._delta_py import DeltaError, View

_impl = native.load("tickline.shared", "delta")
diff: Callable[[View, View], View] = _impl.diff
diff_json: Callable[[View, View], bytes] = _impl.diff_json  # orjson.dumps(diff(a, b)), made faster
apply: Callable[[View, View], View] = _impl.apply

__all__ = ["DeltaError", "View", "apply", "diff", "diff_json"]
