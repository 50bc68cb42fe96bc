"""Games as plug-ins: what declared inputs cost, what the reference rules cost, whether random bots are refused.

From the repository root, with the project's virtualenv:

    .venv/bin/python -m bench.games [--quick] [--json-out FILE]

Figures (bench/README.md says what each one means), one JSON line each on stdout:

1. ``input_decode_us``            microseconds per arena input through the declared-schema decoder
                                  (``Arena().validate_input``), against arena's hand-written decoder of
                                  before declared schemas (``legacy_arena_validate``, kept here), on the
                                  same inputs, in alternating turns (A B A B ...)
2. ``rules_step_us_arena_50``     microseconds per ``Arena.step`` with 50 players moving and firing
   ``rules_step_us_goofspiel``    microseconds per ``Goofspiel.step`` with 8 players bidding (default config);
                                  both reference figures for game authors, no baseline
3. ``random_bot_inputs_refused``  connections a real ``tickline serve`` closed for bad input while 8
                                  ``random`` bots (``Inputs.random``) played it, arena and goofspiel; target 0

Figures 1 and 2 time a loop in this process with ``time.perf_counter_ns`` (wall
time; the process's own CPU time, from ``tickline.bots.procstat.own_cpu_s``, is
reported beside it). Figure 3 starts one server per game on 127.0.0.1 (port 0,
its own data dir), runs ``tickline.bots.loadtest.LoadTest`` against it, reads its
``/metrics`` and stops it by its PID (SIGTERM, then SIGKILL after 20 s).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import platform
import random
import shutil
import signal
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import orjson

from bench.report import Report, med, rnd
from tickline.bots.capacity.run import say
from tickline.bots.client import ClientOptions
from tickline.bots.loadtest import LoadConfig, LoadTest
from tickline.bots.metrics import sample_sum, scrape
from tickline.bots.procstat import CORES, machine_busy_percent, own_cpu_s
from tickline.shared.game import InvalidInput, Rules, State, TickInputs
from tickline.shared.games import load

HOST = "127.0.0.1"
PYTHON = platform.python_version()
SEED = 20261204


# --------------------------------------------------------------------------- the baseline

# Arena's input decoder before declared schemas (its hand-written ``Arena.validate_input``,
# verbatim but for ``self``), kept as the baseline of ``input_decode_us``.
AIM_LIMIT = 1_000_000
_CONTROL_KEYS = frozenset({"mx", "my", "ax", "ay", "fire", "vt"})
TICK_LIMIT = 2**31
_IDLE = {"mx": 0, "my": 0, "ax": 0, "ay": 0, "fire": False}


def legacy_arena_validate(raw: Any) -> dict[str, Any]:
    """Arena's decoder before declared schemas (the baseline)."""
    if not isinstance(raw, dict):
        raise InvalidInput("arena input must be an object")
    unknown = raw.keys() - _CONTROL_KEYS
    if unknown:
        raise InvalidInput(f"arena input has unknown control {str(sorted(map(str, unknown))[0])[:32]!r}")
    out = dict(_IDLE)
    for key in ("mx", "my"):
        value = raw.get(key, 0)
        if type(value) is not int or value not in (-1, 0, 1):
            raise InvalidInput(f"arena input {key!r} must be -1, 0 or 1")
        out[key] = value
    for key in ("ax", "ay"):
        value = raw.get(key, 0)
        if type(value) is not int or not -AIM_LIMIT <= value <= AIM_LIMIT:
            raise InvalidInput(f"arena input {key!r} must be an integer within +-{AIM_LIMIT}")
        out[key] = value
    fire = raw.get("fire", False)
    if type(fire) is not bool:
        raise InvalidInput("arena input 'fire' must be true or false")
    out["fire"] = fire
    if "vt" in raw:
        vt = raw["vt"]
        if type(vt) is not int or not 0 <= vt < TICK_LIMIT:
            raise InvalidInput("arena input 'vt' (the tick the player sees) must be a non-negative integer")
        out["vt"] = vt
    return out


# --------------------------------------------------------------------------- 1. input decoding

# The mix of inputs, by share: what arena's bots send (bots/arena_bot.py, bots/behaviours.py).
INPUT_MIX = (
    ("hunting: every control and vt (ArenaBot with a target)", 0.50),
    ("idle: dead, or nobody in sight, no vt (ArenaBot)", 0.15),
    ("wandering: unit aim, fire half the time, vt (WanderBot)", 0.20),
    ("partial: a client that sends only what changed", 0.15),
)


def arena_inputs(rng: random.Random, count: int) -> list[dict[str, Any]]:
    """``count`` valid arena inputs in INPUT_MIX's shares, as the bots send them."""
    kinds = [k for k, _ in INPUT_MIX]
    weights = [w for _, w in INPUT_MIX]
    out: list[dict[str, Any]] = []
    for _ in range(count):
        raw: dict[str, Any]
        kind = rng.choices(kinds, weights)[0]
        mx, my = rng.choice((-1, 0, 1)), rng.choice((-1, 0, 1))
        vt = rng.randint(0, 18_000)
        if kind.startswith("hunting"):
            raw = {
                "mx": mx,
                "my": my,
                "ax": rng.randint(-4500, 4500),
                "ay": rng.randint(-4500, 4500),
                "fire": rng.random() < 0.6,
                "vt": vt,
            }
        elif kind.startswith("idle"):
            raw = {"mx": 0, "my": 0, "ax": 0, "ay": 0, "fire": False}
        elif kind.startswith("wandering"):
            raw = {"mx": mx, "my": my, "fire": rng.random() < 0.5, "ax": mx or 1, "ay": my, "vt": vt}
        else:
            partial: list[dict[str, Any]] = [
                {"mx": mx},
                {"mx": mx, "my": my},
                {"fire": rng.random() < 0.5},
                {"ax": rng.randint(-4500, 4500), "ay": rng.randint(-4500, 4500)},
                {"vt": vt},
                {},
            ]
            raw = rng.choice(partial)
        out.append(raw)
    return out


def _time_loop(fn: Callable[[Any], Any], stream: list[Any]) -> tuple[float, float]:
    """(wall ns, own CPU s) of calling ``fn`` on every item of ``stream``."""
    cpu0 = own_cpu_s()
    t0 = time.perf_counter_ns()
    for raw in stream:
        fn(raw)
    t1 = time.perf_counter_ns()
    return t1 - t0, own_cpu_s() - cpu0


async def figure_decode(args: argparse.Namespace, report: Report) -> None:
    rules = load("arena")()
    declared = rules.validate_input
    pool = arena_inputs(random.Random(SEED), 4096)
    for raw in pool:  # both decoders agree on every input of the mix (and accept it)
        if declared(raw) != legacy_arena_validate(raw):
            raise RuntimeError(f"the decoders disagree on {raw!r}: {declared(raw)!r} vs {legacy_arena_validate(raw)!r}")
    stream = (pool * (args.decodes // len(pool) + 1))[: args.decodes]
    turns = 3 if args.quick else 5
    busy = await machine_busy_percent(1.0)
    say(f"input_decode_us: {turns} turns of {args.decodes} decodes each way (A: declared schema, B: legacy)")
    _time_loop(declared, stream[:10_000])  # warm both
    _time_loop(legacy_arena_validate, stream[:10_000])
    values, baselines, ratios, cpu_values, cpu_baselines = [], [], [], [], []
    for turn in range(turns):
        a_ns, a_cpu = _time_loop(declared, stream)
        b_ns, b_cpu = _time_loop(legacy_arena_validate, stream)
        a, b = a_ns / 1000 / len(stream), b_ns / 1000 / len(stream)
        values.append(a)
        baselines.append(b)
        ratios.append(a / b)
        cpu_values.append(a_cpu * 1e6 / len(stream))
        cpu_baselines.append(b_cpu * 1e6 / len(stream))
        say(f"  turn {turn + 1}/{turns}: declared {a:.3f} us, legacy {b:.3f} us, ratio {a / b:.3f}")
    ratio = med(ratios)
    report.emit(
        {
            "figure": "input_decode_us",
            "value": rnd(med(values), 3),
            "unit": "us/input",
            "baseline": rnd(med(baselines), 3),
            "baseline_of": "arena's hand-written validate_input before declared schemas (legacy_arena_validate in "
            "bench/games.py), same inputs, same run, alternating turns",
            "ratio": rnd(ratio, 3),
            "target": "<= 1.0",
            "holds": ratio <= 1.0,
            "runs": turns,
            "spread": [rnd(min(ratios), 3), rnd(max(ratios), 3)],
            "cores": CORES,
            "python": PYTHON,
            "decodes_per_turn": len(stream),
            "distinct_inputs": len(pool),
            "mix": dict(INPUT_MIX),
            "values": [rnd(v, 3) for v in values],
            "baselines": [rnd(v, 3) for v in baselines],
            "cpu_us": rnd(med(cpu_values), 3),
            "baseline_cpu_us": rnd(med(cpu_baselines), 3),
            "machine_busy_percent_before": rnd(busy, 0),
            "note": "wall time of a Python loop over pre-built inputs, loop overhead included on both sides",
        }
    )


# --------------------------------------------------------------------------- 2. rules step


def arena_stream(rules: Rules, players: int, ticks: int, rng: random.Random) -> list[TickInputs]:
    """Every tick's inputs for ``players`` arena players who join at tick 1 and then move and fire as
    the arena bots do: a wander direction held 40-80 ticks, aim at a target within sight, fire while
    one is in range; one input every other tick each (bots send one per state update, 30 Hz at 60 Hz
    ticks), with vt 6 ticks behind. Validated, as the server applies them."""
    wander: dict[int, tuple[int, int, int]] = {}  # pid -> (mx, my, ticks left)
    aim: dict[int, tuple[int, int, bool]] = {}
    out = []
    for tick in range(1, ticks + 1):
        ti = TickInputs()
        if tick == 1:
            ti.joins = [(pid, f"bot{pid}") for pid in range(1, players + 1)]
        for pid in range(1, players + 1):
            if (tick + pid) % 2:
                continue
            mx, my, left = wander.get(pid, (0, 0, 0))
            if left <= 0:
                mx, my, left = rng.choice((-1, 0, 1)), rng.choice((-1, 0, 1)), rng.randint(40, 80)
            wander[pid] = (mx, my, left - 2)
            if pid not in aim or rng.random() < 0.1:
                aim[pid] = (rng.randint(-4500, 4500), rng.randint(-4500, 4500), rng.random() < 0.6)
            ax, ay, fire = aim[pid]
            raw = {"mx": mx, "my": my, "ax": ax, "ay": ay, "fire": fire, "vt": max(0, tick - 6)}
            ti.inputs[pid] = rules.validate_input(raw)
            ti.seqs[pid] = tick
        out.append(ti)
    return out


def goofspiel_stream(rules: Rules, players: int, rng: random.Random) -> list[TickInputs]:
    """One whole goofspiel match's inputs: ``players`` join at tick 1, then each sends a bid every tick
    (one per state update at the game's 10 Hz), a card drawn at random from its hand (0 while none)."""
    state = rules.initial_state(SEED)
    out = []
    tick = 0
    while not rules.is_over(state) and tick < 100_000:
        tick += 1
        ti = TickInputs()
        if tick == 1:
            ti.joins = [(pid, f"bot{pid}") for pid in range(1, players + 1)]
        for pid, p in state["players"].items():
            ti.inputs[pid] = rules.validate_input({"bid": rng.choice(p["hand"]) if p["hand"] else 0})
        rules.step(state, ti)
        out.append(ti)
    return out


def _run_steps(rules: Rules, stream: list[TickInputs], ticks: int) -> tuple[int, int, float, Counter[str], State]:
    """Steps ``stream`` from a fresh state, again and again, until ``ticks`` steps: (steps, wall ns,
    own CPU s, events by kind, the last state). Only the steps are timed."""
    steps, ns, cpu = 0, 0, 0.0
    events: Counter[str] = Counter()
    state: State = {}
    while steps < ticks:
        state = rules.initial_state(SEED)
        run = stream[: ticks - steps]
        got: list[list[dict[str, Any]]] = []
        cpu0 = own_cpu_s()
        t0 = time.perf_counter_ns()
        for ti in run:
            got.append(rules.step(state, ti))
        ns += time.perf_counter_ns() - t0
        cpu += own_cpu_s() - cpu0
        steps += len(run)
        events.update(e["k"] for evs in got for e in evs)
    return steps, ns, cpu, events, state


async def figure_steps(args: argparse.Namespace, report: Report) -> None:
    turns = 3 if args.quick else 5
    arena_ticks = args.arena_ticks
    goof_ticks = args.goofspiel_ticks
    games: list[tuple[str, str, Rules, list[TickInputs], int, dict[str, Any]]] = []
    arena = load("arena")({"max_players": 50})
    games.append(
        (
            "rules_step_us_arena_50",
            "arena",
            arena,
            arena_stream(arena, 50, arena_ticks, random.Random(SEED)),
            arena_ticks,
            {"players": 50, "config": {"max_players": 50}, "weapon": arena.config["weapon"]},
        )
    )
    goof = load("goofspiel")()
    match = goofspiel_stream(goof, 8, random.Random(SEED))
    games.append(
        (
            "rules_step_us_goofspiel",
            "goofspiel",
            goof,
            match,
            goof_ticks,
            {"players": 8, "config": "default", "ticks_per_match": len(match)},
        )
    )
    busy = await machine_busy_percent(1.0)
    results: dict[str, dict[str, Any]] = {name: {"us": [], "cpu_us": []} for name, *_ in games}
    say(f"rules step: {turns} turns; arena 50 players x {arena_ticks} ticks, goofspiel 8 players x {goof_ticks} ticks")
    _run_steps(arena, games[0][3], min(60, arena_ticks))  # warm
    _run_steps(goof, games[1][3], min(60, goof_ticks))
    for turn in range(turns):
        for name, _game, rules, stream, ticks, _extra in games:
            steps, ns, cpu, events, state = _run_steps(rules, stream, ticks)
            r = results[name]
            r["us"].append(ns / 1000 / steps)
            r["cpu_us"].append(cpu * 1e6 / steps)
            r["steps"], r["events"], r["over"] = steps, events, rules.is_over(state)
            say(f"  turn {turn + 1}/{turns}: {name} {ns / 1000 / steps:.1f} us/step over {steps} steps")
    for name, game, _rules, _stream, _ticks, extra in games:
        r = results[name]
        per_tick = {k: round(v / r["steps"], 3) for k, v in sorted(r["events"].items())}
        report.emit(
            {
                "figure": name,
                "value": rnd(med(r["us"]), 1 if game == "arena" else 2),
                "unit": "us/step",
                "baseline": None,
                "baseline_of": None,
                "ratio": None,
                "target": None,
                "holds": None,
                "runs": turns,
                "spread": [rnd(min(r["us"]), 2), rnd(max(r["us"]), 2)],
                "cores": CORES,
                "python": PYTHON,
                "game": game,
                "steps_per_turn": r["steps"],
                **extra,
                "events_per_step": per_tick,
                "cpu_us": rnd(med(r["cpu_us"]), 2),
                "machine_busy_percent_before": rnd(busy, 0),
                "note": "a reference figure for game authors: what the framework's own reference rules cost "
                "per tick (Rules.step alone: no views, no encoding, no I/O); spread is min/max of the values",
            }
        )


# --------------------------------------------------------------------------- 3. random bots


class ServerProc:
    """``python -m tickline serve`` on 127.0.0.1, port 0, its own data dir; stopped by its PID."""

    def __init__(self, data_dir: Path, serve_args: list[str]) -> None:
        self.data_dir = data_dir
        self.serve_args = serve_args
        self.proc: asyncio.subprocess.Process | None = None
        self.stderr_file: IO[bytes] | None = None
        self.ready: dict[str, Any] = {}

    async def start(self) -> dict[str, Any]:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        argv = [
            sys.executable,
            "-m",
            "tickline",
            "--log-level",
            "warning",
            "serve",
            "--host",
            HOST,
            "--port",
            "0",
            "--no-require-tokens",  # its bots connect directly
            # Its bots all come from one address, faster than a person's budget allows.
            "--new-connections-per-s-per-address",
            "10000",
            "--max-half-open-per-address",
            "1024",
            "--max-connections-per-address",
            "100000",
            "--metrics-port",
            "0",
            "--data-dir",
            str(self.data_dir),
            *self.serve_args,
        ]
        self.stderr_file = open(self.data_dir / "stderr.log", "wb")  # noqa: SIM115, ASYNC230 - closed in stop()
        self.proc = await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=self.stderr_file
        )
        assert self.proc.stdout is not None
        line = await asyncio.wait_for(self.proc.stdout.readline(), 60)
        if not line:
            await self.proc.wait()
            raise RuntimeError(
                f"tickline serve {' '.join(self.serve_args)} exited {self.proc.returncode}: {self.tail()}"
            )
        self.ready = orjson.loads(line)
        return self.ready

    def tail(self, n: int = 5) -> str:
        try:
            lines = (self.data_dir / "stderr.log").read_text(errors="replace").strip().splitlines()
        except OSError:
            return ""
        return " | ".join(lines[-n:])

    async def stop(self) -> int | None:
        """SIGTERM by PID, then wait; SIGKILL after 20 s. Returns the exit status."""
        proc = self.proc
        if proc is None:
            return None
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), 20)
        except TimeoutError:
            say(f"server {proc.pid} still running 20 s after SIGTERM; SIGKILL")
            proc.kill()
            await proc.wait()
        if self.stderr_file is not None:
            self.stderr_file.close()
        return proc.returncode


RANDOM_GAMES = (
    ("arena", ["--game", "arena", "--set", "time_limit_s=10"], 12.0),
    ("goofspiel", ["--game", "goofspiel", "--set", "cards=5", "--set", "round_ms=1000"], 8.0),
)


async def random_bots(game: str, serve_args: list[str], duration: float, workdir: Path, bots: int) -> dict[str, Any]:
    server = ServerProc(workdir / f"serve-{game}", serve_args)
    try:
        ready = await server.start()
        metrics_url = f"http://{HOST}:{ready['metrics_port']}/metrics"
        before = sample_sum(await scrape(metrics_url, timeout=5.0), "tickline_connections_kicked_total")
        cfg = LoadConfig(
            host=HOST,
            port=ready["port"],
            n=bots,
            duration=duration,
            behaviour="random",
            cafile=ready["cert"],
            progress=False,
            client=ClientOptions(local_host=HOST),
        )
        load_report = await LoadTest(cfg).run()
        samples = await scrape(metrics_url, timeout=5.0)
    finally:
        code = await server.stop()
    kicked = sample_sum(samples, "tickline_connections_kicked_total")
    out = {
        "kicked": round(kicked - before),
        "inputs_sent": load_report["inputs_sent"],
        "inputs_applied": round(sample_sum(samples, "tickline_server_inputs_applied_total")),
        "ticks": round(sample_sum(samples, "tickline_server_ticks_total")),
        "bots": load_report["bots"],
        "connected": load_report["connected"],
        "behaviours": load_report["behaviours"],
        "closed_by_server": load_report["closed_by_server"],
        "errors": load_report["errors"],
        "error_reasons": load_report["error_reasons"] or None,
        "failures": load_report["failures"] or None,
        "duration_s": duration,
        "serve_args": serve_args,
        "server_exit": code,
    }
    say(
        f"  {game}: {out['connected']}/{out['bots']} random bots connected, {out['inputs_sent']} inputs sent, "
        f"{out['inputs_applied']} applied, {out['kicked']} connections kicked, closed by server "
        f"{out['closed_by_server']}, errors {out['errors']}, server exit {code}"
    )
    return out


async def figure_random(args: argparse.Namespace, report: Report, workdir: Path) -> None:
    say(f"random_bot_inputs_refused: {args.bots} random bots against a fresh server per game")
    per_game: dict[str, dict[str, Any]] = {}
    for game, serve_args, duration in RANDOM_GAMES:
        per_game[game] = await random_bots(game, serve_args, duration, workdir, args.bots)
    refused = sum(g["kicked"] for g in per_game.values())
    sent = sum(g["inputs_sent"] for g in per_game.values())
    caveats = [
        f"{game}: {why}"
        for game, g in per_game.items()
        for why in (
            *(g["failures"] or ()),
            *([f"only {g['connected']}/{g['bots']} bots connected"] if g["connected"] < g["bots"] else []),
            *([f"{g['errors']} bot errors: {g['error_reasons']}"] if g["errors"] else []),
            *(["no input was sent"] if not g["inputs_sent"] else []),
        )
    ]
    report.emit(
        {
            "figure": "random_bot_inputs_refused",
            "value": refused,
            "unit": "connections closed for bad input",
            "baseline": None,
            "baseline_of": None,
            "ratio": None,
            "target": "0",
            "holds": refused == 0 and sent > 0,
            "runs": 1,
            "spread": None,
            "cores": CORES,
            "python": PYTHON,
            "inputs_sent": sent,
            "per_game": per_game,
            "caveats": caveats or None,
        }
    )


# --------------------------------------------------------------------------- main


async def amain(args: argparse.Namespace) -> int:
    report = Report(Path(args.json_out) if args.json_out else None)
    workdir = Path(tempfile.mkdtemp(prefix="tlbench-games-"))
    began = time.monotonic()
    try:
        await figure_decode(args, report)
        await figure_steps(args, report)
        await figure_random(args, report, workdir)
    finally:
        with contextlib.suppress(OSError):
            shutil.rmtree(workdir, ignore_errors=True)
    say(f"done in {time.monotonic() - began:.0f} s")
    return 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.games", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick", action="store_true", help="3 turns instead of 5 (the random-bot load tests take as long either way)"
    )
    parser.add_argument("--json-out", metavar="FILE", help="also write the JSON lines to FILE")
    parser.add_argument("--decodes", type=int, default=100_000, help="inputs decoded per turn (default: 100000)")
    parser.add_argument("--arena-ticks", type=int, default=600, help="arena steps per turn (default: 600)")
    parser.add_argument("--goofspiel-ticks", type=int, default=3000, help="goofspiel steps per turn (default: 3000)")
    parser.add_argument("--bots", type=int, default=8, help="random bots per game (default: 8)")
    args = parser.parse_args(argv)
    if min(args.decodes, args.arena_ticks, args.goofspiel_ticks, args.bots) < 1:
        parser.error("--decodes, --arena-ticks, --goofspiel-ticks and --bots must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    return asyncio.run(amain(parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
