"""Many bots' inputs, each at its own times, from one task.

A bot sends an input every ``interval`` seconds at a phase of its own. One task
per bot sleeping between inputs costs a timer and a task switch for every input:
with 500 bots sending 30 a second, their load generator took 77 % of a core paced
that way and 66 % paced by one task (the median of three turns each). A :class:`Pacer` keeps every
bot's next time in one heap and one task wakes for all the steps due within
:data:`WINDOW_S`, runs them in time order, and sleeps until the next. A step may
run up to that window early, never late for the pacer's sake.

:meth:`Pacer.due` is the pacing itself, with the clock passed in;
:meth:`Pacer.run` is the task that calls it.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
from collections.abc import AsyncIterator, Callable
from itertools import count

# Steps due within this much of the earliest one run in the same wake-up. At 30 inputs
# a second from hundreds of bots, their phases fall tens of microseconds apart.
WINDOW_S = 0.0005

Step = Callable[[], bool]  # one input; False when the bot is done (it is then dropped)


class Pacer:
    def __init__(self, clock: Callable[[], float], window_s: float = WINDOW_S) -> None:
        self.clock = clock
        self.window_s = window_s
        self._heap: list[tuple[float, int, float, Step]] = []  # (when, order added, interval, step)
        self._order = count()
        self._sooner = asyncio.Event()  # a step was added before the runner's next wake-up
        self._wake_at: float | None = None  # when the runner means to wake (None: not sleeping on a time)
        self.wakeups = 0  # how often the runner woke with steps to run (steps due together share one)

    def add(self, step: Step, first: float, interval: float) -> None:
        """Run ``step`` at ``first``, then every ``interval`` after the time it last ran
        (or was due, when it ran early), until it returns False."""
        heapq.heappush(self._heap, (first, next(self._order), interval, step))
        if self._wake_at is None or first < self._wake_at:
            self._sooner.set()

    def __len__(self) -> int:
        return len(self._heap)

    def due(self, now: float) -> float | None:
        """Run every step due by ``now`` plus the window, earliest first; when the next is due
        (None: no steps left). A step that ran late is next due an interval after ``now``,
        as a bot that fell behind sends at once and does not try to catch up."""
        heap, until = self._heap, now + self.window_s
        ran = False
        while heap and heap[0][0] <= until:
            when, order, interval, step = heapq.heappop(heap)
            ran = True
            if step():
                heapq.heappush(heap, (max(when, now) + interval, order, interval, step))
        if ran:
            self.wakeups += 1
        return heap[0][0] if heap else None

    async def run(self) -> None:
        """Call :meth:`due` whenever steps are due, until cancelled."""
        while True:
            nxt = self.due(self.clock())
            self._sooner.clear()
            self._wake_at = nxt
            try:
                if nxt is None:
                    await self._sooner.wait()
                else:
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(max(0.0, nxt - self.window_s - self.clock())):
                            await self._sooner.wait()
            finally:
                self._wake_at = None


@contextlib.asynccontextmanager
async def running(pacer: Pacer) -> AsyncIterator[Pacer]:
    """``pacer`` with its task running, for as long as the block lasts."""
    async with asyncio.TaskGroup() as tg:
        task = tg.create_task(pacer.run(), name="bots-pacer")
        try:
            yield pacer
        finally:
            task.cancel()
