"""Garbage collection paced by the server: automatic collection off while it runs,
young collections on its schedule, cycles still collected, everything restored after."""

from __future__ import annotations

import asyncio
import gc
import weakref

from tests.support import until
from tickline.server.gcpacing import GcPacer


class _Node:
    def __init__(self) -> None:
        self.other: _Node | None = None


def _cycle() -> weakref.ref[_Node]:
    a, b = _Node(), _Node()
    a.other, b.other = b, a
    return weakref.ref(a)


async def test_pacer_collects_cycles_on_its_schedule_and_restores_automatic_collection() -> None:
    assert gc.isenabled()
    seen: list[int] = []
    pacer = GcPacer(
        young_every_s=0.005, middle_every=3, full_every_s=0.1, on_collect=lambda generation, _s: seen.append(generation)
    )
    task = asyncio.create_task(pacer.run())
    await asyncio.sleep(0)
    try:
        assert not gc.isenabled()  # CPython no longer picks the moment
        ref = _cycle()
        await until(lambda: ref() is None, timeout=2)
        await until(lambda: pacer.collections[2] > 0, timeout=2)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert gc.isenabled()
    assert pacer.collections[0] > pacer.collections[1] > 0
    assert seen.count(0) == pacer.collections[0] and seen.count(2) == pacer.collections[2]
    assert pacer.longest_s[0] > 0 and pacer.longest_s[2] > 0  # each collection was timed


async def test_pacer_leaves_collection_off_when_it_was_off_before() -> None:
    gc.disable()
    try:
        pacer = GcPacer(young_every_s=0.005)
        task = asyncio.create_task(pacer.run())
        await until(lambda: pacer.collections[0] >= 2, timeout=2)  # it ran, and collected on its own schedule
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        assert not gc.isenabled()
    finally:
        gc.enable()


async def test_a_nudge_makes_a_nearly_due_collection_at_once_and_pushes_the_timer_back() -> None:
    """A tick's wake-up carries the collection that was about to need a wake-up of its own."""
    pacer = GcPacer(young_every_s=10.0)  # (its timer never fires within the test)
    task = asyncio.create_task(pacer.run())
    await asyncio.sleep(0)
    try:
        due = pacer.due
        pacer.nudge(due - 6.0)  # more than half an interval early: the timer keeps it
        assert pacer.collections == [0, 0, 0] and pacer.due == due and pacer.nudged == 0
        pacer.nudge(due - 4.0)
        assert pacer.collections == [1, 0, 0] and pacer.nudged == 1
        assert pacer.due >= due  # the timer's next is an interval after this collection
        pacer.nudge(pacer.due - 6.0)
        assert pacer.collections == [1, 0, 0]
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    pacer.nudge(pacer.due)  # a pacer that is not running collects nothing
    assert pacer.collections == [1, 0, 0]
