"""The tick schedule: absolute deadlines, lateness told as it was, and stalls that restart it,
in the Ticker alone (a clock passed in) and in a serving match (its stats and /metrics)."""

from __future__ import annotations

import asyncio
import time

import pytest

from tickline.bots.client import GameClient
from tickline.bots.metrics import histogram_buckets, sample_sum, scrape
from tickline.server.ticker import MAX_BEHIND_S, Ticker


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
