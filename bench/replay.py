"""Replays of a long match: re-simulation speed, seeking, replay file size, export, import, rendering.

From the repository root, with the project's virtualenv:

    .venv/bin/python -m bench.replay [--quick] [--minutes M] [--json-out FILE]

The match: arena at 60 Hz, 16 players, 30 minutes (``--quick``: 5), played by
a script in this process through the real event log writer into a real SQLite
file, one input per player per tick as bots send them (a wandering direction
held about a second, fire half the time, the tick they see), a keyframe a
second, as ``tickline serve`` writes it.

Figures (bench/README.md says what each one means), one JSON line each on stdout:

1. ``resim_speed_x``       match time / wall time of re-simulating every tick from the log (each
                           hash checked), as ``tickline replay verify`` does: cut at keyframes into
                           segments replayed on every core; beside it ``single_process_x``, one
                           pass in this process (``Replay.scan``); in turns; target >= 200
2. ``seek_ms_p99``         milliseconds to ``Replay.state_at`` a random tick, p99 over ``--seeks``
                           seeks, from a replay file (keyframes 5 s apart) and from the log (1 s);
                           target < 100
3. ``replay_file_bytes_per_player_minute``  the exported file's bytes per player-minute; baseline:
                           the same match's bytes in the event log (the SQLite file holding just
                           this match); target ratio <= 0.5. ``export_s`` and ``import_s`` beside it
4. ``render_s``            seconds to render the HTML player and the PNG pictures of the match,
                           when this installation has them

Wall time from ``time.perf_counter``; the process's own CPU time
(``tickline.bots.procstat.own_cpu_s``) is reported beside each. Nothing here
opens a socket.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import platform
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.report import Report, med, rnd, sig
from tickline.bots.capacity.run import say
from tickline.bots.procstat import CORES, own_cpu_s
from tickline.replays.file import read_replay, write_replay
from tickline.replays.reader import LogReader
from tickline.replays.replay import Replay
from tickline.replays.verify import verify_replay
from tickline.server.eventlog import EventLog, KeyframeRecord, MatchEnd, PlayerRecord, TickRecord
from tickline.shared.game import TickInputs, state_hash
from tickline.shared.games import make_rules
from tickline.shared.logformat import MatchHeader

PYTHON = platform.python_version()
SEED = 20261204
PLAYERS = 16
TICK_RATE = 60
MATCH = "b" * 32


async def record(url: str, minutes: float) -> int:
    """Play the scripted match into the log at ``url``; its ticks."""
    rules = make_rules("arena", {"time_limit_s": 3600, "score_limit": 10_000})
    header = MatchHeader(MATCH, "arena", rules.version, SEED, rules.config, TICK_RATE, 30, time.time())
    log = await EventLog.open(url, "bench")
    writer = asyncio.create_task(log.run())
    await log.create_match(header)
    rng = random.Random(SEED)
    state = rules.initial_state(SEED)
    ticks = int(minutes * 60 * TICK_RATE)
    held: dict[int, tuple[int, int, int]] = {}  # player -> (mx, my, until tick)
    for pid in range(1, PLAYERS + 1):
        log.add_player(PlayerRecord(MATCH, pid, f"bot{pid}", ""))
    for tick in range(1, ticks + 1):
        inputs = TickInputs(joins=[(pid, f"bot{pid}") for pid in range(1, PLAYERS + 1)] if tick == 1 else [])
        for pid in range(1, PLAYERS + 1):
            mx, my, until = held.get(pid, (0, 0, 0))
            if tick >= until:
                mx, my, until = rng.choice((-1, 0, 1)), rng.choice((-1, 0, 1)), tick + rng.randint(48, 72)
                held[pid] = (mx, my, until)
            raw = {"mx": mx, "my": my, "ax": mx or 1, "ay": my, "fire": rng.random() < 0.5, "vt": max(0, tick - 4)}
            inputs.inputs[pid] = rules.validate_input(raw)
            inputs.seqs[pid] = tick
        events = rules.step(state, inputs)
        digest = state_hash(state)
        log.append(TickRecord(MATCH, tick, inputs.to_record(), events, digest))
        if tick % TICK_RATE == 0:
            log.add_keyframe(KeyframeRecord(MATCH, tick, rules.dump_state(state), digest))
        if tick % 500 == 0:
            await log.wait_for_room()
            await asyncio.sleep(0)  # the writer commits in groups, as under a server's loop
    log.end_match(MatchEnd(MATCH, "stopped", ticks, state_hash(state), {"ticks": ticks}))
    log.stop()
    await writer
    await log.dispose()
    return ticks


def timed(fn: Any, *args: Any) -> tuple[Any, float, float]:
    """(result, wall seconds, own CPU seconds) of ``fn(*args)``."""
    cpu, began = own_cpu_s(), time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - began, own_cpu_s() - cpu


def p99_ms(replay: Replay, seeks: int, rng: random.Random) -> tuple[float, float]:
    """(p99, median) milliseconds of seeking to random ticks."""
    times = []
    for _ in range(seeks):
        tick = rng.randint(1, replay.ticks)
        began = time.perf_counter()
        replay.state_at(tick)
        times.append((time.perf_counter() - began) * 1000)
    times.sort()
    return times[min(len(times) - 1, int(len(times) * 0.99))], times[len(times) // 2]


def common(minutes: float) -> dict[str, Any]:
    return {"match": f"arena, {PLAYERS} players, {TICK_RATE} Hz, {minutes:g} min", "cores": CORES, "python": PYTHON}


async def amain(args: argparse.Namespace) -> int:
    report = Report(Path(args.json_out) if args.json_out else None)
    minutes = 5.0 if args.quick else args.minutes
    workdir = Path(tempfile.mkdtemp(prefix="tlbench-replay-"))
    began = time.monotonic()
    try:
        db = workdir / "log.db"
        url = f"sqlite+aiosqlite:///{db}"
        say(f"recording a {minutes:g}-minute match ...")
        ticks = await record(url, minutes)
        log_bytes = db.stat().st_size
        async with await LogReader.open(url) as reader:
            replay = await Replay.from_log(reader, MATCH)

        say("re-simulating every tick ...")
        match_s = ticks / TICK_RATE
        single, parallel = [], []
        for _ in range(args.turns):  # in turns: one process, then every core
            summary, wall, cpu = timed(replay.scan)
            single.append(wall)
            verdict, wall, _ = timed(verify_replay, replay, CORES)
            if not verdict.verified:
                raise SystemExit(f"bench.replay: the recorded match does not verify: {verdict.reason}")
            parallel.append(wall)
        speed, one = match_s / med(parallel), match_s / med(single)
        report.emit(
            {
                "figure": "resim_speed_x",
                "value": rnd(speed, 1),
                "unit": "x real time",
                "of": f"tickline replay verify: keyframe segments in {CORES} processes",
                "single_process_x": rnd(one, 1),
                "single_process_cpu_s": rnd(cpu, 2),
                "runs": args.turns,
                "spread": [rnd(match_s / max(parallel), 1), rnd(match_s / min(parallel), 1)],
                "ticks": ticks,
                "kills": len(summary.marks),
                "target": ">= 200",
                "holds": speed >= 200,
                **common(minutes),
            }
        )

        say("exporting ...")
        out = workdir / "match.tlr"
        cpu, t0 = own_cpu_s(), time.perf_counter()
        size = await write_replay(replay, out)
        export_s, export_cpu = time.perf_counter() - t0, own_cpu_s() - cpu
        per = PLAYERS * minutes
        report.emit(
            {
                "figure": "replay_file_bytes_per_player_minute",
                "value": rnd(size / per, 0),
                "unit": "bytes",
                "baseline": rnd(log_bytes / per, 0),
                "baseline_of": "the same match's bytes in the event log (a SQLite file holding only it)",
                "ratio": sig(size / log_bytes),
                "target": "<= 0.5",
                "holds": size / log_bytes <= 0.5,
                "file_bytes": size,
                "log_bytes": log_bytes,
                "export_s": rnd(export_s, 2),
                "export_cpu_s": rnd(export_cpu, 2),
                **common(minutes),
            }
        )

        say("importing into a fresh log ...")
        other = workdir / "imported.db"
        t0 = time.perf_counter()
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tickline",
            "replay",
            "import",
            str(out),
            "--db",
            f"sqlite+aiosqlite:///{other}",
            stdout=asyncio.subprocess.DEVNULL,  # stdout is for figures
        )
        if await proc.wait() != 0:
            raise SystemExit("bench.replay: `tickline replay import` failed")
        import_s = time.perf_counter() - t0

        say("seeking ...")
        from_file = await read_replay(out)
        rng = random.Random(SEED)
        file_p99, file_med = p99_ms(from_file, args.seeks, rng)
        log_p99, log_med = p99_ms(replay, args.seeks, rng)
        report.emit(
            {
                "figure": "seek_ms_p99",
                "value": rnd(file_p99, 1),
                "unit": "ms",
                "median_ms": rnd(file_med, 1),
                "from_log_p99_ms": rnd(log_p99, 1),
                "from_log_median_ms": rnd(log_med, 1),
                "seeks": args.seeks,
                "import_s": rnd(import_s, 2),
                "target": "< 100",
                "holds": file_p99 < 100,
                **common(minutes),
            }
        )
        await render(report, from_file, workdir, minutes)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    say(f"done in {time.monotonic() - began:.0f} s")
    return 0


async def render(report: Report, replay: Replay, workdir: Path, minutes: float) -> None:
    if importlib.util.find_spec("tickline.replays.player") is None:
        say("render_s: this installation has no HTML player; skipped")
        return
    from tickline.replays.pictures import render_pngs
    from tickline.replays.player import render_html

    say("rendering ...")
    html, html_s, _ = timed(render_html, replay)
    pngs, png_s, _ = timed(render_pngs, replay, workdir / "png")
    report.emit(
        {
            "figure": "render_s",
            "value": rnd(html_s + png_s, 2),
            "unit": "s",
            "html_s": rnd(html_s, 2),
            "html_bytes": len(html.encode()),
            "png_s": rnd(png_s, 2),
            "pngs": len(pngs),
            **common(minutes),
        }
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.replay", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a 5-minute match instead of --minutes")
    parser.add_argument("--minutes", type=float, default=30.0, help="the match's length (default: 30)")
    parser.add_argument("--seeks", type=int, default=200, help="random seeks per source (default: 200)")
    parser.add_argument("--turns", type=int, default=3, help="re-simulations of each kind (default: 3)")
    parser.add_argument("--json-out", metavar="FILE", help="also write the JSON lines to FILE")
    args = parser.parse_args(argv)
    if args.minutes <= 0 or args.seeks < 1 or args.turns < 1:
        parser.error("--minutes, --seeks and --turns must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    return asyncio.run(amain(parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
