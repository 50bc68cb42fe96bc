"""The client's side of the netcode, sans-I/O: the world as received, prediction, interpolation.

:class:`ClientWorld` takes the server's :class:`shared.protocol.Delta` frames in
whatever order and duplication they arrive, and keeps a ring of recent views
so that a delta against any recently acknowledged tick applies. On top of it:

- **inputs**: one numbered input per client tick (or per ``ticks`` ticks, for a
  client that reads its controls less often); each input datagram repeats
  every input the server has not yet confirmed (up to ``REDUNDANT_INPUTS``), so
  a lost datagram costs nothing, and acknowledges the newest tick held (on the
  welcome's ``ack_every`` grid, when it names one: the room's players then ack the
  same ticks, and the server encodes one diff for them all);
- **prediction**: the player's own entity is the server's latest position with
  the unconfirmed inputs replayed through the game's own rules
  (``Rules.predict_self``), so it answers the player at once; each delta
  reconciles it (rewind to the server's state, replay what is left);
- **interpolation**: other entities are drawn ``interp_ticks`` behind the
  newest snapshot, between the two snapshots around that moment, so they move
  smoothly however the packets arrive.

No sockets and no clock: ``now`` (seconds, any monotonic origin) is a parameter.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import orjson

from tickline.shared import delta
from tickline.shared.game import Controls, Rules
from tickline.shared.protocol import Delta, Input, encode_packed_input, unpack_diff
from tickline.shared.schema import to_units

# Views kept for baselines and interpolation (the server keeps 64 views per client).
VIEW_RING = 64
# Unconfirmed inputs repeated in each datagram.
REDUNDANT_INPUTS = 8
# Unconfirmed inputs kept for prediction; past this the oldest are forgotten.
MAX_PENDING = 256
# Latency samples kept until someone takes them.
MAX_LATENCIES = 10_000
# The base of a full snapshot (never changed: deltas make new views).
_NO_BASE: dict[str, Any] = {}


class SharedViews:
    """Views shared by the clients of one process: a load generator's bots.

    The bots of one room mostly get the same diff against the same baseline tick
    (the server encodes it once for all of them). The same diff applied to bases
    that are equal as JSON makes equal views, and views never change once built,
    so it is inflated, parsed and applied once and the view is shared; bots that
    share a base hold the very same object, and telling them equal is one
    identity check. At 60 Hz, applying deltas was 35 % of a bot worker's CPU and
    inflating and parsing them 13 %. A real client has no one to share with.
    """

    def __init__(self, size: int = 1024) -> None:
        self._size = size
        # (base tick, packed diff) -> (the base it was applied to, the view it made)
        self._views: OrderedDict[tuple[int, bytes], tuple[dict[str, Any], dict[str, Any]]] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def view(self, base_tick: int, base: dict[str, Any], packed: bytes) -> dict[str, Any]:
        """``base`` with the packed diff applied; raises as :func:`unpack_diff` and :func:`delta.apply` do."""
        key = (base_tick, packed)
        entry = self._views.get(key)
        # Equal as JSON: the same object, or the same bytes (orjson tells 1, 1.0 and
        # true apart; equal views whose keys came in another order only miss).
        if entry is not None and (entry[0] is base or orjson.dumps(entry[0]) == orjson.dumps(base)):
            self.hits += 1
            return entry[1]
        self.misses += 1
        view = delta.apply(base, unpack_diff(packed))
        self._views[key] = (base, view)
        if len(self._views) > self._size:
            self._views.popitem(last=False)
        return view


class ClientWorld:
    def __init__(
        self,
        rules: Rules | None = None,
        player_id: int = 0,
        tick_rate: int = 60,
        interp_ticks: int = 6,
        shared: SharedViews | None = None,
    ) -> None:
        self.rules = rules
        self.shared = shared
        self.player_id = player_id
        self.tick_rate = tick_rate
        self.interp_ticks = interp_ticks  # 6 ticks at 60 Hz: the 100 ms of Source's cl_interp
        self.tick = 0  # newest tick applied
        self.ack_every = 0  # the welcome's ack grid (0: ack the newest tick)
        self.view: dict[str, Any] = {}
        self.server_seq = 0  # newest input the server says it applied
        self._views: OrderedDict[int, dict[str, Any]] = OrderedDict()
        self._arrived_at: float | None = None  # when the newest tick arrived
        self._seq = 0
        self._pending: list[tuple[int, Controls, int]] = []  # unconfirmed (seq, controls, ticks), oldest first
        self._sent_at: dict[int, float] = {}  # seq -> when it was made, for latency
        self.input_latencies: list[float] = []  # every input, until a delta names it or a newer one
        self.ack_latencies: list[float] = []  # the input a delta names, when it names a newer one
        self.deltas_applied = 0
        self.deltas_stale = 0
        self.deltas_unusable = 0

    # ------------------------------------------------------------ snapshots

    def on_delta(self, frame: Delta, now: float = 0.0) -> bool:
        """Apply a delta if it is newer than what we have and its base is known."""
        return self._take(frame.tick, frame.base, frame.seq, now, lambda base: delta.apply(base, frame.diff))

    def on_packed_delta(self, tick: int, base: int, seq: int, packed: bytes, now: float = 0.0) -> bool:
        """The same for a packed delta whose diff is still packed (``split_packed_delta``):
        it is unpacked only when it applies, and once per process with ``shared`` views.
        Raises ``ProtocolError`` for a diff that does not unpack, ``DeltaError`` for one
        that does not fit its base."""
        shared = self.shared
        if shared is not None:
            return self._take(tick, base, seq, now, lambda view: shared.view(base, view, packed))
        return self._take(tick, base, seq, now, lambda view: delta.apply(view, unpack_diff(packed)))

    def _take(
        self, tick: int, base_tick: int, seq: int, now: float, make: Callable[[dict[str, Any]], dict[str, Any]]
    ) -> bool:
        if tick <= self.tick:
            self.deltas_stale += 1  # late or duplicated: we already have newer
            return False
        base = _NO_BASE if base_tick == 0 else self._views.get(base_tick)
        if base is None:
            self.deltas_unusable += 1  # its base fell out of our ring; the next one will fit
            return False
        self.view = make(base)
        self.tick = tick
        self._arrived_at = now
        self._views[tick] = self.view
        while len(self._views) > VIEW_RING:
            self._views.popitem(last=False)
        if seq > self.server_seq:
            for sent, sent_at in self._sent_at.items():
                if sent <= seq and len(self.input_latencies) < MAX_LATENCIES:
                    self.input_latencies.append(now - sent_at)
            if seq in self._sent_at and len(self.ack_latencies) < MAX_LATENCIES:
                self.ack_latencies.append(now - self._sent_at[seq])
            self._sent_at = {sent: t for sent, t in self._sent_at.items() if sent > seq}
            self.server_seq = seq
            self._pending = [item for item in self._pending if item[0] > seq]
        self.deltas_applied += 1
        return True

    # ------------------------------------------------------------ inputs

    def next_input(self, controls: Controls, now: float | None = None, ticks: int = 1) -> int:
        """Number ``controls`` as the input for this tick (and the ``ticks`` - 1
        after it); returns its sequence number.

        With ``now``, the time until the server reports the input applied (its
        seq echoed in a delta) is measured into ``input_latencies``: input to
        visible, the latency a player feels. An input superseded before any
        delta named it counts the wait until one named a newer one; only the
        named input's own wait goes into ``ack_latencies`` as well (how the
        Colyseus peer samples: the newest action, as the player sees it land).
        """
        self._seq += 1
        self._pending.append((self._seq, controls, ticks))
        del self._pending[:-MAX_PENDING]
        if now is not None:
            self._sent_at[self._seq] = now
            if len(self._sent_at) > MAX_PENDING:
                del self._sent_at[next(iter(self._sent_at))]
        return self._seq

    def take_latencies(self) -> list[float]:
        """Input-to-visible latencies (seconds) measured since the last call."""
        out, self.input_latencies = self.input_latencies, []
        return out

    def take_ack_latencies(self) -> list[float]:
        """The same for the inputs that deltas named (seconds), since the last call."""
        out, self.ack_latencies = self.ack_latencies, []
        return out

    @property
    def ack(self) -> int:
        """The tick input datagrams acknowledge: the newest we hold, or with an ``ack_every``
        grid the newest we hold on it, unless that one lags the newest by more than two steps
        (then the newest: a diff against an old baseline only grows)."""
        every = self.ack_every
        if every > 0 and self.tick % every:
            tick: int
            for tick in reversed(self._views):
                if self.tick - tick > 2 * every:
                    break
                if tick % every == 0:
                    return tick
        return self.tick

    def input_frame(self) -> Input:
        """A datagram repeating the newest unconfirmed inputs and acking :attr:`ack`."""
        return Input(
            ack=self.ack,
            inputs=[[seq, c] if ticks == 1 else [seq, c, ticks] for seq, c, ticks in self._pending[-REDUNDANT_INPUTS:]],
        )

    def packed_input(self) -> bytes:
        """:meth:`input_frame`'s inputs and ack as a packed input datagram."""
        return encode_packed_input(
            self.ack, [(seq, orjson.dumps(c), ticks) for seq, c, ticks in self._pending[-REDUNDANT_INPUTS:]]
        )

    @property
    def last_seq(self) -> int:
        return self._seq

    @property
    def unconfirmed(self) -> int:
        return len(self._pending)

    # ------------------------------------------------------------ prediction

    def predicted_self(self) -> dict[str, Any] | None:
        """Our own entity: the server's newest view of it, plus the inputs it has not applied yet."""
        table = self.rules.view_schema().players if self.rules is not None else "players"
        me: dict[str, Any] | None = self.view.get(table, {}).get(str(self.player_id))
        if me is None or self.rules is None:
            return me
        return self.rules.predict_self(me, [c for _, c, ticks in self._pending for _ in range(ticks)])

    # ------------------------------------------------------------ interpolation

    def server_tick(self, now: float) -> float:
        """The server's tick now, as estimated from when the newest snapshot arrived."""
        if self._arrived_at is None:
            return float(self.tick)
        return self.tick + (now - self._arrived_at) * self.tick_rate

    def render_tick(self, now: float) -> float:
        """The moment other entities are drawn at: ``interp_ticks`` behind the server."""
        return max(0.0, self.server_tick(now) - self.interp_ticks)

    def interpolated(self, table: str, now: float) -> dict[str, dict[str, Any]]:
        """``table``'s entities at the render tick, positions blended between the two
        snapshots around it (the newest one alone when none is older)."""
        at = self.render_tick(now)
        older = newer = None
        for tick, view in reversed(self._views.items()):
            if tick > at:
                newer = (tick, view)
            else:
                older = (tick, view)
                break
        if older is None:
            return dict(self.view.get(table, {})) if newer is None else dict(newer[1].get(table, {}))
        if newer is None:
            return dict(older[1].get(table, {}))
        (t0, v0), (t1, v1) = older, newer
        f = (at - t0) / (t1 - t0)
        blend = self._interpolated_fields(table)
        out: dict[str, dict[str, Any]] = {}
        after = v1.get(table, {})
        for key, a in v0.get(table, {}).items():
            b = after.get(key)
            if b is None or not blend:
                out[key] = a
            else:
                out[key] = {**a, **{k: a[k] + (b[k] - a[k]) * f for k in blend if k in a and k in b}}
        return out

    def _interpolated_fields(self, table: str) -> tuple[str, ...]:
        """The fields of ``table`` the game declares smooth (positions); x and y when the game is unknown."""
        if self.rules is None:
            return ("x", "y")
        spec = self.rules.view_schema().tables.get(table)
        return spec.interpolate if spec is not None else ()

    # ------------------------------------------------------------ units

    def in_units(self, table: str, entity: dict[str, Any]) -> dict[str, Any]:
        """An entity of view table ``table`` with every number in the unit its game declares
        (arena's positions: world units rather than view steps). Without the game's rules,
        as it came."""
        if self.rules is None:
            return dict(entity)
        spec = self.rules.view_schema().tables.get(table)
        if spec is None:
            return dict(entity)
        return {k: to_units(spec.fields[k], v) if k in spec.fields else v for k, v in entity.items()}

    # ------------------------------------------------------------ reconnecting

    def reconnected(self) -> ClientWorld:
        """A world for a new connection of the same player: no views (the server
        starts it from a full snapshot), the same input numbering."""
        world = ClientWorld(self.rules, self.player_id, self.tick_rate, self.interp_ticks, self.shared)
        world._seq = self._seq
        world.server_seq = self.server_seq
        return world
