"""The tick schedule: absolute deadlines on a grid, lateness told as it was, stalls that restart
it, and the slots that let a few matches tick at one instant; in the Ticker and TickSlots alone
(a clock passed in) and in a serving server (its matches, their stats and /metrics)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time

import pytest

from tests.support import until
from tickline.bots.client import GameClient
from tickline.bots.metrics import histogram_buckets, sample_sum, scrape
from tickline.server.ticker import MAX_BEHIND_S, Ticker, TickSlots


def test_deadlines_are_absolute_so_a_slow_tick_does_not_drift_the_schedule() -> None:
    ticker = Ticker(50, now=10.0)
    assert ticker.deadline == 10.0
    assert ticker.begin(10.0) == 0.0
    assert ticker.deadline == pytest.approx(10.02)
    assert ticker.begin(10.035) == pytest.approx(0.015)  # 15 ms late ...
    assert ticker.deadline == pytest.approx(10.04)  # ... and the next tick is still due on the grid
    assert ticker.catch_ups == 0


def test_a_stall_is_reported_whole_and_restarts_the_schedule_from_then() -> None:
    ticker = Ticker(60, now=0.0)
    ticker.begin(0.0)
    late = ticker.begin(0.5)  # the loop froze for half a second
    assert late == pytest.approx(0.5 - 1 / 60)  # the whole lateness, not zero
    assert ticker.catch_ups == 1
    assert ticker.deadline == pytest.approx(0.5 + 1 / 60)  # no burst of catch-up ticks
    assert ticker.begin(ticker.deadline) == 0.0


def test_a_restart_after_a_pause_skips_the_ticks_it_spanned() -> None:
    ticker = Ticker(60, now=0.0)
    ticker.begin(0.0)
    ticker.restart(3.0)
    assert ticker.deadline == 3.0 and ticker.begin(3.0) == 0.0 and ticker.catch_ups == 0


async def test_a_ticker_that_is_behind_still_lets_other_tasks_run_before_each_tick() -> None:
    ticker = Ticker(60, now=0.0)
    ran: list[int] = []

    async def other(i: int) -> None:
        ran.append(i)

    for i in range(3):  # every tick is due already: 0.1 s behind, within max_behind_s
        task = asyncio.create_task(other(i))  # (scheduled: it runs at the loop's next turn)
        assert await ticker.wait(lambda: 0.1) > 0
        assert ran == list(range(i + 1))
        await task
    assert ticker.catch_ups == 0


def test_a_rate_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        Ticker(0, now=0.0)


def test_a_phase_lies_within_one_tick_interval() -> None:
    with pytest.raises(ValueError, match="within one tick interval"):
        Ticker(50, now=0.0, phase=0.02)
    with pytest.raises(ValueError, match="within one tick interval"):
        Ticker(50, now=0.0, phase=-0.001)


def test_deadlines_lie_on_the_phase_grid_so_tickers_made_apart_fall_due_together() -> None:
    early = Ticker(50, now=10.005, phase=0.004)
    assert early.deadline == pytest.approx(10.024)  # the first grid instant after it was made
    late = Ticker(50, now=10.3311, phase=0.004)
    assert late.deadline == pytest.approx(10.344)
    while early.deadline < late.deadline - 1e-9:
        early.begin(early.deadline)
    for _ in range(100):  # and they stay together, tick after tick
        assert early.deadline == pytest.approx(late.deadline, abs=1e-9)
        early.begin(early.deadline + 0.003)
        late.begin(late.deadline)
    other = Ticker(50, now=10.3311, phase=0.0)
    assert other.deadline == pytest.approx(10.34)  # another phase: its own instants


def test_a_stall_and_a_restart_keep_the_schedule_on_its_grid() -> None:
    ticker = Ticker(60, now=0.0, phase=0.005)
    assert ticker.deadline == pytest.approx(0.005)
    ticker.begin(0.005)
    late = ticker.begin(0.7)  # the loop froze
    assert late == pytest.approx(0.7 - (0.005 + 1 / 60))
    assert ticker.catch_ups == 1
    assert ticker.deadline == pytest.approx(0.005 + 42 / 60)  # the grid's next instant after 0.7
    ticker.restart(2.0)
    assert ticker.deadline == pytest.approx(0.005 + 120 / 60)  # on the grid again, at or after 2.0
    ticker.restart(0.005 + 150 / 60)
    assert ticker.deadline == pytest.approx(0.005 + 150 / 60)  # an instant of the grid itself


def test_tick_slots_fill_one_phase_then_open_the_next_in_the_widest_gap() -> None:
    slots = TickSlots(per_slot=2)
    taken = [slots.take(60) for _ in range(7)]
    assert [index for index, _ in taken] == [0, 0, 1, 1, 2, 2, 3]
    assert [phase * 60 for _, phase in taken] == pytest.approx([0, 0, 1 / 2, 1 / 2, 1 / 4, 1 / 4, 3 / 4])
    assert slots.sharing(60) == [2, 2, 2, 1]
    assert slots.take(20) == (0, 0.0)  # another rate: slots of its own
    slots.release(60, 0)
    assert slots.take(60) == (0, 0.0)  # a match that ended leaves room in its slot
    slots.release(60, 3)
    assert slots.sharing(60) == [2, 2, 2]  # an empty last slot closes
    index, phase = slots.take(60)
    assert index == 3 and phase == pytest.approx(3 / 4 / 60)


def test_one_match_per_slot_spreads_every_match_apart() -> None:
    slots = TickSlots(per_slot=1)
    phases = [slots.take(30)[1] * 30 for _ in range(4)]
    assert phases == pytest.approx([0, 1 / 2, 1 / 4, 3 / 4])
    with pytest.raises(ValueError, match="at least one match"):
        TickSlots(per_slot=0)


async def test_a_servers_matches_tick_together_up_to_matches_per_tick(start_server) -> None:
    srv = await start_server(matches=3, matches_per_tick=2, placement="spread", max_matches=3, metrics_port=0)
    async with contextlib.AsyncExitStack() as stack:
        for i in range(3):  # one player in each match (the emptiest takes each): all three tick
            client = await stack.enter_async_context(
                GameClient.connect("127.0.0.1", srv.port, f"p{i}", cafile=srv.cert)
            )
            assert await client.wait_update(timeout=5)
        matches = srv.server.matches
        assert all(m.ticker is not None and m.tick > 0 for m in matches)
        phases = sorted(m.figures()["tick_phase_ms"] for m in matches)
        assert phases == pytest.approx([0.0, 0.0, 1000 / 60 / 2], abs=1e-3)
        assert srv.server.tick_slots.sharing(60) == [2, 1]
        first, second = (m for m in matches if m.figures()["tick_phase_ms"] == 0.0)
        assert first.ticker is not None and second.ticker is not None
        apart = (first.ticker.deadline - second.ticker.deadline) * 60
        assert apart == pytest.approx(round(apart), abs=1e-6)  # due at the same instants
        # The ticks read the socket; its timer, there for when no tick comes, is counted apart.
        samples = await scrape(f"http://127.0.0.1:{srv.server.metrics_port}/metrics")
        names = {name for name, _labels in samples}
        assert {"tickline_udp_reads_total", "tickline_udp_overdue_reads_total"} <= names
        assert sample_sum(samples, "tickline_udp_reads_total") > 0
    # Every player gone: the three matches end (and the server with them), giving their slots back.
    await asyncio.wait_for(srv.task, 10)
    assert srv.server.matches_ended >= 3 and srv.server.tick_slots.sharing(60) == []


async def test_each_match_of_a_slot_sends_its_deltas_as_its_tick_ends(start_server) -> None:
    srv = await start_server(matches=2, placement="spread", send_rate=60)  # (one slot: both at once)
    fastpath = srv.server.fastpath
    assert fastpath is not None
    async with contextlib.AsyncExitStack() as stack:
        clients = [
            await stack.enter_async_context(GameClient.connect("127.0.0.1", srv.port, f"p{i}", cafile=srv.cert))
            for i in range(2)
        ]
        await until(lambda: all(c.on_fastpath for c in clients))
        first, second = srv.server.matches
        assert first.ticker is not None and second.ticker is not None
        assert first.ticker.phase == second.ticker.phase
        sent_by_then: list[int] = []  # the fast path's flushes when each tick's hook ran, in turn
        enough = asyncio.Event()
        for match in (first, second):
            observe = match.on_tick
            assert observe is not None

            def on_tick(late: float, work: float, observe=observe) -> None:
                observe(late, work)
                if len(sent_by_then) < 40:  # (while both players play)
                    sent_by_then.append(fastpath.batches)
                else:
                    enough.set()

            match.on_tick = on_tick
        async with asyncio.timeout(10):
            await enough.wait()
    # Every tick sends its player a delta and flushes it: had the two ticks of an instant left
    # their deltas to the end of the loop turn, the second would find no flush since the first.
    steps = [b - a for a, b in itertools.pairwise(sent_by_then)]
    assert min(steps) >= 1, str(steps)


async def test_a_frozen_loop_shows_in_the_match_stats_and_the_metrics(start_server) -> None:
    srv = await start_server(game_config={"time_limit_s": 60}, metrics_port=0)
    url = f"http://127.0.0.1:{srv.server.metrics_port}/metrics"
    async with GameClient.connect("127.0.0.1", srv.port, "p", cafile=srv.cert) as client:
        assert await client.wait_update(timeout=5)
        match = srv.server.matches[0]
        ticked = asyncio.Event()
        observe = match.on_tick
        assert observe is not None

        def on_tick(late: float, work: float) -> None:
            observe(late, work)
            if late > MAX_BEHIND_S:
                ticked.set()

        match.on_tick = on_tick
        freeze_s = MAX_BEHIND_S + 0.15
        # Block the event loop itself, as a long collection or a blocking call would.
        asyncio.get_running_loop().call_soon(time.sleep, freeze_s)
        async with asyncio.timeout(5):
            await ticked.wait()
        assert match.tick_late.max >= freeze_s - 1 / 60  # the stall, told whole
        assert match.catch_ups == 1 and match.figures()["catch_ups"] == 1
        samples = await scrape(url)
    assert sample_sum(samples, "tickline_server_tick_catch_ups_total") == 1
    assert sample_sum(samples, "tickline_tick_catch_ups_total", match=match.match_id) == 1
    buckets = histogram_buckets(samples, "tickline_server_tick_lateness_seconds")
    assert buckets[float("inf")] - buckets[MAX_BEHIND_S] >= 1  # a tick later than the catch-up limit
