"""``tickline capacity``: how many players one server process holds on this machine.

Runs the search (``search.Search``) with real probes (``probe.probe_tickline``):
before each probe it waits (up to ``quiet_wait_s``) for other processes to leave
the CPUs mostly idle; a probe that failed while other processes took the
server's or the generator's CPU, or on its lateness tail alone far from
saturation, runs once more at once; the search stops when the next probe would
overrun the time budget, and then answers with a bound, not a figure.

:func:`run_searches` runs several searches in turns (a probe of each, then the
next round), so that all of them see the same machine: the transport-ceiling
benchmark runs tickline's search beside one of a bare server with it.
"""

from __future__ import annotations

import argparse
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tickline.bots.capacity.probe import ProbeSettings, probe_tickline
from tickline.bots.capacity.search import CRITERIA, Search, outcome, retry_reason
from tickline.bots.procstat import CORES, cpu_plan, machine_busy_percent
from tickline.bots.profiling import print_summary, profile_process

QUIET_PERCENT = 25.0  # busy % of one core (all CPUs together) below which the machine counts as quiet

Probe = Callable[[int, int], Awaitable[dict[str, Any]]]  # (n, probe index) -> the probe's figures


def say(text: str) -> None:
    """Progress goes to stderr; stdout carries the JSON line alone."""
    print(text, file=sys.stderr, flush=True)


@dataclass(slots=True)
class CapacityConfig:
    probe: ProbeSettings = field(default_factory=ProbeSettings)
    start: int = 16
    max_players: int = 400
    tolerance: float = 0.10
    budget_s: float = 480.0
    quiet_wait_s: float = 15.0  # longest wait before a probe for other processes to quieten
    quick: bool = False
    profile_out: Path | None = None
    keep_dir: Path | None = None


@dataclass(slots=True)
class Contender:
    """One search of a run: its name, its probe, and how long a probe takes beyond its
    ramp, settling and window (learnt as the probes run)."""

    name: str
    probe: Probe
    overhead_s: float = 6.0
    search: Search | None = None
    probes: list[dict[str, Any]] = field(default_factory=list)


async def wait_for_quiet(limit_s: float) -> float | None:
    """Before a probe (when nothing of ours runs): wait, up to ``limit_s``, until other
    processes keep the machine's CPUs less than QUIET_PERCENT busy over a second. Returns
    the last second's busy %, which the probe reports."""
    began = time.monotonic()
    said = False
    while True:
        busy = await machine_busy_percent(1.0)
        if busy is None or busy < QUIET_PERCENT or time.monotonic() - began >= limit_s:
            if said:
                say(f"  (waited {time.monotonic() - began:.0f} s; the machine is {busy:.0f}% busy)")
            return busy
        if not said:
            say(f"  (other processes keep the machine {busy:.0f}% busy; waiting up to {limit_s:g} s for them)")
            said = True


def expected_s(cfg: CapacityConfig, contender: Contender, n: int) -> float:
    ps = cfg.probe
    return contender.overhead_s + n / ps.ramp + ps.settle_s + ps.steady_s


async def run_searches(cfg: CapacityConfig, contenders: list[Contender]) -> None:
    """Every contender's search, a probe of each in turn, within ``cfg.budget_s``; each
    contender's ``search`` and ``probes`` hold the results."""
    deadline = time.monotonic() + cfg.budget_s
    for c in contenders:
        c.search = Search(cfg.start, cfg.max_players, cfg.tolerance)
    index = 0
    while True:
        ran = False
        for c in contenders:
            s = c.search
            assert s is not None
            n = s.next()
            if n is None:
                continue
            if time.monotonic() + expected_s(cfg, c, n) + 1.0 > deadline:
                s.stopped = f"the time budget ({cfg.budget_s:.0f} s) ran out before a probe at {n}"
                say(f"  {c.name}: {s.stopped}")
                continue
            attempts: list[dict[str, Any]] = []
            while True:
                index += 1
                busy_before = await wait_for_quiet(cfg.quiet_wait_s)
                try:
                    p = await c.probe(n, index)
                except Exception as exc:  # noqa: BLE001 - a probe that breaks is a failed probe, said why
                    p = {
                        "n": n,
                        "pass": False,
                        "why": [f"probe error: {_said(exc)}"],
                        "tick_late_ms_p99": None,
                        "ticks_per_s": None,
                        "server_cpu_percent": None,
                        "recv_share_min": None,
                        "seconds": 0.0,
                    }
                p["machine_busy_before_percent"] = busy_before
                attempts.append(p)
                again = retry_reason(p)
                if again is None or len(attempts) > 1:
                    break
                say(brief(c.name, p) + f"  ({again}: once more)")
            if len(attempts) > 1:
                p["first_attempt"] = {
                    k: attempts[0].get(k)
                    for k in (
                        "pass",
                        "why",
                        "tick_late_ms_p99",
                        "other_on_server_cpu_percent",
                        "other_on_load_cpus_percent",
                    )
                }
            c.overhead_s = max(c.overhead_s, p["seconds"] - (expected_s(cfg, c, n) - c.overhead_s))
            s.record(n, p["pass"])
            c.probes.append(p)
            say(brief(c.name, p))
            ran = True
        if not ran:
            return


def _said(exc: BaseException) -> str:
    """An error as one line: the one error inside (nested) groups, its type, and its message."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def brief(kind: str, p: dict[str, Any]) -> str:
    """One probe, one line, for people."""

    def f(v: Any, unit: str = "") -> str:
        return "-" if v is None else (f"{v:.2f}{unit}" if isinstance(v, float) else f"{v}{unit}")

    return (
        f"  {kind:9s} n={p['n']:<4d} {'PASS' if p['pass'] else 'fail'}  late p99={f(p['tick_late_ms_p99'], 'ms')} "
        f"ticks/s={f(p['ticks_per_s'])} server cpu={f(p['server_cpu_percent'], '%')} "
        f"recv min={f(p['recv_share_min'])} gen cpu={f(p.get('generator_cpu_percent'), '%')} "
        f"others cpu={f(p.get('other_on_server_cpu_percent'), '%')}/{f(p.get('other_on_load_cpus_percent'), '%')} "
        + (f"stream deltas={p['stream_delta_share']:.0%} " if p.get("stream_delta_share") else "")
        + ("GENERATOR SATURATED " if p.get("generator_saturated") else "")
        + f"({p['seconds']:.0f} s)"
        + ("" if p["pass"] else f"  [{'; '.join(p['why'])}]")
    )


def at_capacity(c: Contender) -> dict[str, Any] | None:
    """The newest passing probe at the search's answer."""
    s = c.search
    if s is None:
        return None
    return next((p for p in reversed(c.probes) if p["n"] == s.lo and p["pass"]), None)


def search_json(c: Contender) -> dict[str, Any]:
    assert c.search is not None
    return {
        **c.search.summary(),
        **outcome(c.search, c.probes),
        # Probes whose verdict other processes may have swayed (after any rerun), and probes
        # where the clients' CPUs were the busier side.
        "disturbed_probes": [p["n"] for p in c.probes if p.get("disturbed")],
        "generator_saturated_probes": [p["n"] for p in c.probes if p.get("generator_saturated")],
        "probes": c.probes,
    }


def common_json(cfg: CapacityConfig, pinning: str) -> dict[str, Any]:
    """What every capacity result says about how it was measured."""
    ps = cfg.probe
    return {
        "cores": CORES,
        "python": platform.python_version(),
        "quick": cfg.quick,
        "tick_rate": ps.tick_rate,
        "send_rate": ps.send_rate,
        "bound_ms": ps.bound_ms,
        "criteria": CRITERIA,
        "pinning": pinning,
        "settings": {
            "start": cfg.start,
            "max_players": cfg.max_players,
            "tolerance": cfg.tolerance,
            "ramp_per_s": ps.ramp,
            "steady_s": ps.steady_s,
            "settle_s": ps.settle_s,
            "behaviour": "wander",
            "budget_s": cfg.budget_s,
        },
    }


def workdir_for(cfg: CapacityConfig) -> Path:
    workdir = Path(tempfile.mkdtemp(prefix="tickline-capacity-")) if cfg.keep_dir is None else cfg.keep_dir
    workdir.mkdir(parents=True, exist_ok=True)
    return workdir


def announce(cfg: CapacityConfig, what: str, pinning: str) -> None:
    ps = cfg.probe
    say(
        f"{what}: {ps.tick_rate} Hz ticks, {ps.send_rate} Hz sends, lateness p99 bound {ps.bound_ms:g} ms, "
        f"start {cfg.start}, cap {cfg.max_players}, tolerance {cfg.tolerance:.0%}, window {ps.steady_s:g} s, "
        f"budget {cfg.budget_s:.0f} s; {pinning}"
    )


async def run_capacity(cfg: CapacityConfig) -> dict[str, Any]:
    """The whole command: the search, then (with ``profile_out``) one more probe at the
    capacity with py-spy recording the server. The result's JSON object."""
    began = time.monotonic()
    _, _, pinning = cpu_plan()
    announce(cfg, "tickline capacity", pinning)
    workdir = workdir_for(cfg)
    try:
        tickline = Contender("tickline", lambda n, i: probe_tickline(n, cfg.probe, workdir, i))
        await run_searches(cfg, [tickline])
        found = search_json(tickline)
        cap = at_capacity(tickline)
        result: dict[str, Any] = {
            "players": found["players"],
            "at_least": found["at_least"],
            "below": found["below"],
            "why": found["why"],
            **common_json(cfg, pinning),
            "server_cpu_percent_at_capacity": cap and cap["server_cpu_percent"],
            "delta_bytes": cap and cap["delta_bytes"],
            "input_bytes": cap and cap["input_bytes"],
            "search": found,
        }
        if cfg.profile_out is not None:
            result["profile"] = await _profile(cfg, tickline, workdir, len(tickline.probes) + 1)
        result["elapsed_s"] = round(time.monotonic() - began, 1)
        return result
    finally:
        if cfg.keep_dir is None:
            shutil.rmtree(workdir, ignore_errors=True)


async def _profile(cfg: CapacityConfig, c: Contender, workdir: Path, index: int) -> dict[str, Any]:
    assert c.search is not None and cfg.profile_out is not None
    out = cfg.profile_out
    n = max(1, c.search.lo)
    say(f"profiling the tickline server at n={n} with py-spy for {cfg.probe.steady_s:g} s -> {out}")
    holder: dict[str, Any] = {}

    async def spy(pid: int, seconds: float) -> None:
        holder.update(await profile_process(pid, seconds, out))

    p = await probe_tickline(n, cfg.probe, workdir, index, on_window=spy)
    say(brief("profiled", p))
    print_summary(holder, say)
    return {"n": n, "file": str(out), "probe": p, **holder}


# ---------------------------------------------------------------------- command line


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quick", action="store_true", help="a shorter run (about 4 min): 4 s windows, a 240 s budget")
    p.add_argument("--tick-rate", type=int, default=60, help="simulation ticks per second (default: 60)")
    p.add_argument("--send-rate", type=int, default=30, help="deltas per second to each player (default: 30)")
    p.add_argument("--bound-ms", type=float, default=4.0, help="tick lateness p99 must stay under this (default: 4)")
    p.add_argument(
        "--start", type=int, default=16, help="the first probe's player count; doubled from there (default: 16)"
    )
    p.add_argument("--max-players", type=int, default=400, help="the largest count probed (default: 400)")
    p.add_argument(
        "--tolerance",
        type=float,
        default=0.10,
        help="bisect until the bracket is within this share of its lower end (default: 0.10)",
    )
    p.add_argument("--ramp", type=float, default=40.0, help="players started per second (default: 40)")
    p.add_argument("--steady-s", type=float, help="seconds of the judged window (default: 8; --quick 4)")
    p.add_argument(
        "--settle-s", type=float, default=1.0, help="seconds after the last player is in before the window (default: 1)"
    )
    p.add_argument("--budget-s", type=float, help="stop probing past this many seconds (default: 480; --quick 240)")
    p.add_argument(
        "--quiet-wait-s",
        type=float,
        metavar="S",
        help="before each probe, wait up to S seconds for other processes to leave the CPUs mostly "
        "idle (default: 15; --quick 5)",
    )
    p.add_argument(
        "--serve-loop",
        default="auto",
        choices=["auto", "uvloop", "asyncio"],
        help="the server's event loop (default: auto, uvloop where installed)",
    )
    p.add_argument("--json-out", metavar="FILE", help="also write the JSON line to FILE")
    p.add_argument("--keep-dir", metavar="DIR", help="keep the probes' server logs and data in DIR")
    p.add_argument(
        "--profile-out",
        metavar="FILE",
        help="after the search, probe once more at the capacity with py-spy recording the server "
        "(raw format) into FILE, and print where its time went on stderr",
    )


def config_from_args(args: argparse.Namespace) -> CapacityConfig:
    """The config; ValueError saying which argument is wrong."""
    if args.tick_rate < 1 or args.send_rate < 1 or args.tick_rate % args.send_rate:
        raise ValueError("--tick-rate and --send-rate must be positive, the send rate dividing the tick rate")
    if args.max_players < 1 or args.start < 1 or args.ramp <= 0 or args.bound_ms <= 0:
        raise ValueError("--max-players, --start, --ramp and --bound-ms must be positive")
    if not 0 < args.tolerance < 1:
        raise ValueError(f"--tolerance must be between 0 and 1, not {args.tolerance}")
    quick = args.quick
    return CapacityConfig(
        probe=ProbeSettings(
            tick_rate=args.tick_rate,
            send_rate=args.send_rate,
            bound_ms=args.bound_ms,
            ramp=args.ramp,
            steady_s=args.steady_s if args.steady_s is not None else (4.0 if quick else 8.0),
            settle_s=args.settle_s,
            serve_loop=args.serve_loop,
        ),
        start=args.start,
        max_players=args.max_players,
        tolerance=args.tolerance,
        budget_s=args.budget_s if args.budget_s is not None else (240.0 if quick else 480.0),
        quiet_wait_s=args.quiet_wait_s if args.quiet_wait_s is not None else (5.0 if quick else 15.0),
        quick=quick,
        profile_out=Path(args.profile_out) if args.profile_out else None,
        keep_dir=Path(args.keep_dir) if args.keep_dir else None,
    )


def write_json_line(line: str, json_out: str | None) -> None:
    """The result on stdout (alone there) and, with ``json_out``, appended to that file."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()
    if json_out:
        Path(json_out).parent.mkdir(parents=True, exist_ok=True)
        with open(json_out, "a") as f:
            f.write(line + "\n")
