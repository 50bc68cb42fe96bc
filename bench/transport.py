"""Server CPU per message on tickline's fast path, against QUIC datagrams and across event loops.

From the repository root, with the project's virtualenv:

    .venv/bin/python -m bench.transport [--quick] [--json-out FILE] [--n 50] [--rate 60]
    .venv/bin/python -m bench.transport --profile FILE      # one fast-path turn under py-spy, no figures

Figures (bench/README.md says what each one means), one JSON line each on stdout:

1. ``transport_us_per_msg_fastpath``  fast path vs QUIC datagrams, the server on the default loop (uvloop)
2. ``fastpath_us_per_msg_uvloop``     the fast path on uvloop vs asyncio's own loop (QUIC on both as extras)
3. ``fastpath_native_us_per_msg``     the fast path batched (native modules: sealing, sendmmsg, and
                                      the socket read in recvmmsg batches at each tick) vs the fast
                                      path before the native core (the pure-Python twins, and the
                                      event loop reading each packet as it comes)

Every turn is one ``bench.ceiling.probe_ceiling``: a fresh
``python -m bench.ceiling serve`` (pinned to the first CPU), ``--n``
clients in a worker process on the second CPU, each sending one ``--input-bytes``
input and receiving one ``--delta-bytes`` delta per tick, and the server's own
``getrusage`` CPU over a steady window divided by the messages it sent and received.
The fast-path server is the same process with ``--fastpath``: tickline's endpoint
(``tickline.server.transport.start_endpoint``) with a ``tickline.server.fastpath.FastPath``
and its routes; the clients seal and open with ``tickline.shared.fastpath``. A round runs the four
configurations (fast path and QUIC, each on uvloop and on asyncio's loop) once
each, every other round in reverse order; ratios are per round, then the median.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from bench.ceiling import probe_ceiling
from bench.report import Report, med, rnd
from tickline import loops
from tickline.bots.capacity.probe import ProbeSettings
from tickline.bots.capacity.run import say, wait_for_quiet
from tickline.bots.procstat import CORES, cpu_plan
from tickline.bots.profiling import profile_process, summarize_profile
from tickline.shared import native
from tickline.shared.protocol import MAX_DATAGRAM

FAST, QUIC = "fastpath", "quic"
TWINS = "fastpath-twins"  # the fast path with the native modules forbidden (their pure-Python twins)
NATIVE_TARGET = 0.5
TARGET_RATIO = 0.25
# Where a frame's self time goes, by its "function (file)" name (first match wins); the rest is "other".
# With --native, C frames are named too: libuv/uvloop sources, libc, cryptography's Rust/OpenSSL library.
PROFILE_AREAS = (
    ("fast path in Python (shared/fastpath.py, server/fastpath.py)", ("shared/fastpath.py", "server/fastpath.py")),
    ("AES-GCM (cryptography's OpenSSL)", ("_rust.abi3.so", "libcrypto", "libssl")),
    ("UDP system calls (sendmsg, recvmsg)", ("sendmsg (", "recvmsg (", "sendto (libc", "recvfrom (libc")),
    ("socket demux and sends (server/transport.py)", ("server/transport.py",)),
    ("aioquic (keepalive PINGs, ACKs, timers)", ("aioquic/",)),
    ("tick loop and counters (bench/ceiling.py)", ("bench/ceiling.py",)),
    (
        "uvloop and libuv (C)",
        (
            "(loop.c)",
            "(udp.c)",
            "(linux.c)",
            "(core.c)",
            "(timer.c)",
            "(loop-watcher.c)",
            "(queue.h)",
            "(heap-inl.h)",
            "(uv-common.c)",
            "uvloop/",
        ),
    ),
    ("asyncio in Python", ("asyncio/",)),
)


def _settings(args: argparse.Namespace, steady_s: float) -> ProbeSettings:
    return ProbeSettings(
        tick_rate=args.rate, send_rate=args.rate, ramp=args.ramp, settle_s=args.settle_s, steady_s=steady_s
    )


async def _turn(
    args: argparse.Namespace,
    kind: str,
    loop: str,
    workdir: Path,
    index: int,
    steady_s: float,
    on_window: Callable[[int, float], Coroutine[Any, Any, Any]] | None = None,
) -> dict[str, Any]:
    server_args = (
        "--loop",
        loop,
        *(("--fastpath",) if kind in (FAST, TWINS) else ()),
        *(("--read-per-packet",) if kind == TWINS else ()),
    )
    saved = {name: os.environ.get(name) for name in ("TICKLINE_NO_EXTENSIONS", "TICKLINE_REQUIRE_EXTENSIONS")}
    if kind == TWINS:  # the server process (a child) inherits this
        os.environ["TICKLINE_NO_EXTENSIONS"], os.environ["TICKLINE_REQUIRE_EXTENSIONS"] = "1", ""
    try:
        p = await probe_ceiling(
            args.n,
            _settings(args, steady_s),
            workdir,
            index,
            args.delta_bytes,
            args.input_bytes,
            server_args=server_args,
            client_loop="auto",
            on_window=on_window,
        )
    except Exception as exc:  # noqa: BLE001 - a broken turn is reported, not fatal
        p = {"pass": False, "why": [f"turn error: {type(exc).__name__}: {exc}"]}
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    p.update(kind=kind, loop=loop)
    say(
        f"  {kind:8s} {loop:7s} n={args.n}: {p.get('us_per_message')} us/message, server cpu "
        f"{p.get('server_cpu_percent')}%, clients cpu {p.get('generator_cpu_percent')}%, "
        f"{p.get('received_per_s')} in/s {p.get('sent_per_s')} out/s, fast share down {p.get('fast_share_down')}"
        + ("" if p.get("pass") else f"  [{'; '.join(p.get('why', []))}]")
    )
    return p


def _brief(p: dict[str, Any]) -> dict[str, Any]:
    keys = (
        "kind",
        "loop",
        "us_per_message",
        "server_cpu_percent",
        "received_per_s",
        "sent_per_s",
        "fast_share_down",
        "tick_late_ms_p99",
        "recv_share_min",
        "generator_cpu_percent",
        "other_on_server_cpu_percent",
        "other_on_load_cpus_percent",
        "generator_saturated",
        "pass",
        "why",
    )
    return {k: p.get(k) for k in keys}


def _compare(turns: list[dict[str, Any]], a: tuple[str, str], b: tuple[str, str]) -> dict[str, Any]:
    """Median of ``a``'s and ``b``'s us/message, and of the per-round ratios a/b, with their spread."""
    values, baselines, ratios = [], [], []
    for r in sorted({t["round"] for t in turns}):
        x = next((t.get("us_per_message") for t in turns if t["round"] == r and (t["kind"], t["loop"]) == a), None)
        y = next((t.get("us_per_message") for t in turns if t["round"] == r and (t["kind"], t["loop"]) == b), None)
        values += [x] if x else []
        baselines += [y] if y else []
        if x and y:
            ratios.append(x / y)
    return {
        "value": rnd(med(values), 2),
        "baseline": rnd(med(baselines), 2),
        "ratio": rnd(med(ratios), 3),
        "spread": [rnd(min(ratios), 3), rnd(max(ratios), 3)] if ratios else None,
        "runs": len(ratios),
        "values": [rnd(v, 2) for v in values],
        "baselines": [rnd(v, 2) for v in baselines],
    }


def _caveats(turns: list[dict[str, Any]]) -> list[str]:
    out = []
    for t in turns:
        name = f"round {t['round']} {t['kind']}/{t['loop']}"
        if not t.get("pass"):
            out.append(f"{name}: {'; '.join(t.get('why') or ['failed'])}")
        if t.get("generator_saturated"):
            out.append(f"{name}: the clients' CPU was >= 90% busy (other processes included)")
        if t["kind"] in (FAST, TWINS) and t.get("fast_share_down") is not None and t["fast_share_down"] < 0.95:
            out.append(f"{name}: only {t['fast_share_down']:.0%} of deltas came on the fast path")
    return out


async def run_figures(args: argparse.Namespace, report: Report, workdir: Path) -> None:
    main_loop = loops.loop_name(loops.loop_factory(args.loop))
    have_uvloop = loops.loop_factory("auto") is not None
    configs = [(FAST, main_loop), (QUIC, main_loop)]
    other = "asyncio" if main_loop == "uvloop" else "uvloop"
    if have_uvloop:
        configs += [(FAST, other), (QUIC, other)]
    native_built = native.native()
    if native_built:
        configs.append((TWINS, main_loop))
    steady_s = args.seconds if args.seconds is not None else (3.0 if args.quick else 6.0)
    runs = args.runs if args.runs is not None else (2 if args.quick else 3)
    _, _, pinning = cpu_plan()
    say(
        f"transport bench: n={args.n} clients, {args.rate} Hz each way, inputs {args.input_bytes} B, deltas "
        f"{args.delta_bytes} B; {runs} rounds of {len(configs)} turns, {steady_s:g} s windows; {pinning}"
    )
    turns: list[dict[str, Any]] = []
    index = 0
    for r in range(runs):
        say(f"round {r + 1}/{runs}")
        for kind, loop in configs if r % 2 == 0 else configs[::-1]:
            busy = await wait_for_quiet(args.wait_quiet)
            p = _brief(await _turn(args, kind, loop, workdir, index, steady_s))
            p.update(round=r + 1, machine_busy_percent_before=busy)
            turns.append(p)
            index += 1
    common = {
        "unit": "us/message",
        "cores": CORES,
        "python": platform.python_version(),
        "n": args.n,
        "rate_hz": args.rate,
        "input_bytes": args.input_bytes,
        "delta_bytes": args.delta_bytes,
        "window_s": steady_s,
        "pinning": pinning,
        "caveats": _caveats(turns) or None,
    }
    fast = _compare(turns, (FAST, main_loop), (QUIC, main_loop))
    extra = {}
    if have_uvloop:
        extra = {f"on_{other}": _compare(turns, (FAST, other), (QUIC, other))}
    report.emit(
        {
            "figure": "transport_us_per_msg_fastpath",
            **fast,
            "baseline_of": f"QUIC datagrams (aioquic), same server code, sizes, rates, clients and loop ({main_loop}), "
            "same run",
            "target": f"<= {TARGET_RATIO}",
            "holds": None if fast["ratio"] is None else fast["ratio"] <= TARGET_RATIO,
            "loop": main_loop,
            **extra,
            **common,
            "turns": turns,
        }
    )
    if native_built:
        twins = _compare(turns, (FAST, main_loop), (TWINS, main_loop))
        report.emit(
            {
                "figure": "fastpath_native_us_per_msg",
                **twins,
                "baseline_of": "the same fast-path turns with TICKLINE_NO_EXTENSIONS=1 (every module on its "
                "pure-Python twin: a seal by the cryptography package and one sendto a packet) and the event "
                "loop reading each packet as it comes (--read-per-packet), as before the native core; same run",
                "target": f"<= {NATIVE_TARGET}",
                "holds": None if twins["ratio"] is None else twins["ratio"] <= NATIVE_TARGET,
                "loop": main_loop,
                **common,
            }
        )
    if not have_uvloop:
        report.emit(
            {
                "figure": "fastpath_us_per_msg_uvloop",
                "value": None,
                "baseline": None,
                "ratio": None,
                "skipped": "uvloop is not installed (the 'fast' extra)",
                "target": "none (reported)",
                "holds": None,
                **common,
            }
        )
        return
    uv = _compare(turns, (FAST, "uvloop"), (FAST, "asyncio"))
    quic = _compare(turns, (QUIC, "uvloop"), (QUIC, "asyncio"))
    report.emit(
        {
            "figure": "fastpath_us_per_msg_uvloop",
            **uv,
            "baseline_of": "the same fast-path turns with the server on asyncio's own event loop, same run",
            "target": "none (reported)",
            "holds": None,
            "quic_us_per_msg_uvloop": quic["value"],
            "quic_us_per_msg_asyncio": quic["baseline"],
            "quic_ratio": quic["ratio"],
            "quic_spread": quic["spread"],
            **common,
        }
    )


def format_profile(summary: dict[str, Any], top: int, context: dict[str, Any]) -> str:
    if "error" in summary:
        return f"profile failed: {summary['error']}\n"
    areas: dict[str, float] = {}
    for row in summary["self"]:
        area = next((name for name, marks in PROFILE_AREAS if any(m in row["frame"] for m in marks)), "other")
        areas[area] = areas.get(area, 0.0) + row["share"]
    lines = [
        f"fast-path server, py-spy self time: {context}",
        f"{summary['busy_samples']} busy samples of {summary['samples']} (the rest: waiting in select/epoll). "
        "Shares are of the busy samples; without --native, time in C code counts for the Python function "
        "that called it.",
        "",
        "by area:",
        *(f"  {share:6.1%}  {area}" for area, share in sorted(areas.items(), key=lambda x: -x[1])),
        "",
        "top self time:",
        *(f"  {row['share']:6.1%}  {row['frame']}" for row in summary["self"][:top]),
        "",
        "top inclusive time:",
        *(f"  {row['share']:6.1%}  {row['frame']}" for row in summary["inclusive"][:top]),
    ]
    return "\n".join(lines) + "\n"


async def run_profile(args: argparse.Namespace, workdir: Path) -> None:
    out = Path(args.profile)
    raw = out.with_name(out.name + ".raw")
    loop = loops.loop_name(loops.loop_factory(args.loop))
    say(
        f"profiling the fast-path server ({loop}, n={args.n}, {args.rate} Hz) for {args.profile_seconds:g} s "
        f"at {args.profile_rate} samples/s"
    )

    recorded: dict[str, Any] = {"error": "the turn never reached its window"}

    async def record(pid: int, seconds: float) -> None:
        recorded.clear()
        recorded.update(await profile_process(pid, seconds, raw, rate=args.profile_rate, native=args.profile_native))

    p = await _turn(args, FAST, loop, workdir, 0, args.profile_seconds, on_window=record)
    # Summarised again with more rows than profile_process keeps: the areas count every frame.
    summary = recorded if "error" in recorded else summarize_profile(raw, top=200)
    text = format_profile(
        summary,
        25,
        {"n": args.n, "rate_hz": args.rate, "loop": loop, "us_per_message_under_py_spy": p.get("us_per_message")},
    )
    out.write_text(text)  # noqa: ASYNC240 - a small local file, after the turn
    say(text)
    say(f"wrote {out} (raw samples: {raw})")


async def amain(args: argparse.Namespace) -> int:
    workdir = Path(tempfile.mkdtemp(prefix="tlbench-transport-"))
    began = time.monotonic()
    try:
        if args.profile:
            await run_profile(args, workdir)
        else:
            await run_figures(args, Report(Path(args.json_out) if args.json_out else None), workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    say(f"done in {time.monotonic() - began:.0f} s")
    return 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.transport", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="about a minute: 2 rounds of 3 s windows")
    parser.add_argument("--json-out", metavar="FILE", help="also write the JSON lines to FILE")
    parser.add_argument(
        "--n",
        type=int,
        default=50,
        help="clients (default: 50; QUIC at 60 Hz each way then takes 60-80 %% of a core for the "
        "server and about as much for the clients)",
    )
    parser.add_argument("--rate", type=int, default=60, help="inputs and deltas per second each way (default: 60)")
    parser.add_argument("--input-bytes", type=int, default=36, help="bytes of each input (default: 36)")
    parser.add_argument("--delta-bytes", type=int, default=120, help="bytes of each delta (default: 120)")
    parser.add_argument("--runs", type=int, help="rounds (default: 3; --quick 2)")
    parser.add_argument("--seconds", type=float, help="seconds of each turn's window (default: 6; --quick 3)")
    parser.add_argument("--settle-s", type=float, default=1.0, help="seconds after every client is in (default: 1)")
    parser.add_argument("--ramp", type=float, default=100.0, help="clients started per second (default: 100)")
    parser.add_argument(
        "--wait-quiet",
        type=float,
        metavar="S",
        help="before each turn, wait up to S s for other processes to quieten (default: 5; --quick 2)",
    )
    parser.add_argument(
        "--loop",
        default="auto",
        choices=loops.LOOPS,
        help="the server's loop for figure 1 (default: uvloop where installed)",
    )
    parser.add_argument(
        "--profile",
        metavar="FILE",
        help="instead of the figures: one fast-path turn with py-spy on the server; a self-time "
        "summary to FILE (raw samples to FILE.raw) and stderr",
    )
    parser.add_argument("--profile-seconds", type=float, default=10.0, help="py-spy's window (default: 10)")
    parser.add_argument("--profile-rate", type=int, default=250, help="py-spy samples per second (default: 250)")
    parser.add_argument(
        "--profile-native",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="py-spy --native: C frames too (uvloop, AES-GCM, system calls; default: on)",
    )
    args = parser.parse_args(argv)
    if args.wait_quiet is None:
        args.wait_quiet = 2.0 if args.quick else 5.0
    sizes_ok = 1 <= args.input_bytes <= MAX_DATAGRAM and 1 <= args.delta_bytes <= MAX_DATAGRAM
    if args.n < 1 or args.rate < 1 or not sizes_ok:
        parser.error(f"--n and --rate must be positive, --input-bytes and --delta-bytes 1 to {MAX_DATAGRAM}")
    try:
        loops.loop_factory(args.loop)
    except loops.LoopUnavailable as exc:
        parser.error(str(exc))
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return asyncio.run(amain(args))


if __name__ == "__main__":
    sys.exit(main())
