"""Garbage collection on the server's schedule: short young collections every few
milliseconds, between the event loop's callbacks, instead of CPython's own.

Why: CPython starts a young (generation 0) collection once container allocations
outnumber frees by 700, but dicts, lists and tuples that come from its free lists
are not counted. A server builds views every tick, and each client's recent views
live about two seconds as delta baselines, so between two automatic collections
generation 0 grows to tens of thousands of objects, and collecting them takes
milliseconds in the middle of some match's tick (bench/README.md has the runs
that showed it). Collected every 20 ms, a young collection stays well under one.

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
        was_enabled = gc.isenabled()
        gc.disable()
        try:
            n = 0
            next_full = time.monotonic() + self.full_every_s
            while True:
                await asyncio.sleep(self.young_every_s)
                n += 1
                if time.monotonic() >= next_full:
                    self.collect(2)
                    next_full = time.monotonic() + self.full_every_s
                else:
                    self.collect(1 if n % self.middle_every == 0 else 0)
        finally:
            if was_enabled:
                gc.enable()
