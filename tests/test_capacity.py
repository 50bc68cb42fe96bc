"""`tickline bench capacity`: the search logic alone, then the whole machinery for real with tiny limits."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import orjson
import pytest

from shared.protocol import MAX_DATAGRAM
from tickline.capacity import Search, choose_window, judge, retry_reason, search, window_shares

TICKLINE = [sys.executable, "-m", "tickline"]


def test_search_doubles_until_a_failure_then_bisects_to_the_tolerance() -> None:
    probed: list[int] = []

    def holds_up_to_137(n: int) -> bool:
        probed.append(n)
        return n <= 137

    s = search(holds_up_to_137, start=16, cap=400, tolerance=0.10)
    assert probed[:5] == [16, 32, 64, 128, 256]
    assert probed[5:] == [192, 160, 144, 136]  # bisection between the last pass and the first failure
    assert s.lo == 136 and s.hi == 144 and s.hi - s.lo <= 0.10 * s.lo
    assert not s.capped and s.summary()["bracket"] == [136, 144]


def test_search_stops_at_the_cap_and_says_so() -> None:
    s = search(lambda n: True, start=16, cap=100, tolerance=0.10)
    assert [n for n, _ in s.history] == [16, 32, 64, 100]
    assert s.lo == 100 and s.capped and s.summary()["bracket"] == [100, None]


def test_search_below_the_start_and_when_nothing_passes() -> None:
    s = search(lambda n: n <= 5, start=16, cap=400, tolerance=0.25)
    assert [n for n, _ in s.history] == [16, 8, 4, 6, 5]
    assert s.lo == 5 and s.hi == 6
    none = search(lambda n: False, start=16, cap=400, tolerance=0.10)
    assert none.lo == 0 and none.hi == 1 and len(none.history) == 5  # 16, 8, 4, 2, 1


def test_search_with_a_coarser_tolerance_probes_less_and_a_stopped_search_ends() -> None:
    fine = search(lambda n: n <= 137, tolerance=0.10)
    coarse = search(lambda n: n <= 137, tolerance=0.25)
    assert len(coarse.history) < len(fine.history)
    assert coarse.hi - coarse.lo <= 0.25 * coarse.lo
    s = Search(16, 400, 0.1)
    s.record(16, True)
    s.stopped = "out of time"
    assert s.next() is None and s.summary()["stopped_early"] == "out of time"


def test_judge_names_every_reason_and_passes_a_clean_probe() -> None:
    ok = dict(connected=10, errors=0, lost=0, failures=[], players_begin=10, players_end=10, late_p99_ms=2.0,
              ticks_per_s=60.0, recv_shares=[0.99] * 10, tick_rate=60, bound_ms=4.0)
    assert judge(10, **ok) == []
    assert judge(10, **{**ok, "late_p99_ms": 4.0})[0].startswith("tick lateness p99 4.00 ms")
    assert judge(10, **{**ok, "ticks_per_s": 59.0})[0].startswith("59.0 ticks/s")
    assert "1 clients received" in judge(10, **{**ok, "recv_shares": [0.99] * 9 + [0.9]})[0]
    assert judge(10, **{**ok, "connected": 9, "players_end": 9, "recv_shares": [0.99] * 9})[:3] == [
        "1 of 10 never connected", "players in the window 10..9 < 10", "receive rates known for 9 of 10 clients"]


def test_a_failure_is_run_again_only_when_disturbed_or_a_lateness_tail_far_from_saturation() -> None:
    late = judge(16, connected=16, errors=0, lost=0, failures=[], players_begin=16, players_end=16, late_p99_ms=6.4,
                 ticks_per_s=60.0, recv_shares=[1.0] * 16, tick_rate=60, bound_ms=4.0)
    probe = {"pass": False, "why": late, "server_cpu_percent": 19.9, "disturbed": False}
    assert retry_reason(probe) == "lateness alone at 20% server CPU"
    assert retry_reason({**probe, "server_cpu_percent": 95.0}) is None  # saturated: the failure stands
    assert retry_reason({**probe, "why": late + ["3 of 16 never connected"]}) is None
    assert retry_reason({**probe, "server_cpu_percent": 95.0, "disturbed": True}) == "disturbed by other processes"
    assert retry_reason({**probe, "pass": True, "why": []}) is None


def test_window_and_per_client_shares() -> None:
    points = [(0.0, 3), (1.0, 8), (2.0, 10), (3.0, 10), (4.0, 10), (5.0, 10), (6.0, 10)]
    assert choose_window(points, 10, settle_s=1.0, steady_s=3.0) == (3, 6)
    assert choose_window(points, 11, settle_s=1.0, steady_s=3.0) is None
    snaps = {0: [(2.1, [60, 50]), (3.1, [90, 80]), (5.1, [150, 140]), (6.5, [None, 180])],
             1: [(2.9, [0]), (5.0, [57])]}
    shares, span = window_shares(snaps, begin=3.0, end=5.0, earliest=2.0, latest=6.0, send_rate=30)
    assert shares == pytest.approx([1.0, 1.0, 57 / 2.1 / 30]) and span == 2.0


async def test_bench_capacity_runs_both_searches_for_real(tmp_path: Path) -> None:
    out_file = tmp_path / "capacity.jsonl"
    proc = await asyncio.create_subprocess_exec(
        *TICKLINE, "bench", "capacity", "--start", "4", "--max-players", "8", "--steady-s", "2",
        "--settle-s", "0.5", "--quiet-wait-s", "2", "--json-out", str(out_file),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 110)
    assert proc.returncode == 0, err.decode()
    lines = out.decode().strip().splitlines()
    assert len(lines) == 1  # stdout carries the JSON line and nothing else
    figure = orjson.loads(lines[0])
    assert orjson.loads(out_file.read_text().strip()) == figure
    for key in ("figure", "value", "unit", "baseline", "baseline_of", "ratio", "target", "holds", "runs",
                "spread", "cores", "python", "tick_rate", "send_rate", "bound_ms", "delta_bytes", "input_bytes",
                "server_cpu_percent_at_capacity", "tickline", "transport", "pinning"):
        assert key in figure, key
    assert figure["figure"] == "capacity_players" and figure["unit"] == "players" and figure["target"] == ">= 0.7"
    assert figure["value"] > 0 and figure["baseline"] > 0
    assert figure["ratio"] == pytest.approx(figure["value"] / figure["baseline"], abs=0.001)
    assert figure["holds"] == (figure["ratio"] >= 0.7) and figure["spread"] == [figure["ratio"], figure["ratio"]]
    assert 0 < figure["delta_bytes"] < MAX_DATAGRAM and 0 < figure["input_bytes"] < MAX_DATAGRAM
    for kind in ("tickline", "transport"):
        probes = figure[kind]["probes"]
        assert probes and all(p["n"] <= 8 for p in probes)
        assert {"n", "pass", "why", "tick_late_ms_p99", "ticks_per_s", "server_cpu_percent"} <= set(probes[0])
        passed = [p for p in probes if p["pass"]]
        assert passed and max(p["n"] for p in passed) == figure[kind]["capacity"]
        assert all(p["server_cpu_percent"] > 0 and p["ticks_per_s"] > 50 for p in passed)
    assert figure["server_cpu_percent_at_capacity"] > 0
    text = err.decode()
    assert "tickline  n=4" in text and "transport n=4" in text  # progress went to stderr
