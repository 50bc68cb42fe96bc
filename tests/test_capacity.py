"""`tickline capacity`: the search and its verdicts alone, then the whole machinery for real
with tiny limits (and the benchmark's ratio, which stands only on two figures)."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

from bench.capacity import figure, ratio_bounds
from tickline.bots.capacity.run import CapacityConfig, Contender
from tickline.bots.capacity.search import Search, judge, outcome, retry_reason, search, window_shares

TICKLINE = [sys.executable, "-m", "tickline"]


def test_search_doubles_until_a_failure_bisects_to_the_tolerance_then_confirms_both_ends() -> None:
    probed: list[int] = []

    def holds_up_to_137(n: int) -> bool:
        probed.append(n)
        return n <= 137

    s = search(holds_up_to_137, start=16, cap=400, tolerance=0.10)
    assert probed[:5] == [16, 32, 64, 128, 256]
    assert probed[5:9] == [192, 160, 144, 136]  # bisection between the last pass and the first failure
    assert probed[9:] == [144, 136]  # each end of the bracket probed once more
    assert s.lo == 136 and s.hi == 144 and s.hi - s.lo <= 0.10 * s.lo
    assert not s.capped and s.summary()["bracket"] == [136, 144]


def test_a_verdict_that_flips_on_confirmation_is_decided_by_a_third_and_moves_the_bracket() -> None:
    verdicts = {136: [True, False, False]}  # 136 passed once, then failed twice: it fails

    def noisy(n: int) -> bool:
        if verdicts.get(n):
            return verdicts[n].pop(0)
        return n <= 137

    s = search(noisy, start=16, cap=400, tolerance=0.10)
    probed = [n for n, _ in s.history]
    assert probed.count(136) == 3 and probed[-1] == 128  # the new lower end is confirmed in turn
    assert (s.lo, s.hi) == (128, 136) and outcome(s, [])["players"] == 128


def test_search_stops_at_the_cap_and_says_so() -> None:
    s = search(lambda n: True, start=16, cap=100, tolerance=0.10)
    assert [n for n, _ in s.history] == [16, 32, 64, 100, 100]
    assert s.lo == 100 and s.capped and s.summary()["bracket"] == [100, None]


def test_search_below_the_start_and_when_nothing_passes() -> None:
    s = search(lambda n: n <= 5, start=16, cap=400, tolerance=0.25)
    assert [n for n, _ in s.history][:5] == [16, 8, 4, 6, 5]
    assert s.lo == 5 and s.hi == 6
    none = search(lambda n: False, start=16, cap=400, tolerance=0.10)
    assert none.lo == 0 and none.hi == 1
    assert outcome(none, [])["players"] is None and "no probe passed" in outcome(none, [])["why"]


def test_a_search_that_ran_out_of_time_answers_with_a_bound_not_a_figure() -> None:
    s = Search(16, 400, 0.1)
    s.record(16, True)
    s.record(32, True)
    s.stopped = "the time budget (150 s) ran out before a probe at 64"
    assert s.next() is None
    found = outcome(s, [])
    assert found["players"] is None and found["at_least"] == 32 and found["below"] is None
    assert "did not finish" in found["why"] and "time budget" in found["why"]


def _finished(hi_probe: dict[str, Any]) -> tuple[Search, list[dict[str, Any]]]:
    s = search(lambda n: n <= 137, start=16, cap=400, tolerance=0.10)
    probes = [{"n": n, "pass": ok} | (hi_probe if n == s.hi else {}) for n, ok in s.history]
    return s, probes


def test_a_failure_the_generator_or_other_processes_may_have_caused_leaves_no_figure() -> None:
    s, probes = _finished({"generator_saturated": False, "disturbed": False})
    assert outcome(s, probes)["players"] == 136
    s, probes = _finished({"generator_saturated": True})
    found = outcome(s, probes)
    assert found["players"] is None and found["at_least"] == 136 and "load generator" in found["why"]
    s, probes = _finished({"disturbed": True})
    assert "too busy to tell" in outcome(s, probes)["why"]


def test_judge_names_every_reason_and_passes_a_clean_probe() -> None:
    ok: dict[str, Any] = {
        "connected": 10,
        "errors": 0,
        "lost": 0,
        "failures": [],
        "players_begin": 10,
        "players_end": 10,
        "late_p99_ms": 2.0,
        "ticks_per_s": 60.0,
        "recv_shares": [0.99] * 10,
        "tick_rate": 60,
        "bound_ms": 4.0,
    }
    assert judge(10, **ok) == []
    assert judge(10, **{**ok, "late_p99_ms": 4.0})[0].startswith("tick lateness p99 4.00 ms")
    assert judge(10, **{**ok, "ticks_per_s": 59.0})[0].startswith("59.0 ticks/s")
    assert "1 clients received" in judge(10, **{**ok, "recv_shares": [0.99] * 9 + [0.9]})[0]
    assert judge(10, **{**ok, "connected": 9, "players_end": 9, "recv_shares": [0.99] * 9})[:3] == [
        "1 of 10 never connected",
        "players in the window 10..9 < 10",
        "receive rates known for 9 of 10 clients",
    ]


def test_a_failure_is_run_again_only_when_disturbed_or_a_lateness_tail_far_from_saturation() -> None:
    late = judge(
        16,
        connected=16,
        errors=0,
        lost=0,
        failures=[],
        players_begin=16,
        players_end=16,
        late_p99_ms=6.4,
        ticks_per_s=60.0,
        recv_shares=[1.0] * 16,
        tick_rate=60,
        bound_ms=4.0,
    )
    probe = {"pass": False, "why": late, "server_cpu_percent": 19.9, "disturbed": False}
    assert retry_reason(probe) == "lateness alone at 20% server CPU"
    assert retry_reason({**probe, "server_cpu_percent": 95.0}) is None  # saturated: the failure stands
    assert retry_reason({**probe, "why": [*late, "3 of 16 never connected"]}) is None
    assert retry_reason({**probe, "server_cpu_percent": 95.0, "disturbed": True}) == "disturbed by other processes"
    assert retry_reason({**probe, "pass": True, "why": []}) is None


def test_each_client_share_comes_from_its_own_counts_over_the_window() -> None:
    snaps: dict[int, list[tuple[float, list[int | None]]]] = {
        0: [(2.1, [60, 50]), (3.1, [90, 80]), (5.1, [150, 140]), (6.5, [None, 180])],
        1: [(2.9, [0]), (5.0, [57])],
    }
    shares, span = window_shares(snaps, begin=3.0, end=5.0, earliest=2.0, latest=6.0, send_rate=30)
    assert shares == pytest.approx([1.0, 1.0, 57 / 2.1 / 30]) and span == 2.0


def _contender(name: str, verdicts: dict[int, bool]) -> Contender:
    async def never(n: int, index: int) -> dict[str, Any]:
        raise AssertionError("not probed")

    c = Contender(name, never)
    c.search = search(
        lambda n: verdicts.get(n, n <= max(k for k, v in verdicts.items() if v)), start=16, cap=400, tolerance=0.10
    )
    c.probes = [
        {"n": n, "pass": ok, "server_cpu_percent": 90.0, "delta_bytes": 250.0, "input_bytes": 60.0}
        for n, ok in c.search.history
    ]
    return c


def test_the_benchmark_gives_a_ratio_only_when_both_searches_answered() -> None:
    cfg = CapacityConfig()
    tickline, ceiling = _contender("tickline", {128: True}), _contender("ceiling", {160: True})
    assert tickline.search is not None and ceiling.search is not None
    line = figure(cfg, tickline, ceiling, "no pinning", 1.0)
    assert line["value"] == tickline.search.lo and line["baseline"] == ceiling.search.lo
    assert line["ratio"] == pytest.approx(line["value"] / line["baseline"], abs=0.001) and line["why"] is None
    assert line["tickline_bracket"] == [tickline.search.lo, tickline.search.hi]
    low, high = line["ratio_bounds"]
    assert low <= line["ratio"] <= high
    ceiling.search.stopped = "out of time"
    cut = figure(cfg, tickline, ceiling, "no pinning", 1.0)
    assert cut["ratio"] is None and cut["holds"] is None and cut["why"].startswith("ceiling: the search did not")


def test_ratio_bounds_follow_the_brackets_and_stay_open_where_a_bracket_is() -> None:
    assert ratio_bounds({"at_least": 100, "below": 110}, {"at_least": 150, "below": 160}) == [
        round(100 / 159, 3),
        round(109 / 150, 3),
    ]
    assert ratio_bounds({"at_least": 100, "below": None}, {"at_least": 150, "below": None}) == [None, None]


@pytest.mark.slow
async def test_tickline_capacity_runs_real_probes_and_prints_one_json_line(tmp_path: Path) -> None:
    out_file = tmp_path / "capacity.jsonl"
    proc = await asyncio.create_subprocess_exec(
        *TICKLINE,
        "capacity",
        "--start",
        "4",
        "--max-players",
        "4",
        "--steady-s",
        "2",
        "--settle-s",
        "0.5",
        "--quiet-wait-s",
        "1",
        "--json-out",
        str(out_file),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 110)
    lines = out.decode().strip().splitlines()
    assert len(lines) == 1, err.decode()  # stdout carries the JSON line and nothing else
    result = orjson.loads(lines[0])
    assert orjson.loads(out_file.read_text().strip()) == result
    # Whether 4 players pass on this machine is the machine's business; the answer's shape is ours.
    assert proc.returncode == (0 if result["players"] is not None else 1), err.decode()
    assert (result["players"] is None) == (result["why"] is not None)
    probes = result["search"]["probes"]
    # The search starts at 4 and never goes past --max-players; below 4 only when 4 failed here.
    assert probes and probes[0]["n"] == 4 and all(1 <= p["n"] <= 4 for p in probes)
    assert all(p["n"] == 4 for p in probes) or not all(p["pass"] for p in probes if p["n"] == 4)
    assert {"n", "pass", "why", "tick_late_ms_p99", "ticks_per_s", "server_cpu_percent", "seconds"} <= set(probes[0])
    for p in probes:
        if p["pass"]:
            assert p["server_cpu_percent"] > 0 and p["ticks_per_s"] > 0 and p["recv_share_min"] > 0
            assert p["connected"] == 4 and p["server_exit"] == 0
    assert "tickline  n=4" in err.decode()  # progress went to stderr


def test_capacity_vs_colyseus_is_settled_by_a_low_bound_only_when_the_peer_answered() -> None:
    # (bench.vs_colyseus's verdict on its two searches: tickline's load generator gave out
    # first, so tickline's side is only "at least"; the peer's search answered 450.)
    from bench.vs_colyseus import capacity_verdict

    generator_bound = {"players": None, "at_least": 600, "below": 650, "why": "the load generator's CPUs ..."}
    peer = {"players": 450, "at_least": 450, "below": 500, "why": None}
    ratio, bounds, holds, why = capacity_verdict(generator_bound, peer)
    assert ratio is None and bounds == [round(600 / 499, 3), None] and holds is True
    assert why is not None and why.startswith(f"held by the low bound {bounds[0]}") and "load generator" in why
    # A low bound under the target settles nothing.
    short = {"players": None, "at_least": 400, "below": 450, "why": "saturated"}
    assert capacity_verdict(short, peer)[2] is None
    # Without the peer's figure its "below" is no ceiling: no low bound.
    peer_cut = {**peer, "players": None, "why": "the search did not finish"}
    assert capacity_verdict(generator_bound, peer_cut)[1:3] == ([None, None], None)
    # Both answered: the ratio decides, and both bounds hold it.
    answered = {"players": 600, "at_least": 600, "below": 650, "why": None}
    ratio, (low, high), holds, why = capacity_verdict(answered, peer)
    assert ratio == round(600 / 450, 3) and holds is True and why is None
    assert low is not None and high is not None and low <= ratio <= high
