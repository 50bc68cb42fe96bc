"""Garbage collection on the server's schedule: short young collections every few
milliseconds, between the event loop's callbacks, instead of CPython's own.

Why: CPython starts a young (generation 0) collection once container allocations
outnumber frees by 700, but dicts, lists and tuples that come from its free lists
are not counted. A server builds views every tick, and each client's recent views
live about two seconds as delta baselines, so between two automatic collections
generation 0 grows to tens of thousands of objects, and collecting them takes
milliseconds in the middle of some match's tick (bench/README.md has the runs
that showed it). Collected every 20 ms, a young collection stays well under one.

A serving server's ticks wake the loop every few milliseconds anyway; ``GcPacer.nudge``
after a tick makes a collection that is nearly due at once, so that the collector rides on
the tick's wake-up instead of waking the loop on its own; its timer still collects when no
tick comes.

This module owns when the collector runs; it knows nothing of matches. The whole
heap (generation 2: cycles that lived long) is collected once a minute, a pause of
tens of milliseconds; ``gc.freeze()`` after start-up keeps what never
dies out of it. ``GcPacer.run`` turns automatic collection off while it runs and
back on when it ends, so code outside a serving server is unaffected.
"""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import Callable

YOUNG_EVERY_S = 0.02
MIDDLE_EVERY = 10  # every tenth collection takes generation 1 too, as CPython's threshold1 does
FULL_EVERY_S = 60.0


class GcPacer:
    """Runs the process's garbage collections; ``on_collect(generation, seconds)`` hears each."""

    def __init__(
        self,
        young_every_s: float = YOUNG_EVERY_S,
        middle_every: int = MIDDLE_EVERY,
        full_every_s: float = FULL_EVERY_S,
        on_collect: Callable[[int, float], None] | None = None,
    ) -> None:
        self.young_every_s = young_every_s
        self.middle_every = middle_every
        self.full_every_s = full_every_s
        self.on_collect = on_collect
        self.collections = [0, 0, 0]  # by generation
        self.longest_s = [0.0, 0.0, 0.0]
        self.nudged = 0  # scheduled collections a nudge made early (the rest, the timer)
        self._loop: asyncio.AbstractEventLoop | None = None  # while run() runs
        self._timer: asyncio.TimerHandle | None = None
        self._due = 0.0  # when the timer collects, unless a nudge does first
        self._count = 0  # scheduled collections so far (every middle_every-th takes generation 1)
        self._next_full = 0.0
        self._failed: asyncio.Future[None] | None = None

    def collect(self, generation: int) -> float:
        """One collection of ``generation`` (and the younger ones); its duration in seconds."""
        started = time.perf_counter()
        gc.collect(generation)
        took = time.perf_counter() - started
        self.collections[generation] += 1
        self.longest_s[generation] = max(self.longest_s[generation], took)
        if self.on_collect is not None:
            self.on_collect(generation, took)
        return took

    async def run(self) -> None:
        """Collect on schedule until cancelled; automatic collection is off meanwhile."""
        loop = asyncio.get_running_loop()
        was_enabled = gc.isenabled()
        gc.disable()
        self._loop, self._count = loop, 0
        self._failed = loop.create_future()
        self._next_full = loop.time() + self.full_every_s
        self._arm(loop.time() + self.young_every_s)
        try:
            await self._failed  # (the timer and nudge() collect; this task holds the schedule)
        finally:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            self._loop = None
            if was_enabled:
                gc.enable()

    @property
    def due(self) -> float:
        """When the timer makes the next collection (the loop's clock), unless a nudge does first."""
        return self._due

    def nudge(self, now: float) -> None:
        """The loop is awake anyway at ``now`` (its clock; a tick has just run): the next
        collection, if it is due within half an interval, is made now rather than with a
        wake-up of the loop's own."""
        if self._loop is not None and self._due - now <= self.young_every_s / 2:
            self.nudged += 1
            self._scheduled()

    def _arm(self, due: float) -> None:
        assert self._loop is not None
        if self._timer is not None:
            self._timer.cancel()
        self._due = due
        self._timer = self._loop.call_at(due, self._scheduled)

    def _scheduled(self) -> None:
        assert self._loop is not None
        if self._timer is not None:
            self._timer.cancel()  # (made by a nudge: the timer's is not needed)
            self._timer = None
        self._count += 1
        try:
            if self._loop.time() >= self._next_full:
                self.collect(2)
                self._next_full = self._loop.time() + self.full_every_s
            else:
                self.collect(1 if self._count % self.middle_every == 0 else 0)
        except Exception as exc:  # noqa: BLE001 (on_collect's: it ends run(), as in a loop of its own)
            assert self._failed is not None
            if not self._failed.done():
                self._failed.set_exception(exc)
            return
        self._arm(self._loop.time() + self.young_every_s)
