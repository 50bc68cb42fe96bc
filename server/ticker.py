"""The fixed-rate tick schedule every match runs on (and the transport-ceiling benchmark too),
and where in its tick interval each match of a server ticks.

Tick n is due at an absolute instant on the loop's clock, so that the time a tick
takes never turns into drift. Those instants lie on a grid, ``phase + k / rate``:
matches of one rate and phase fall due together, and one wake-up of the event loop
runs all their ticks (:class:`TickSlots` hands out the phases). A tick that starts
late is reported with its whole lateness. When the loop falls further behind than
``max_behind_s`` (a stall: a long collection, a blocked loop, a suspended process),
a burst of catch-up ticks would help no player, so the schedule restarts at the next
instant of its grid and the restart is counted (``catch_ups``).

:class:`Ticker` and :class:`TickSlots` are sans-I/O: the caller passes the clock's
reading, as aioquic passes ``now``; :meth:`Ticker.wait` is the one-line asyncio shell.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable

# Further behind than this, the schedule restarts from now instead of catching up.
MAX_BEHIND_S = 0.25
# Matches of one rate that tick at the same instant, by default (TickSlots).
MATCHES_PER_TICK = 4
# Instants closer to a grid point than this (in ticks) are on it: float rounding, not time.
_ON_GRID = 1e-9


class Ticker:
    def __init__(self, rate: float, now: float, max_behind_s: float = MAX_BEHIND_S, phase: float = 0.0) -> None:
        if rate <= 0:
            raise ValueError(f"a tick rate must be positive, not {rate}")
        if not 0 <= phase < 1.0 / rate:
            raise ValueError(f"a phase lies within one tick interval (0 to {1.0 / rate:g} s), not {phase}")
        self.rate = rate
        self.interval = 1.0 / rate
        self.phase = phase
        self.max_behind_s = max_behind_s
        self.catch_ups = 0  # schedule restarts after falling more than max_behind_s behind
        self._start = self._on_grid(now)
        self._n = 0

    def _on_grid(self, now: float, after: bool = False) -> float:
        """The first instant of the grid at ``now`` or later (``after``: strictly later)."""
        k = (now - self.phase) * self.rate
        first = math.floor(k + _ON_GRID) + 1 if after else math.ceil(k - _ON_GRID)
        return self.phase + first / self.rate

    @property
    def deadline(self) -> float:
        """When the next tick is due."""
        return self._start + self._n * self.interval

    def restart(self, now: float) -> None:
        """Make the next tick due at the grid's first instant from ``now`` on (after a pause:
        the ticks it spanned are not run)."""
        self._start, self._n = self._on_grid(now), 0

    def begin(self, now: float) -> float:
        """Start the tick that is due; returns how late it starts (``now - deadline``), as it was."""
        late = now - self.deadline
        if late > self.max_behind_s:
            self.catch_ups += 1
            self._start, self._n = self._on_grid(now, after=True), 0
        else:
            self._n += 1
        return late

    async def wait(self, clock: Callable[[], float]) -> float:
        """Sleep until the next tick is due, then :meth:`begin` it; its lateness in seconds.

        A tick that is due already still yields to the loop once: a match that fell behind
        catches up between the other tasks' turns (the other matches' ticks, the sessions,
        the HTTP server), not ahead of them all for up to ``max_behind_s``."""
        delay = self.deadline - clock()
        await asyncio.sleep(delay if delay > 0 else 0)
        return self.begin(clock())


def _spread(index: int) -> float:
    """The ``index``-th point of 0, 1/2, 1/4, 3/4, 1/8, 5/8, ...: each new one halves the
    widest gap the others leave on [0, 1)."""
    point, weight = 0.0, 0.5
    while index:
        if index & 1:
            point += weight
        index >>= 1
        weight /= 2
    return point


class TickSlots:
    """Which phase of its tick interval each match of one server ticks at.

    Up to ``per_slot`` matches of one rate share a slot: their ticks fall due at the same
    instant, so one wake-up of the event loop runs them all, and one read of the socket
    brings all their inputs. Waking from sleep costs a server more than a small match's
    whole tick (tens of microseconds on a virtual machine), so sharing is most of what a
    slot saves. The price: a match starts its tick after the others of its slot have run
    theirs, and its lateness says so; ``per_slot`` bounds it. A new match takes the first
    slot with room; a new slot opens halfway into the widest gap the open ones leave."""

    def __init__(self, per_slot: int = MATCHES_PER_TICK) -> None:
        if per_slot < 1:
            raise ValueError(f"a tick slot holds at least one match, not {per_slot}")
        self.per_slot = per_slot
        self._members: dict[float, list[int]] = {}  # rate -> matches in each slot, by index

    def take(self, rate: float) -> tuple[int, float]:
        """A slot for a match that ticks ``rate`` times a second: its index (to :meth:`release`
        it) and its phase in seconds, for the match's :class:`Ticker`."""
        members = self._members.setdefault(rate, [])
        index = next((i for i, n in enumerate(members) if n < self.per_slot), len(members))
        if index == len(members):
            members.append(0)
        members[index] += 1
        return index, _spread(index) / rate

    def release(self, rate: float, index: int) -> None:
        """The match that took slot ``index`` at ``rate`` no longer ticks."""
        members = self._members[rate]
        members[index] -= 1
        while members and members[-1] == 0:
            members.pop()

    def sharing(self, rate: float) -> list[int]:
        """How many matches tick in each slot of ``rate``, by index."""
        return list(self._members.get(rate, []))
