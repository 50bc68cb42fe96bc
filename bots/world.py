"""The client's side of the netcode, sans-I/O: the world as received, acks, and inputs.

:class:`ClientWorld` takes the server's :class:`shared.protocol.Delta` frames in
whatever order and duplication they arrive, keeps a ring of recent views so
that a delta against any recently acknowledged tick applies, and builds input
datagrams that repeat every input the server has not yet confirmed. No
sockets, no clock: the asyncio shell in ``bots.client`` feeds it.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from shared import delta
from shared.protocol import Delta, Input

# Views kept for baselines; the server's ring is 32 sends, so 64 is ample.
VIEW_RING = 64
# Inputs repeated in each datagram until the server confirms them.
REDUNDANT_INPUTS = 4


class ClientWorld:
    def __init__(self) -> None:
        self.tick = 0  # newest tick applied
        self.view: dict[str, Any] = {}
        self.server_seq = 0  # newest input the server says it applied
        self._views: OrderedDict[int, dict[str, Any]] = OrderedDict()
        self._seq = 0
        self._unacked: list[list[Any]] = []  # [seq, controls], oldest first
        self.deltas_applied = 0
        self.deltas_stale = 0
        self.deltas_unusable = 0

    def on_delta(self, frame: Delta) -> bool:
        """Apply a delta if it is newer than what we have and its base is known."""
        if frame.tick <= self.tick:
            self.deltas_stale += 1  # late or duplicated: we already have newer
            return False
        if frame.base == 0:
            base: dict[str, Any] | None = {}
        else:
            base = self._views.get(frame.base)
        if base is None:
            self.deltas_unusable += 1  # its base fell out of our ring; the next one will fit
            return False
        self.view = delta.apply(base, frame.diff)
        self.tick = frame.tick
        self._views[frame.tick] = self.view
        while len(self._views) > VIEW_RING:
            self._views.popitem(last=False)
        if frame.seq > self.server_seq:
            self.server_seq = frame.seq
            self._unacked = [item for item in self._unacked if item[0] > frame.seq]
        self.deltas_applied += 1
        return True

    def input_frame(self, controls: dict[str, Any]) -> Input:
        """Number ``controls`` as the next input; the frame repeats the unconfirmed ones."""
        self._seq += 1
        self._unacked.append([self._seq, controls])
        del self._unacked[:-REDUNDANT_INPUTS]
        return Input(ack=self.tick, inputs=list(self._unacked))

    def reconnected(self) -> ClientWorld:
        """A world for a new connection of the same player: no views (the server
        starts it from a full snapshot), the same input numbering."""
        world = ClientWorld()
        world._seq = self._seq
        world.server_seq = self.server_seq
        return world

    @property
    def last_seq(self) -> int:
        return self._seq
