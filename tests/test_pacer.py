"""The bots' pacer: every bot's inputs at their own times, from one task (bots/pacer.py)."""

from __future__ import annotations

import asyncio
from itertools import pairwise

from tickline.bots.pacer import Pacer, running


class Recorder:
    def __init__(self, name: str, log: list[tuple[str, float]], clock: list[float], times: int = 1000) -> None:
        self.name, self.log, self.clock, self.left = name, log, clock, times

    def __call__(self) -> bool:
        self.log.append((self.name, self.clock[0]))
        self.left -= 1
        return self.left > 0


def test_due_steps_run_earliest_first_grouped_by_the_window_and_each_at_its_own_interval() -> None:
    now = [0.0]
    log: list[tuple[str, float]] = []
    pacer = Pacer(lambda: now[0], window_s=0.001)
    pacer.add(Recorder("b", log, now), first=0.0105, interval=0.02)
    pacer.add(Recorder("a", log, now), first=0.010, interval=0.03)
    pacer.add(Recorder("c", log, now), first=0.0120, interval=0.02)
    now[0] = 0.0100
    # a and b are within the window of now; c is not yet.
    assert pacer.due(now[0]) == 0.0120 and log == [("a", 0.010), ("b", 0.010)]
    now[0] = 0.0120
    assert pacer.due(now[0]) == 0.0305  # b, an interval after when it was due (it ran early)
    assert log[-1] == ("c", 0.012) and pacer.wakeups == 2
    now[0] = 0.0305
    assert pacer.due(now[0]) == 0.032 and log[-1] == ("b", 0.0305)


def test_a_late_step_is_next_due_an_interval_after_it_ran_and_a_finished_one_is_dropped() -> None:
    now = [0.0]
    log: list[tuple[str, float]] = []
    pacer = Pacer(lambda: now[0], window_s=0.0)
    pacer.add(Recorder("late", log, now), first=0.010, interval=0.010)
    pacer.add(Recorder("once", log, now, times=1), first=0.010, interval=0.010)
    now[0] = 0.045  # three and a half intervals late: no catching up
    assert pacer.due(now[0]) == 0.055
    assert log == [("late", 0.045), ("once", 0.045)] and len(pacer) == 1
    assert pacer.due(0.050) == 0.055 and len(log) == 2  # nothing was due
    assert Pacer(lambda: 0.0).due(0.0) is None  # no steps at all


async def test_the_running_pacer_runs_steps_at_their_times_and_wakes_for_one_added_sooner() -> None:
    loop = asyncio.get_running_loop()
    ran: dict[str, list[float]] = {"slow": [], "fast": []}
    done = loop.create_future()

    def step(name: str, times: int) -> bool:
        ran[name].append(loop.time())
        if name == "fast" and len(ran["fast"]) == times and not done.done():
            done.set_result(None)
        return len(ran[name]) < times

    async with running(Pacer(loop.time)) as pacer:
        pacer.add(lambda: step("slow", 1), first=loop.time() + 3600, interval=1.0)
        await asyncio.sleep(0)  # the runner now sleeps until the slow step, an hour away
        added = loop.time()
        pacer.add(lambda: step("fast", 5), first=added + 0.002, interval=0.002)
        async with asyncio.timeout(10):
            await done
    fast = ran["fast"]
    assert ran["slow"] == [] and len(fast) == 5
    assert fast[0] >= added + 0.002 - pacer.window_s
    assert all(b - a >= 0.002 - pacer.window_s for a, b in pairwise(fast))
