"""`tickline bots` as a load tester: worker processes, live progress, the report, the charts."""

from __future__ import annotations

import asyncio
import itertools
import sys
from pathlib import Path

import orjson
import pytest

from tickline.bots.behaviours import behaviours_for, parse_mix
from tickline.bots.loadtest import Timeline, timeline_row
from tickline.bots.metrics import histogram_quantile

TICKLINE = [sys.executable, "-m", "tickline"]


@pytest.mark.slow
async def test_load_test_over_two_workers_reports_server_figures_and_draws_charts(start_server, tmp_path: Path) -> None:
    # A server as `tickline serve --http-port` runs one: players need its lobby's tokens.
    srv = await start_server(game_config={"time_limit_s": 120}, metrics_port=0, require_tokens=None)
    report_file, plots = tmp_path / "report.json", tmp_path / "plots"
    proc = await asyncio.create_subprocess_exec(
        *TICKLINE,
        "bots",
        "--server",
        f"127.0.0.1:{srv.port}",
        "--n",
        "6",
        "--duration",
        "4",
        "--workers",
        "2",
        "--ramp",
        "20",
        "--behaviour",
        "arena=2,idle=1",
        "--cafile",
        str(srv.cert),
        "--lobby",  # each bot's connect token; and --metrics defaults to the lobby's /metrics
        f"http://127.0.0.1:{srv.server.metrics_port}",
        "--report",
        str(report_file),
        "--plots",
        str(plots),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    report = orjson.loads(out.decode().strip().splitlines()[-1])
    assert report["connected"] == 6 and report["workers"] == 2 and report["errors"] == 0
    assert report["behaviours"] == {"arena": 4, "idle": 2}
    assert 0 < report["deltas_per_s_per_bot"] <= 31  # at the 30 Hz send rate (+1: the last tick goes to all)
    assert report["input_to_visible_ms"]["p50"] > 0 and report["input_to_visible_ms"]["samples"] > 0
    named = report["named_input_to_visible_ms"]
    assert (
        0 < named["p50"] <= report["input_to_visible_ms"]["p50"]
        and 0 < named["samples"] < report["input_to_visible_ms"]["samples"]
    )
    server = report["server"]
    assert 0 < server["ticks_per_s"] <= 61 and server["players_max"] == 6 and server["cpu_percent"] > 0
    assert server["tick_late_ms_p99"] is not None
    assert srv.server.kicked == 0  # every bot brought a token
    # Not a terminal: progress comes as plain lines, the table at the end.
    text = err.decode()
    assert "connected=6/6" in text and "tickline load test" in text
    full = orjson.loads(report_file.read_bytes())
    timeline = full["timeline"]
    assert len(timeline) >= 3 and max(row["connected"] for row in timeline) == 6
    assert timeline[-1]["connected"] == 0  # the bots were done by the last row...
    for before, row in itertools.pairwise(timeline):
        if before["connected"] == row["connected"] == 0:  # ... and a second with none has no per-bot figure
            assert row["down_kb_s_per_bot"] is None and row["up_kb_s_per_bot"] is None
    for name in ("tick_lateness.png", "rtt.png", "bytes_per_client.png"):
        data = (plots / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000


async def test_bad_behaviour_is_one_line_and_exit_2() -> None:
    proc = await asyncio.create_subprocess_exec(
        *TICKLINE,
        "bots",
        "--server",
        "127.0.0.1:1",
        "--behaviour",
        "arena=2,dance=1",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await proc.communicate()
    assert proc.returncode == 2
    assert err.decode().strip().splitlines() == [
        "tickline bots: error: --behaviour: unknown behaviour 'dance'; choose from default, idle, random, arena, bidder, wander "
        "(e.g. random=3,idle=1)"
    ]


async def test_a_lobby_that_is_not_a_url_is_one_line_and_exit_2() -> None:
    proc = await asyncio.create_subprocess_exec(
        *TICKLINE, "bots", "--server", "127.0.0.1:1", "--lobby", "127.0.0.1:8080", stderr=asyncio.subprocess.PIPE
    )
    _, err = await proc.communicate()
    assert proc.returncode == 2
    [line] = err.decode().strip().splitlines()
    assert "--lobby wants the server's HTTP side as a URL, such as http://127.0.0.1:8080" in line


def test_a_mix_spreads_behaviours_by_weight_the_same_way_every_time() -> None:
    mix = parse_mix("arena=3,idle=1")
    picked = behaviours_for(0, 400, mix)
    assert picked.count("arena") == 300
    assert behaviours_for(0, 4, mix).count("idle") == 1  # exact in small crowds too
    assert behaviours_for(150, 250, mix) == picked[150:]  # workers agree on the split
    with pytest.raises(ValueError, match="must be positive"):
        parse_mix("arena=0")


def test_histogram_quantile_reads_what_a_window_added() -> None:
    before: dict[float, float] = {0.001: 10, 0.002: 10, 0.004: 10, float("inf"): 10}
    after: dict[float, float] = {0.001: 60, 0.002: 100, 0.004: 109, float("inf"): 110}
    # The window added 50 under 1 ms, 40 in 1-2 ms, 9 in 2-4 ms, 1 above.
    assert histogram_quantile(0.5, before, after) == pytest.approx(0.001)
    assert histogram_quantile(0.9, before, after) == pytest.approx(0.002)
    assert histogram_quantile(0.99, before, after) == pytest.approx(0.004)
    assert histogram_quantile(0.5, after, after) is None


def _snapshot(connected: int, bytes_down: int, bytes_up: int) -> dict[str, int]:
    return {
        "connected": connected,
        "joined": 4,
        "errors": 0,
        "disconnects": 0,
        "deltas": 0,
        "bytes_down": bytes_down,
        "bytes_up": bytes_up,
    }


def test_a_timeline_second_divides_bytes_among_the_bots_that_were_there() -> None:
    timeline = Timeline()
    previous = {"t": 0.0, **_snapshot(4, 0, 0)}
    # The bots ended during this second: the bytes were the four bots', not one bot's.
    row = timeline_row({0: _snapshot(0, 8000, 4000)}, previous, timeline, [], started=0.0, now=1.0)
    assert row["connected"] == 0
    assert row["down_kb_s_per_bot"] == 2.0 and row["up_kb_s_per_bot"] == 1.0
    # A second with no bot at either end has no per-bot figure at all.
    idle = timeline_row(
        {0: _snapshot(0, 8000, 4000)}, {"t": 1.0, **_snapshot(0, 8000, 4000)}, timeline, [], started=0.0, now=2.0
    )
    assert idle["down_kb_s_per_bot"] is None and idle["up_kb_s_per_bot"] is None
