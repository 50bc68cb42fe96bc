"""The fixed-rate tick schedule every match runs on (and the transport-ceiling benchmark too).

Tick n is due at ``start + n / rate``: absolute deadlines, so that the time a
tick takes never turns into drift. A tick that starts late is reported with
its whole lateness. When the loop falls further behind than ``max_behind_s``
(a stall: a long collection, a blocked loop, a suspended process), a burst of
catch-up ticks would help no player, so the schedule restarts from that
moment and the restart is counted (``catch_ups``).

:class:`Ticker` is sans-I/O: the caller passes the clock's reading, as
aioquic passes ``now``; :meth:`Ticker.wait` is the one-line asyncio shell.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

# Further behind than this, the schedule restarts from now instead of catching up.
MAX_BEHIND_S = 0.25


class Ticker:
    def __init__(self, rate: float, now: float, max_behind_s: float = MAX_BEHIND_S) -> None:
        if rate <= 0:
            raise ValueError(f"a tick rate must be positive, not {rate}")
        self.interval = 1.0 / rate
        self.max_behind_s = max_behind_s
        self.catch_ups = 0  # schedule restarts after falling more than max_behind_s behind
        self._start = now
        self._n = 0

    @property
    def deadline(self) -> float:
        """When the next tick is due."""
        return self._start + self._n * self.interval

    def restart(self, now: float) -> None:
        """Make the next tick due at ``now`` (after a pause: the ticks it spanned are not run)."""
        self._start, self._n = now, 0

    def begin(self, now: float) -> float:
        """Start the tick that is due; returns how late it starts (``now - deadline``), as it was."""
        late = now - self.deadline
        if late > self.max_behind_s:
            self.catch_ups += 1
            self._start, self._n = now, 1
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
