"""Hostile senders against a real `tickline serve`: what a flood costs the matches and the server.

    .venv/bin/python -m bench.security [--quick] [--json-out FILE] [--rounds N] [--seconds S]

One server (arena, 60 Hz ticks, 30 Hz sends, the gate's defaults) pinned to the first CPU,
eight bots in a `tickline bots` process and every sender here on the other:

- ``tick_late_p99_under_handshake_flood_ms``: the server's tick lateness p99 (its
  `/metrics` histogram over each window) while a flood runs, against the same match in a
  quiet window, turn about. The flood, per second: real handshakes (aioquic clients that
  connect and close), genuine ClientHellos from a socket that never answers, and
  Initials with random connection ids and random payloads;
- ``handshakes_refused_cpu_us``: the server's CPU per Initial it turned away (random
  ones, which do not decrypt) and per hello it answered with a Retry (once its address is
  over budget), against its CPU per completed handshake: each the CPU above a quiet
  window's, on a second server with no match running (a match's own CPU varies too much
  with what its bots do to subtract);
- ``amplification_quic``: what a server sends a forged source address (a socket that
  never answers) against what that address sent, until the server gives up, with the
  handshake admitted (aioquic's limit applies) and with `--retry always`;
- ``amplification_fastpath``: the same for the fast path (`FastPath` as the endpoint runs
  it, with a recording transport): random fast-path packets (bytes out over bytes in), and
  authentic packets from new addresses, each size up to 1200 bytes (the largest reply
  over the packet that prompted it);
- ``fuzz_execs_per_s``: each fuzz target's inputs a second under atheris (fuzz/run.py), on
  a scratch copy of its corpus, for ``--seconds`` each.

Figures are BENCH.md's JSON lines (docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import os
import platform
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench.hostile import Silent, client_initials, paced, random_initial, real_handshakes
from bench.report import Report, med, rnd, round_args, sig
from bench.serve import HOST, Serve
from fuzz.run import run as fuzz_run
from fuzz.targets import TARGETS
from tickline.bots.metrics import histogram_buckets, histogram_quantile, sample_sum, scrape
from tickline.bots.procstat import CORES, affinity, cpu_plan
from tickline.server.fastpath import FastPath
from tickline.shared.fastpath import DATA, client_ends

BOTS = 8
LATENESS = "tickline_server_tick_lateness_seconds"
# The flood, per second.
REAL_HANDSHAKES_PER_S = 15
SILENT_HELLOS_PER_S = 200
RANDOM_INITIALS_PER_S = 1000


def say(message: str) -> None:
    print(f"[security] {message}", file=sys.stderr, flush=True)


class Bench:
    def __init__(self, server: Serve, seconds: float) -> None:
        self.server, self.seconds = server, seconds
        self.port = server.ready["port"]
        self.metrics = server.ready["http_url"] + "metrics"

    async def window(self, flood: str) -> dict[str, Any]:
        """One window of ``seconds``: its lateness p99, the server's CPU seconds, what was sent."""
        before = await scrape(self.metrics)
        cpu0 = self.server.cpu_s()
        sent: dict[str, int] = {}
        silent = Silent()
        try:
            async with asyncio.TaskGroup() as tg:
                if flood in ("flood", "real"):
                    real = tg.create_task(real_handshakes(self.port, REAL_HANDSHAKES_PER_S, self.seconds))
                if flood in ("flood", "hellos"):
                    hellos = iter(client_initials(self.port, int(SILENT_HELLOS_PER_S * self.seconds) + 10))
                    tg.create_task(
                        paced(SILENT_HELLOS_PER_S, self.seconds, lambda: silent.send(next(hellos), self.port))
                    )
                if flood in ("flood", "random"):
                    tg.create_task(
                        paced(RANDOM_INITIALS_PER_S, self.seconds, lambda: silent.send(random_initial(), self.port))
                    )
                await asyncio.sleep(self.seconds)  # the window's length
            if flood in ("flood", "real"):
                sent["real"] = real.result()
        finally:
            silent.close()
        cpu1 = self.server.cpu_s()
        after = await scrape(self.metrics)
        p99 = histogram_quantile(0.99, histogram_buckets(before, LATENESS), histogram_buckets(after, LATENESS))
        refused = {
            reason: sample_sum(after, "tickline_quic_refused_total", reason=reason)
            - sample_sum(before, "tickline_quic_refused_total", reason=reason)
            for reason in ("undecryptable", "half_open_per_address", "budget_per_address")
        }
        retries = sample_sum(after, "tickline_quic_retries_total") - sample_sum(before, "tickline_quic_retries_total")
        return {"p99_ms": (p99 or 0.0) * 1000, "cpu_s": cpu1 - cpu0, "refused": refused, "retries": retries, **sent}


async def amplification_quic(work: Path, retry: str) -> float:
    """Bytes a forged address got back over bytes it sent: ten hellos, each from its own socket."""
    async with Serve(work / f"amp-{retry}", "--retry", retry, "--handshake-timeout", "1") as server:
        port = server.ready["port"]
        senders = [Silent() for _ in range(10)]
        try:
            for sender, hello in zip(senders, client_initials(port, 10), strict=True):
                sender.send(hello, port)
            await asyncio.sleep(3.5)  # the handshake timeout, then aioquic's draining period
            back = sum(s.drain() for s in senders)
            return back / sum(s.sent for s in senders)
        finally:
            for sender in senders:
                sender.close()


class Recorder:
    """A transport that records what the fast path sends, and where."""

    def __init__(self) -> None:
        self.sent = 0

    def sendto(self, data: bytes, addr: Any = None) -> None:
        self.sent += len(data)


async def amplification_fastpath() -> tuple[float, float]:
    """(random packets: bytes out over bytes in; authentic packets from new addresses: the
    largest reply over the packet that prompted it).
    (A coroutine only because FastPath reads its clock from the running loop.)"""
    fast, recorder = FastPath(), Recorder()
    fast.transport = recorder  # type: ignore[assignment]  # (what the endpoint sets: a datagram transport)
    route = fast.open_route(lambda _body: None, lambda: (HOST, 1000))
    sealer, _ = client_ends(route.keys)
    received = 0
    for i in range(1000):
        packet = bytes([0x01]) + os.urandom(16 + i % 1184)
        fast.datagram_received(packet, (HOST, 20000 + i))
        received += len(packet)
    random_ratio = recorder.sent / received
    fast.datagram_received(sealer.seal(DATA, b"hello"), (HOST, 1000))  # from QUIC's own address: the route's
    worst = 0.0
    for i, size in enumerate(range(0, 1184, 8)):
        packet = sealer.seal(DATA, os.urandom(size))
        before = recorder.sent
        fast.datagram_received(packet, (HOST, 30000 + i))  # authentic, from an address not yet seen
        worst = max(worst, (recorder.sent - before) / len(packet))
    return random_ratio, worst


async def run(args: argparse.Namespace, report: Report, work: Path, common: dict[str, Any]) -> None:
    server_cpus, client_cpus, plan = cpu_plan()
    say(plan)
    total_s = args.rounds * 2 * (args.seconds + 2) + 60
    windows: dict[str, list[dict[str, Any]]] = {k: [] for k in ("quiet", "flood")}
    async with Serve(work / "serve", "--http-port", "0", "--no-require-tokens", "--set", "time_limit_s=3600",
                     "--set", "score_limit=100000") as server:  # fmt: skip
        server.pin(server_cpus)
        say(f"server pid {server.pid} at {server.ready['http_url']}; {BOTS} bots for at most {total_s:.0f} s")
        with affinity(client_cpus):
            bots = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "tickline", "bots", "--server", f"{HOST}:{server.ready['port']}",
                "--n", str(BOTS), "--duration", str(total_s), "--cafile", server.ready["cert"], "--quiet",
                stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
            )  # fmt: skip
            try:
                await asyncio.sleep(3)  # the bots join and the match starts: not measured
                await _windows(Bench(server, args.seconds), args.rounds, windows)
            finally:
                if bots.returncode is None:
                    bots.terminate()
                await bots.wait()
    # The CPU of each kind of attempt, on a server of its own with no match running, so
    # that a match's own CPU (which varies with what the bots do) does not drown it.
    costs: dict[str, list[dict[str, Any]]] = {k: [] for k in ("idle", "real", "hellos", "random")}
    async with Serve(work / "idle", "--http-port", "0", "--no-require-tokens") as idle:
        idle.pin(server_cpus)
        with affinity(client_cpus):
            await _windows(Bench(idle, args.seconds), args.rounds, costs)
    windows.update(costs)
    _emit_flood(report, windows, common)
    for retry in ("never", "always"):
        ratio = await amplification_quic(work, retry)
        report.emit(
            {
                "figure": "amplification_quic",
                "value": rnd(ratio, 3),
                "unit": "bytes sent / bytes received, to an address that never answers",
                "baseline": None,
                "baseline_of": None,
                "ratio": None,
                "target": "<= 3",
                "holds": ratio <= 3,
                "runs": 1,
                "spread": None,
                "retry": retry,
                **common,
            }
        )


async def _windows(bench: Bench, rounds: int, windows: dict[str, list[dict[str, Any]]]) -> None:
    for r in range(rounds):
        for kind, kept in windows.items():
            w = await bench.window(kind)
            kept.append(w)
            say(f"round {r + 1} {kind:6} p99 {w['p99_ms']:5.2f} ms cpu {w['cpu_s']:.3f} s {w}")


def _emit_flood(report: Report, windows: dict[str, list[dict[str, Any]]], common: dict[str, Any]) -> None:
    quiet, flood = windows["quiet"], windows["flood"]
    added = [f["p99_ms"] - q["p99_ms"] for f, q in zip(flood, quiet, strict=True)]
    report.emit(
        {
            "figure": "tick_late_p99_under_handshake_flood_ms",
            "value": rnd(med([f["p99_ms"] for f in flood]), 3),
            "unit": "ms",
            "baseline": rnd(med([q["p99_ms"] for q in quiet]), 3),
            "baseline_of": "the same match in a quiet window, turn about",
            "ratio": None,
            "added_ms": rnd(med(added), 3),
            "target": "added < 1 ms",
            "holds": med(added) < 1.0,
            "runs": len(flood),
            "spread": [rnd(min(added), 3), rnd(max(added), 3)],
            "flood_per_s": {
                "real_handshakes": REAL_HANDSHAKES_PER_S,
                "silent_hellos": SILENT_HELLOS_PER_S,
                "random_initials": RANDOM_INITIALS_PER_S,
            },
            **common,
        }
    )

    def cost_us(kind: str, attempts: str) -> list[float]:
        """The idle server's CPU per attempt of ``kind``'s windows, above its quiet window of the same round."""
        out = []
        for w, q in zip(windows[kind], windows["idle"], strict=True):
            if attempts == "undecryptable":
                count = w["refused"]["undecryptable"]
            elif attempts == "turned away":  # answered with a Retry, or dropped at a cap or the budget
                count = w["retries"] + w["refused"]["half_open_per_address"] + w["refused"]["budget_per_address"]
            else:
                count = w[attempts]
            out.append((w["cpu_s"] - q["cpu_s"]) / max(1, count) * 1e6)
        return out

    per = {"random": cost_us("random", "undecryptable"), "hellos": cost_us("hellos", "turned away")}
    completed = cost_us("real", "real")
    turned_away = "a genuine hello turned away (a Retry, or dropped at a cap)"
    for kind, name in (("random", "an Initial that does not decrypt"), ("hellos", turned_away)):
        ratios = [c / b for c, b in zip(per[kind], completed, strict=True) if b > 0]
        report.emit(
            {
                "figure": "handshakes_refused_cpu_us",
                "value": rnd(med(per[kind]), 1),
                "unit": "µs of server CPU per attempt",
                "of": name,
                "baseline": rnd(med(completed), 1),
                "baseline_of": "server CPU per completed handshake (aioquic clients that connect and close)",
                "ratio": sig(med(ratios)) if ratios else None,
                "target": None,
                "holds": None,
                "runs": len(per[kind]),
                "spread": [sig(min(ratios)), sig(max(ratios))] if ratios else None,
                **common,
            }
        )


def emit_fuzz(report: Report, seconds: float, scratch: Path, common: dict[str, Any]) -> None:
    if importlib.util.find_spec("atheris") is None:
        say("no atheris: pip install -e '.[dev]'; no fuzz figures")
        return
    for target in sorted(TARGETS):
        result = fuzz_run(target, seconds, scratch)
        report.emit(
            {
                "figure": "fuzz_execs_per_s",
                "fuzz_target": target,
                "value": result["execs_per_s"],
                "unit": "inputs/s (atheris, coverage-guided)",
                "runs_total": result["runs"],
                "crashed": result["crashed"],
                "baseline": None,
                "baseline_of": None,
                "ratio": None,
                "target": None,
                "holds": not result["crashed"],
                "runs": 1,
                "spread": None,
                **common,
            }
        )


def main(argv: list[str] | None = None) -> int:
    _, args = round_args("python -m bench.security", __doc__ or "", argv, (3, 1), (8.0, 4.0), "window")
    report = Report(args.json_out)
    common = {"cores": CORES, "python": platform.python_version()}
    random_ratio, replay_ratio = asyncio.run(amplification_fastpath())
    report.emit(
        {
            "figure": "amplification_fastpath",
            "value": rnd(max(random_ratio, replay_ratio), 3),
            "unit": "bytes sent / bytes received",
            "random_packets": rnd(random_ratio, 3),
            "authentic_from_new_addresses": rnd(replay_ratio, 3),
            "baseline": None,
            "baseline_of": None,
            "ratio": None,
            "target": "<= 1",
            "holds": max(random_ratio, replay_ratio) <= 1,
            "runs": 1,
            "spread": None,
            **common,
        }
    )
    work = Path(tempfile.mkdtemp(prefix="bench-security-"))
    try:
        asyncio.run(run(args, report, work, common))
        emit_fuzz(report, args.seconds, work / "fuzz", common)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
