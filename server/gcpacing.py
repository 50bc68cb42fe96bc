"""Garbage collection on the server's schedule: short young collections every few
milliseconds, between the event loop's callbacks, instead of CPython's own.

Why: CPython starts a young (generation 0) collection once container allocations
outnumber frees by 700, but dicts, lists and tuples that come from its free lists
are not counted. A server builds views every tick, and each client's recent views
live about two seconds as delta baselines, so between two automatic collections
generation 0 grew to 10-40 thousand objects, and the collection then took 3-25 ms,
in the middle of some match's tick: that was the tick lateness tail of
``bench/eventlog.py`` (156 ticks over 6 ms in 13 000, against 3 when paced).
Collected every 20 ms, generation 0 takes about 0.2 ms (0.8 at most) and the
generation-1 collection of every tenth time about 1.3 ms (3.3 at most).

The whole heap (generation 2: cycles that lived long) is collected once a minute,
a pause of tens of milliseconds; ``gc.freeze()`` after start-up keeps what never
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

    def __init__(self, young_every_s: float = YOUNG_EVERY_S, middle_every: int = MIDDLE_EVERY,
                 full_every_s: float = FULL_EVERY_S,
                 on_collect: Callable[[int, float], None] | None = None) -> None:
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
