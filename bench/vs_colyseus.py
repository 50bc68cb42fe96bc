#!/usr/bin/env python
"""tickline against Colyseus 0.18 on the same arena scenario, side by side (BENCH.md rules).

    .venv/bin/python bench/vs_colyseus.py [--quick] [--json-out FILE] [--n 200] [--seconds S]
    .venv/bin/python bench/vs_colyseus.py --profile out.txt     # py-spy of tickline at 60 Hz, no figures

N players (200) in rooms of 50, 60 Hz simulation, state sent at 20 Hz and at 60 Hz.
Each round runs, for each send rate, the peer then tickline (peer, tickline, peer,
tickline ...):

- the peer: ``../shared/peers/colyseus/run.sh N HZ 50 SECONDS`` (Colyseus server
  pinned to CPU 0, its Node load client to CPU 1), its JSON line read back;
- tickline: ``python -m tickline serve`` with the peer's rules (GAME_SETTINGS below),
  pinned to CPU 0, and ``bots.loadtest.run_load`` with N ``wander`` bots (the peer's bot)
  in worker processes pinned to CPU 1 (this process pins itself there first, and
  the workers inherit it). Figures are taken over a steady window after the ramp.

Six figures, ratio = tickline / Colyseus, lower is better for all (bench/README.md):
cpu_per_player_{20,60}hz, down_bytes_per_player_{20,60}hz, input_to_visible_p99_{20,60}hz.
Only stdout carries the JSON lines; progress goes to stderr. Everything binds
127.0.0.1; what this starts is stopped by its PID.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.report import Report, med, rnd  # noqa: E402

import orjson  # noqa: E402

import tickline.bots.client as client_module  # noqa: E402
import tickline.bots.loadtest as loadtest  # noqa: E402
from tickline.bots.client import ClientOptions  # noqa: E402
from tickline.bots.loadtest import LoadConfig, Scrape, run_load, scrape, server_window  # noqa: E402
from tickline.transport_ceiling import loopback_connect  # noqa: E402
from tickline import loops  # noqa: E402

HOST = "127.0.0.1"
# shared/ lies beside the checkout (../shared); TICKLINE_PEER_DIR overrides.
PEER_DIR = Path(os.environ.get("TICKLINE_PEER_DIR") or Path(__file__).resolve().parents[2] / "shared" / "peers" / "colyseus")
PEER_FILES = (".npmrc", "package.json", "package-lock.json", "server.js", "loadclient.js", "summarize.js")
ROOM_SIZE = 50
TICK_RATE = 60
RATES = (20, 60)
RAMP_PER_S = 40.0  # bots started per second
PEER_INPUT_HZ = 30  # the peer's bots send one input message at 30 Hz; ours make and send inputs as often
SERVER_SEED = 7
BOT_SEED = 1
BOT_SATURATED_PCT = 90.0  # load generator CPU (% of its one core) above which it is the bottleneck
SERVER_SATURATED_PCT = 90.0
BUSY_OTHER_PCT = 25.0  # other processes' CPU (% of a core) worth a caveat
# Set from the command line: the event loop (server and bots) and whether the fast path is used.
LOOP = "auto"
FASTPATH = True
SERVE_EXTRA: list[str] = []

# The peer's rules (server.js), in the arena's config keys (shared/arena.py default_config).
GAME_SETTINGS: dict[str, Any] = {
    "max_players": ROOM_SIZE,  # rooms of 50
    "width": 1000, "height": 1000,  # ARENA = 1000
    "player_speed": 200,  # SPEED = 200 units/s
    "weapon": "hitscan",  # fire hits the nearest other player in range at once
    "hitscan_range": 150,  # FIRE_RANGE = 150
    "fire_cooldown_ms": 500,  # FIRE_COOLDOWN = 0.5 s
    "projectile_damage": 10,  # DAMAGE = 10
    "max_hp": 100,  # hp 100
    "view_radius": 0,  # every player sees the whole room
    "lag_comp_ms": 0,  # the peer judges shots at the present: no rewind
    "respawn_ms": 1,  # the peer respawns at once; ours must be positive: 1 tick
    "player_radius": 1,  # the peer clamps positions to [0, 1000]; ours to [radius, 1000 - radius]
    "pickup_every_ms": 3_600_000,  # the peer has no health pickups: none within the match
    "time_limit_s": 3600,  # no match ends inside a run
    "score_limit": 100000,
}

DIFFERENCES = [
    "movement: the peer's bots move along any angle (unit vector) and stand still 10% of the time; "
    "the arena has 8 directions and the wander bot never stands still (diagonals are as fast as straight moves)",
    "inputs: the peer's bots send one input message at 30 Hz, applied on arrival; tickline bots make one input "
    "every 2 ticks (30/s) that holds for 2 ticks, and send each at once in its own datagram, which repeats every "
    "unconfirmed input; the server applies it at its next tick",
    "respawn: the peer respawns a killed player in the same tick; the arena's shortest respawn is 1 tick (16.7 ms)",
    "bounds: the peer clamps positions to [0, 1000]; the arena to [1, 999] (player_radius must be positive)",
    "hitscan range test: the peer hits d < 150, the arena d <= 150; the peer resolves shots inside its move loop "
    "(targets later in the loop not yet moved), the arena after every player moved",
    "state: the peer sends x, y, vx, vy (float32), hp, score, ack in Colyseus schema binary patches; tickline sends "
    "name, x, y (0.1-unit steps), hp, score, alive as orjson deltas against each client's acknowledged view "
    "(integers as increments), raw-deflated in packed delta datagrams, plus tick, base and seq (the newest input "
    "applied) in every delta",
    "transport: the peer is WebSocket over TCP without TLS; tickline does the TLS 1.3 handshake and its control "
    "stream over QUIC (aioquic), then carries inputs and deltas on its fast path (AES-GCM sealed UDP packets on "
    "the same port) unless run with --no-fastpath (QUIC datagrams)",
    "work the peer does not do: tickline appends every tick (inputs, events, state hash) to its SQLite event log "
    "and keeps a full keyframe every second; it hashes the state every tick",
    "latency sampling: both take one sample per state update whose acknowledged input moved, for that input (the "
    "seq that comes back); the peer on 4 observer clients, tickline on every bot (every_input_lat_p99_ms also counts "
    "each input a newer one superseded before any update named it, with its own longer wait); tickline applies "
    "inputs behind an adaptive jitter buffer (an input brings two ticks, so one that comes applies at the next tick)",
    "load generators: the peer's is one Node process; tickline's is Python (aioquic client) in worker processes, "
    "both pinned to CPU 1; tickline's bots in one process decode and apply each delta the server shared "
    "between them once (bots.world.SharedViews), the peer's clients each decode their own patches",
]

CORES = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
PYTHON = platform.python_version()
CLK_TCK = os.sysconf("SC_CLK_TCK")


# --------------------------------------------------------------------------- the bot workers (spawned)

_ORIGINAL_WORKER = loadtest._worker


def _quiet_handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    # aioquic leaves a ConnectionError in a future nobody awaits whenever a connection
    # is lost; the bots count lost connections themselves, so one line each is noise.
    if isinstance(context.get("exception"), ConnectionError) and "never retrieved" in context.get("message", ""):
        return
    loop.default_exception_handler(context)


def _loopback_worker(cfg: dict[str, Any], *args: Any) -> None:
    """run_load's worker, in its spawned process: bots bind 127.0.0.1, nothing reaches stdout."""
    os.dup2(2, 1)  # stdout carries only this bench's JSON lines
    client_module.connect = loopback_connect  # type: ignore[assignment]
    make_loop = cfg["loop_factory"] or asyncio.new_event_loop

    def quiet_loop() -> asyncio.AbstractEventLoop:
        loop = make_loop()
        loop.set_exception_handler(_quiet_handler)
        return loop

    _ORIGINAL_WORKER({**cfg, "loop_factory": quiet_loop}, *args)


# --------------------------------------------------------------------------- watching run_load (this process)


class _StampedList(list):
    """run_load's list of latencies, remembering when each second's batch arrived."""

    def __init__(self) -> None:
        super().__init__()
        self.marks: list[tuple[float, int]] = []  # (monotonic time, index of the batch's first item)

    def __iadd__(self, other: Any) -> _StampedList:  # type: ignore[override, misc]
        self.marks.append((time.monotonic(), len(self)))
        return list.__iadd__(self, other)  # type: ignore[return-value]

    def between(self, begin: float, end: float) -> list[float]:
        out: list[float] = []
        for i, (t, first) in enumerate(self.marks):
            last = self.marks[i + 1][1] if i + 1 < len(self.marks) else len(self)
            if begin < t <= end:
                out += self[first:last]
        return out


class _Watch:
    """What this process sees of the current run_load: latencies, the bots' totals over time."""

    def __init__(self) -> None:
        self.latencies = _StampedList()
        self.ack_latencies = _StampedList()
        self.totals: list[tuple[float, dict[str, Any]]] = []


WATCH = _Watch()
_ORIGINAL_TOTALS = loadtest._totals


class _Timeline:
    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []
        self.latencies = WATCH.latencies
        self.ack_latencies = WATCH.ack_latencies


def _stamped_totals(latest: dict[int, dict[str, Any]]) -> dict[str, Any]:
    out = _ORIGINAL_TOTALS(latest)
    WATCH.totals.append((time.monotonic(), out))
    return out


def install_hooks() -> None:
    """Only in this process (never in the spawned workers): nothing outside bench/ changes."""
    loadtest._worker = _loopback_worker  # type: ignore[assignment]
    loadtest.Timeline = _Timeline  # type: ignore[assignment, misc]
    loadtest._totals = _stamped_totals  # type: ignore[assignment]


# --------------------------------------------------------------------------- reporting


def say(message: str) -> None:
    print(f"[vs_colyseus] {message}", file=sys.stderr, flush=True)


def sig(value: float, figures: int = 3) -> float:
    return float(f"{value:.{figures}g}") if value and math.isfinite(value) else value


# --------------------------------------------------------------------------- process accounting


def proc_cpu_s(pid: int) -> float:
    """utime + stime of process ``pid`` (all its threads), from /proc/PID/stat."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        stat = f.read()
    rest = stat[stat.rindex(b")") + 2:].split()
    return (int(rest[11]) + int(rest[12])) / CLK_TCK


def self_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def cpu_lines() -> dict[str, tuple[int, int]]:
    """/proc/stat: per 'cpu', 'cpu0', 'cpu1' ...: (busy jiffies, total jiffies)."""
    out = {}
    with open("/proc/stat") as f:
        for line in f:
            if not line.startswith("cpu"):
                break
            name, *vals = line.split()
            v = [int(x) for x in vals[:8]]
            busy = v[0] + v[1] + v[2] + v[5] + v[6] + v[7]
            out[name] = (busy, busy + v[3] + v[4])
    return out


def busy_pct(a: dict[str, tuple[int, int]], b: dict[str, tuple[int, int]], name: str) -> float | None:
    """Busy share of ``name`` between two readings, in % of one core (for 'cpu': summed over cores)."""
    if name not in a or name not in b:
        return None
    busy, total = b[name][0] - a[name][0], b[name][1] - a[name][1]
    scale = CORES if name == "cpu" else 1
    return 100 * scale * busy / max(1, total)


def udp_rcvbuf_errors() -> int:
    try:
        with open("/proc/net/snmp") as f:
            rows = [line.split() for line in f if line.startswith("Udp:")]
        return int(rows[1][rows[0].index("RcvbufErrors")])
    except (OSError, ValueError, IndexError):
        return 0


def children(pid: int) -> list[int]:
    out: list[int] = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                out += [int(x) for x in f.read().split()]
    except OSError:
        pass
    return out


def bot_workers() -> list[int]:
    """run_load's spawned bot workers: this process's multiprocessing children, not the resource tracker."""
    out = []
    for pid in children(os.getpid()):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read()
        except OSError:
            continue
        if b"multiprocessing" in cmd and b"spawn_main" in cmd:
            out.append(pid)
    return out


def pin(pid: int, cpus: set[int]) -> None:
    """Every thread of ``pid`` to ``cpus`` (threads made later inherit it)."""
    try:
        tids = [int(t) for t in os.listdir(f"/proc/{pid}/task")]
    except OSError:
        tids = [pid]
    for tid in tids:
        try:
            os.sched_setaffinity(tid, cpus)
        except OSError:
            pass


def pinning() -> bool:
    return CORES >= 2 and hasattr(os, "sched_setaffinity")


def free_tcp_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


async def wait_quiet(limit_s: float, quiet_pct: float = 15.0) -> None:
    """run.sh's WAIT_QUIET, for tickline's turns too: up to ``limit_s`` seconds for 3 quiet seconds in a row."""
    quiet, waited = 0, 0.0
    while waited < limit_s and quiet < 3:
        a = cpu_lines()
        await asyncio.sleep(1.0)
        quiet = quiet + 1 if busy_pct(a, cpu_lines(), "cpu") < quiet_pct else 0  # type: ignore[operator]
        waited += 1


# --------------------------------------------------------------------------- the peer


def peer_work_dir(arg: str | None) -> Path:
    if arg:
        return Path(arg)
    if os.environ.get("PEER_WORK"):
        return Path(os.environ["PEER_WORK"])
    return Path(os.environ.get("TMPDIR") or "/tmp") / "colyseus-peer-work"


def install_peer(work: Path) -> float:
    """run.sh's copy and ``npm ci``, once, before any timed turn; returns the seconds it took."""
    t0 = time.monotonic()
    work.mkdir(parents=True, exist_ok=True)
    for name in PEER_FILES:
        src, dst = PEER_DIR / name, work / name
        if not dst.exists() or src.read_bytes() != dst.read_bytes():
            shutil.copyfile(src, dst)
    if (work / "node_modules/@colyseus/core").is_dir() and (work / "node_modules/@colyseus/sdk").is_dir():
        return 0.0
    say(f"npm ci in {work} (once)")
    cmd = ["npm", "ci", "--no-audit", "--no-fund", "--legacy-peer-deps"]
    done = subprocess.run(cmd, cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=600)
    if done.returncode != 0:
        say("npm ci failed; trying npm install: " + done.stderr.decode(errors="replace")[-300:])
        subprocess.run(["npm", "install", "--legacy-peer-deps", "--no-audit", "--no-fund"], cwd=work,
                       stdout=subprocess.DEVNULL, check=True, timeout=600)
    return time.monotonic() - t0


async def peer_turn(hz: int, n: int, window: int, quiet_s: float, work: Path) -> dict[str, Any]:
    fd, json_path = tempfile.mkstemp(prefix="vs-colyseus-", suffix=".jsonl")
    os.close(fd)
    port = free_tcp_port()
    stats_port = free_tcp_port()
    while stats_port == port:
        stats_port = free_tcp_port()
    env = {**os.environ, "JSON": json_path, "PEER_WORK": str(work), "WAIT_QUIET": str(int(quiet_s)),
           "PIN": "1" if pinning() else "0", "PORT": str(port), "STATS_PORT": str(stats_port)}
    proc = await asyncio.create_subprocess_exec(
        "bash", str(PEER_DIR / "run.sh"), str(n), str(hz), str(ROOM_SIZE), str(window),
        env=env, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, start_new_session=True,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout=window + quiet_s + 150)
    except TimeoutError:
        say(f"peer run.sh (pid {proc.pid}) over its time: stopping it")
        await stop_process(proc)
        raise RuntimeError("the peer's run.sh did not finish in time") from None
    try:
        text = Path(json_path).read_text().strip()
    finally:
        os.unlink(json_path)
    for line in out.decode(errors="replace").splitlines():
        say("peer: " + line[:300])
    if proc.returncode != 0 or not text:
        raise RuntimeError(f"the peer's run.sh exited {proc.returncode}: {err.decode(errors='replace')[-500:]}")
    return json.loads(text.splitlines()[-1])


async def stop_process(proc: asyncio.subprocess.Process, grace_s: float = 15.0) -> None:
    """SIGTERM the process we started, by its PID; SIGKILL after ``grace_s``."""
    if proc.returncode is not None:
        return
    try:
        proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(proc.wait(), grace_s)
    except TimeoutError:
        proc.kill()
        await proc.wait()
    except ProcessLookupError:
        pass


# --------------------------------------------------------------------------- tickline


class TicklineServer:
    """``python -m tickline serve`` on 127.0.0.1 (ports 0), pinned to CPU 0; stopped by its PID."""

    def __init__(self, send_hz: int, n: int, data_dir: Path) -> None:
        self.send_hz, self.n, self.data_dir = send_hz, n, data_dir
        self.proc: asyncio.subprocess.Process | None = None
        self.port = self.metrics_port = 0

    def argv(self) -> list[str]:
        sets = [a for k, v in GAME_SETTINGS.items() for a in ("--set", f"{k}={v}")]
        return [sys.executable, "-m", "tickline", "--log-level", "warning", "--loop", LOOP, "serve",
                "--host", HOST, "--port", "0", "--metrics-port", "0", "--data-dir", str(self.data_dir),
                "--tick-rate", str(TICK_RATE), "--send-rate", str(self.send_hz),
                "--matches", str(math.ceil(self.n / ROOM_SIZE)), "--placement", "fill",
                "--seed", str(SERVER_SEED), *sets, *SERVE_EXTRA]

    async def start(self) -> TicklineServer:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with open(self.data_dir / "stderr.log", "wb") as errlog:
            self.proc = await asyncio.create_subprocess_exec(
                *self.argv(), cwd=ROOT, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
                stderr=errlog)
        if pinning():
            pin(self.proc.pid, {0})
        assert self.proc.stdout is not None
        line = await asyncio.wait_for(self.proc.stdout.readline(), 60)
        if not line:
            await self.proc.wait()
            raise RuntimeError(f"tickline serve exited {self.proc.returncode}: {self.stderr_tail()}")
        ready = orjson.loads(line)
        self.port, self.metrics_port = ready["port"], ready["metrics_port"]
        if pinning():
            pin(self.proc.pid, {0})  # and every thread it made while starting
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def metrics_url(self) -> str:
        return f"http://{HOST}:{self.metrics_port}/metrics"

    def stderr_tail(self, n: int = 5) -> str:
        try:
            lines = (self.data_dir / "stderr.log").read_text(errors="replace").strip().splitlines()
        except OSError:
            return ""
        return " | ".join(lines[-n:])

    async def stop(self) -> None:
        if self.proc is not None:
            await stop_process(self.proc)


async def _window(server: TicklineServer, begin: float, end: float,
                  on_begin: Any = None) -> dict[str, Any]:
    """The server's and the bots' own accounting at ``begin`` and ``end`` (monotonic)."""

    async def reading() -> dict[str, Any]:
        try:
            samples = await scrape(server.metrics_url)
        except Exception as exc:  # noqa: BLE001 - reported as a caveat
            say(f"metrics scrape failed: {exc}")
            samples = None
        workers = bot_workers()
        return {"t": time.monotonic(), "server_cpu": proc_cpu_s(server.pid),
                "bots_cpu": sum(_safe_cpu(p) for p in workers) + self_cpu_s(), "workers": workers,
                "cpu": cpu_lines(), "rcvbuf": udp_rcvbuf_errors(), "samples": samples}

    await asyncio.sleep(max(0.0, begin - time.monotonic()))
    a = await reading()
    if on_begin is not None:
        on_begin()
    await asyncio.sleep(max(0.0, end - time.monotonic()))
    b = await reading()
    wall = b["t"] - a["t"]
    bots_cpu = max(0.0, b["bots_cpu"] - a["bots_cpu"])  # the same workers at both ends: they outlive the window
    out = {
        "t0": a["t"], "t1": b["t"], "wall": wall,
        "server_cpu_pct": 100 * (b["server_cpu"] - a["server_cpu"]) / wall,
        "bots_cpu_pct": 100 * bots_cpu / wall,
        "bot_workers": len(a["workers"]),
        "machine_busy_pct": busy_pct(a["cpu"], b["cpu"], "cpu"),
        "cpu0_busy_pct": busy_pct(a["cpu"], b["cpu"], "cpu0"),
        "cpu1_busy_pct": busy_pct(a["cpu"], b["cpu"], "cpu1"),
        "udp_rcvbuf_errors": b["rcvbuf"] - a["rcvbuf"],
    }
    if a["samples"] is not None and b["samples"] is not None:
        out["server"] = server_window(Scrape(a["t"], a["samples"]), Scrape(b["t"], b["samples"]),
                                      [Scrape(a["t"], a["samples"]), Scrape(b["t"], b["samples"])])
    return out


def _safe_cpu(pid: int) -> float:
    try:
        return proc_cpu_s(pid)
    except OSError:
        return 0.0


def _totals_at(t: float, after: bool) -> tuple[float, dict[str, Any]] | None:
    """The bots' summed counters nearest ``t`` (the first at or after it, or the last at or before it)."""
    rows = WATCH.totals
    if after:
        return next((r for r in rows if r[0] >= t), None)
    return next((r for r in reversed(rows) if r[0] <= t), None)


async def tickline_turn(hz: int, n: int, window: float, settle: float, quiet_s: float, data_root: Path,
                        profile: tuple[Path, float] | None = None) -> dict[str, Any]:
    await wait_quiet(quiet_s)
    global WATCH
    WATCH = _Watch()
    data_dir = Path(tempfile.mkdtemp(prefix="tl-", dir=data_root))
    server = await TicklineServer(hz, n, data_dir).start()
    sampler: asyncio.Task[dict[str, Any]] | None = None
    spy: subprocess.Popen[bytes] | None = None
    try:
        ramp_s = n / RAMP_PER_S
        t_call = time.monotonic()
        begin = t_call + 1.0 + ramp_s + settle  # run_load starts its bots 1 s after it is called
        end = begin + window
        duration = ramp_s + settle + window + 1.5  # the first bot still plays when the window ends

        def start_spy() -> None:
            nonlocal spy
            if profile is not None:
                spy = start_py_spy(server.pid, profile[0], profile[1])

        sampler = asyncio.create_task(_window(server, begin, end, on_begin=start_spy))
        cfg = LoadConfig(host=HOST, port=server.port, n=n, duration=duration, ramp=RAMP_PER_S,
                         behaviour="wander", seed=BOT_SEED, metrics_url=server.metrics_url, progress=False,
                         client=ClientOptions(fast=FASTPATH, input_rate=PEER_INPUT_HZ,
                                              input_ticks=TICK_RATE // PEER_INPUT_HZ),
                         loop_factory=loops.loop_factory(LOOP))
        report = await run_load(cfg)
        win = await sampler
    finally:
        if sampler is not None and not sampler.done():
            sampler.cancel()
        if spy is not None:
            try:
                spy.wait(timeout=profile[1] + 30 if profile else 30)
            except subprocess.TimeoutExpired:
                spy.terminate()
                spy.wait()
        await server.stop()
        tail = server.stderr_tail(3)
        shutil.rmtree(data_dir, ignore_errors=True)
    t0, t1 = win["t0"], win["t1"]
    a, b = _totals_at(t0, after=True), _totals_at(t1, after=False)
    down = deltas = connected_min = None
    if a and b and b[0] > a[0]:
        # Per bot that joined, connected or not, as the peer divides by its clients.
        bots = max(1, b[1]["joined"])
        down = (b[1]["bytes_down"] - a[1]["bytes_down"]) / (b[0] - a[0]) / bots
        deltas = (b[1]["deltas"] - a[1]["deltas"]) / (b[0] - a[0]) / bots
    in_window = [tot for t, tot in WATCH.totals if t0 <= t <= t1]
    if in_window:
        connected_min = min(tot["connected"] for tot in in_window)
    # Live counts from the workers' snapshots (the final report loses a worker that had to be terminated).
    lost_in_window = errors_in_window = None
    if a and b:
        lost_in_window = b[1]["disconnects"] - a[1]["disconnects"]
        errors_in_window = b[1]["errors"] - a[1]["errors"]
    last = WATCH.totals[-1][1] if WATCH.totals else {}
    lat = WATCH.ack_latencies.between(t0 + 1.0, t1)  # batches measured inside the window
    every = WATCH.latencies.between(t0 + 1.0, t1)
    srv = win.get("server", {})
    players = srv.get("players_max") or n
    ours = {
        "server_cpu_pct": round(win["server_cpu_pct"], 1),
        "players": int(players),
        "down_bytes_per_s_per_client": rnd(down, 0),
        "deltas_per_s_per_client": rnd(deltas, 1),
        "bytes_per_delta": rnd(down / deltas, 0) if down is not None and deltas else None,
        "lat_p50_ms": rnd(1000 * loadtest._percentile(lat, 50), 1) if lat else None,
        "lat_p99_ms": rnd(1000 * loadtest._percentile(lat, 99), 1) if lat else None,
        "lat_samples": len(lat),
        "every_input_lat_p50_ms": rnd(1000 * loadtest._percentile(every, 50), 1) if every else None,
        "every_input_lat_p99_ms": rnd(1000 * loadtest._percentile(every, 99), 1) if every else None,
        "bots_cpu_pct": round(win["bots_cpu_pct"], 1),
        "bot_workers": win["bot_workers"],
        "cpu0_busy_pct": rnd(win["cpu0_busy_pct"], 1),
        "cpu1_busy_pct": rnd(win["cpu1_busy_pct"], 1),
        "other_cpu_pct": rnd(max(0.0, (win["machine_busy_pct"] or 0) - win["server_cpu_pct"] - win["bots_cpu_pct"]), 1),
        "ticks_per_s": srv.get("ticks_per_s"),
        "matches": srv.get("matches_max"),
        "tick_late_ms_p50": srv.get("tick_late_ms_p50"),
        "tick_late_ms_p99": srv.get("tick_late_ms_p99"),
        "tick_duration_ms_p99": srv.get("tick_duration_ms_p99"),
        "server_bytes_down_per_s_per_client": rnd(srv["bytes_down_per_s"] / players, 0) if srv else None,
        "eventlog_lag_s_max": srv.get("eventlog_lag_s_max"),
        "connected_min": connected_min,
        "disconnects_in_window": lost_in_window,
        "errors_in_window": errors_in_window,
        "connected": report["connected"],
        "disconnects": max(report["disconnects"], last.get("disconnects", 0)),
        "reconnects": report["reconnects"],
        "errors": max(report["errors"], last.get("errors", 0)),
        "kicked": srv.get("connections_kicked"),
        "failures": report["failures"],
        "udp_rcvbuf_errors": win["udp_rcvbuf_errors"],
        "window_s": round(win["wall"], 1),
    }
    ours["served"] = bool(connected_min is not None and connected_min >= n and not lost_in_window
                          and deltas is not None and deltas >= 0.75 * hz)
    if report.get("error_reasons"):
        ours["error_reasons"] = report["error_reasons"]
    odd = {k: v for k, v in report.get("closed_by_server", {}).items() if k not in ("match over", "server shutting down")}
    if odd:
        ours["closed_by_server"] = odd
    if tail and (report["errors"] or report["failures"]):
        ours["server_stderr_tail"] = tail
    return ours


# --------------------------------------------------------------------------- figures


PEER_KEYS = ("serverCpuPct", "serverClients", "downBpsPerClient", "downMsgsPerClient", "latP50ms", "latP99ms",
             "latSamples", "clientCpuPct", "otherCpuPct", "tickHz", "lateTicksPct", "tickGapP99ms", "patchHz",
             "disconnects", "errors", "windowS", "joinS")


def caveats_for(hz: int, ours: list[dict[str, Any]], peers: list[dict[str, Any]], n: int) -> list[str]:
    out: list[str] = []

    def runs(values: list[Any]) -> str:
        return "/".join(str(v) for v in values)

    if not pinning():
        out.append(f"only {CORES} core(s): nothing pinned, server and load generator share cores")
    if any(o["bots_cpu_pct"] >= BOT_SATURATED_PCT for o in ours):
        out.append(f"tickline's bot workers saturated their core (CPU 1): {runs([o['bots_cpu_pct'] for o in ours])} % "
                   "of a core; bot-side delays add to input_to_visible and late acks can enlarge deltas")
    elif any((o["cpu1_busy_pct"] or 0) >= 95 for o in ours):
        out.append(f"the load generator's core (CPU 1) was full: busy {runs([o['cpu1_busy_pct'] for o in ours])} %, "
                   f"of which tickline's bots {runs([o['bots_cpu_pct'] for o in ours])} % (the rest: other processes)")
    if any((p.get("clientCpuPct") or 0) >= BOT_SATURATED_PCT for p in peers):
        out.append(f"the peer's load client saturated its core: {runs([p.get('clientCpuPct') for p in peers])} %")
    if any(o["server_cpu_pct"] >= SERVER_SATURATED_PCT for o in ours):
        out.append(f"tickline's server saturated its core (CPU 0): {runs([o['server_cpu_pct'] for o in ours])} %")
    expected = TICK_RATE * math.ceil(n / ROOM_SIZE)
    if any(o["ticks_per_s"] is not None and o["ticks_per_s"] < 0.98 * expected for o in ours):
        out.append(f"tickline skipped ticks: {runs([o['ticks_per_s'] for o in ours])} ticks/s over all matches, "
                   f"{expected} expected")
    if any(o["tick_late_ms_p99"] is not None and o["tick_late_ms_p99"] > 1000 / TICK_RATE for o in ours):
        out.append(f"tickline ticks ran late: p99 {runs([o['tick_late_ms_p99'] for o in ours])} ms")
    if any((p.get("tickHz") or 60) < 0.97 * TICK_RATE or (p.get("lateTicksPct") or 0) > 1 for p in peers):
        out.append(f"the peer's ticks fell behind: {runs([p.get('tickHz') for p in peers])} Hz per room, "
                   f"late ticks {runs([p.get('lateTicksPct') for p in peers])} %")
    for key, what in (("disconnects", "bots that lost their connection"),
                      ("reconnects", "bots that came back with their token"),
                      ("errors", "bots that ended on an error (e.g. no welcome within 10 s)"),
                      ("kicked", "connections the server closed (e.g. no hello within 10 s)"),
                      ("udp_rcvbuf_errors", "UDP datagrams the kernel dropped at a full socket buffer, machine-wide")):
        if any(o.get(key) for o in ours):
            out.append(f"tickline {key} ({what}): {runs([o.get(key) for o in ours])}")
    if any(o["failures"] for o in ours):
        out.append("tickline load-test failures: " + "; ".join(f for o in ours for f in o["failures"])[:400])
    if not all(o["served"] for o in ours):
        out.append(f"tickline did not serve every player at {hz} Hz in every window (served: "
                   f"{runs([o['served'] for o in ours])}; deltas applied per client per s: "
                   f"{runs([o['deltas_per_s_per_client'] for o in ours])} of {hz}; connected min "
                   f"{runs([o['connected_min'] for o in ours])} of {n}; disconnects in window "
                   f"{runs([o['disconnects_in_window'] for o in ours])}): its figures describe a collapsed run, "
                   "so no figure of this rate holds")
    if any(o["connected_min"] is not None and o["connected_min"] < n for o in ours):
        out.append(f"not every tickline bot was connected through the window: min {runs([o['connected_min'] for o in ours])}")
    for key in ("disconnects", "errors"):
        if any(p.get(key) for p in peers):
            out.append(f"peer {key}: {runs([p.get(key) for p in peers])}")
    if any((p.get("serverClients") or n) < n for p in peers):
        out.append(f"not every peer client joined: {runs([p.get('serverClients') for p in peers])}")
    busy = [o["other_cpu_pct"] for o in ours] + [p.get("otherCpuPct") or 0 for p in peers]
    if any(b is not None and b > BUSY_OTHER_PCT for b in busy):
        out.append("other processes were busy on the machine (% of a core; tickline turns then peer turns): "
                   f"{runs([o['other_cpu_pct'] for o in ours])} / {runs([p.get('otherCpuPct') for p in peers])}")
    return out


def make_figures(hz: int, ours: list[dict[str, Any]], peers: list[dict[str, Any]], n: int,
                 window: float) -> list[dict[str, Any]]:
    common = {
        "cores": CORES, "python": PYTHON, "node": NODE_VERSION,
        "scenario": f"N={n} players in rooms of {ROOM_SIZE}, {TICK_RATE} Hz simulation, state sent at {hz} Hz, "
                    f"wander bots, {window:g} s windows",
        "pinning": "server CPU 0, load generator CPU 1" if pinning() else "none",
        "game_settings": GAME_SETTINGS,
        "caveats": caveats_for(hz, ours, peers, n),
        "differences": DIFFERENCES,
        "tickline_runs": ours,
        "colyseus_runs": [{k: p.get(k) for k in PEER_KEYS} for p in peers],
    }

    def fig(name: str, unit: str, values: list[float | None], baselines: list[float | None], baseline_of: str,
            target: str, limit: float, digits: int, measured: str) -> dict[str, Any]:
        pairs = [(v, b) for v, b in zip(values, baselines) if v is not None and b]
        ratios = [v / b for v, b in pairs]
        ratio = med(ratios)
        return {
            "figure": name,
            "value": rnd(med([v for v, _ in pairs]), digits),
            "unit": unit,
            "baseline": rnd(med([b for _, b in pairs]), digits),
            "baseline_of": baseline_of,
            "ratio": sig(ratio) if ratios else None,
            "target": target,
            "holds": bool(ratio <= limit and all(o["served"] for o in ours)) if ratios else None,
            "runs": len(ratios),
            "spread": [sig(min(ratios)), sig(max(ratios))] if ratios else None,
            "values": [rnd(v, digits + 2) for v, _ in pairs],
            "baselines": [rnd(b, digits + 2) for _, b in pairs],
            "measured": measured,
            **extra.get(name, {}),
            **common,
        }

    # Bytes per state update that reached a client: what the byte figure would be if
    # every update arrived (a run whose clients missed updates receives fewer bytes).
    per_update = [(o["bytes_per_delta"], p["downBpsPerClient"] / p["downMsgsPerClient"])
                  for o, p in zip(ours, peers) if o.get("bytes_per_delta") and p.get("downMsgsPerClient")]
    extra = {f"down_bytes_per_player_{hz}hz": {
        "bytes_per_update": rnd(med([a for a, _ in per_update]), 0),
        "bytes_per_update_baseline": rnd(med([b for _, b in per_update]), 0),
        "bytes_per_update_ratio": sig(med([a / b for a, b in per_update])) if per_update else None,
        "updates_per_s_per_client": [o["deltas_per_s_per_client"] for o in ours],
        "updates_per_s_per_client_baseline": [p.get("downMsgsPerClient") for p in peers],
    }}

    peer_of = f"Colyseus 0.18 (Node {NODE_VERSION}), ../shared/peers/colyseus, same N, rooms, rates, machine and run"
    return [
        fig(f"cpu_per_player_{hz}hz", "% of one core per player",
            [o["server_cpu_pct"] / o["players"] for o in ours],
            [p["serverCpuPct"] / (p.get("serverClients") or n) for p in peers],
            peer_of, "<= 1.0", 1.0, 4,
            "server process CPU (utime+stime from its own /proc/PID/stat) over the steady window, in % of one core, "
            "divided by the players it counted connected (tickline_server_players, the larger of the window's two "
            "readings); the peer's serverCpuPct / serverClients, measured the same way"),
        fig(f"down_bytes_per_player_{hz}hz", "bytes/s per client",
            [o["down_bytes_per_s_per_client"] for o in ours],
            [p["downBpsPerClient"] for p in peers],
            peer_of, "<= 0.5", 0.5, 0,
            "downstream payload bytes per second per client, counted at the clients: tickline = datagram frame "
            "bytes (fast-path payloads or QUIC DATAGRAM payloads) + control-stream payload bytes "
            "(bots/client.py ClientStats.bytes_down; no fast-path/QUIC/UDP/IP headers, no AEAD tags, no ACK-only "
            "packets); the peer = WebSocket message payload bytes (no WS/TCP/IP framing). "
            "bytes_per_update divides by the state updates the clients applied (the peer: messages received)"),
        fig(f"input_to_visible_p99_{hz}hz", "ms",
            [o["lat_p99_ms"] for o in ours],
            [p["latP99ms"] for p in peers],
            peer_of, "<= 1.0", 1.0, 1,
            "p99 of the time from a bot making an input until a state update names that input as applied "
            "(tickline's Delta.seq, the peer's player.ack), one sample per update whose named input moved; "
            "loopback, no added latency. tickline_runs' every_input_lat_p99_ms counts every input"),
    ]


NODE_VERSION = ""


def node_version() -> str:
    try:
        return subprocess.run(["node", "--version"], capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "?"


# --------------------------------------------------------------------------- profiling


def py_spy_path() -> str:
    local = Path(sys.executable).parent / "py-spy"
    found = str(local) if local.exists() else shutil.which("py-spy")
    if not found:
        raise SystemExit("--profile needs py-spy: .venv/bin/pip install py-spy")
    return found


def start_py_spy(pid: int, out: Path, seconds: float) -> subprocess.Popen[bytes]:
    say(f"py-spy record -p {pid} -d {seconds:g} -> {out}")
    return subprocess.Popen([py_spy_path(), "record", "-o", str(out), "-f", "raw", "-p", str(pid),
                             "-d", str(int(seconds))], stdout=sys.stderr, stderr=sys.stderr)


GROUPS = [  # (group, test on "function (file:line)" frames), first match wins
    ("aioquic: crypto/TLS", lambda f, fn: "aioquic/quic/crypto.py" in f or "aioquic/_crypto" in f
     or "aioquic/tls.py" in f or "cryptography" in f),
    ("aioquic: ACKs/loss recovery", lambda f, fn: "aioquic/quic/recovery.py" in f or "rangeset.py" in f
     or "congestion" in f or ("aioquic/quic/connection.py" in f and "ack" in fn.lower())),
    ("aioquic: packets (parse/build/frames)", lambda f, fn: "aioquic/quic/" in f or "aioquic/buffer" in f),
    ("aioquic: asyncio glue (transmit, timers)", lambda f, fn: "aioquic/asyncio" in f),
    ("tickline: sessions/transport/protocol", lambda f, fn: "server/session.py" in f or "server/transport.py" in f
     or "shared/protocol.py" in f),
    ("tickline: deltas/views", lambda f, fn: "shared/delta.py" in f or ("shared/arena.py" in f and "view" in fn)),
    ("tickline: game step (arena rules, hash)", lambda f, fn: "shared/arena.py" in f or "shared/game.py" in f),
    ("tickline: match loop", lambda f, fn: "server/match.py" in f),
    ("event log (SQLite writer, encoding)", lambda f, fn: "server/eventlog.py" in f or "shared/logformat.py" in f
     or "sqlalchemy" in f or "aiosqlite" in f or "sqlite3" in f or "zstd" in f),
    ("metrics/HTTP", lambda f, fn: "server/http.py" in f or "server/stats.py" in f or "aiohttp" in f
     or "prometheus_client" in f),
    ("asyncio/event loop/sockets", lambda f, fn: "asyncio/" in f or "selectors.py" in f or "socket.py" in f),
]


def _idle_leaves() -> set[tuple[str, int]]:
    """(file suffix, line) of the blocking queue waits that py-spy here samples as busy:
    the event log's aiosqlite thread and the executor threads waiting for work."""
    import importlib

    out: set[tuple[str, int]] = set()
    for module, suffix, needle in (("aiosqlite.core", "aiosqlite/core.py", "tx.get("),
                                   ("concurrent.futures.thread", "concurrent/futures/thread.py", "work_queue.get(")):
        try:
            path = importlib.import_module(module).__file__
            with open(path) as f:  # type: ignore[arg-type]
                out |= {(suffix, i) for i, line in enumerate(f, 1) if needle in line}
        except (ImportError, OSError, TypeError):
            pass
    return out


def _is_idle(fn: str, file: str, line: int, idle: set[tuple[str, int]]) -> bool:
    if any(file.endswith(suffix) and line == n for suffix, n in idle):
        return True
    return (file.endswith("selectors.py") and fn.endswith(".select")) or (
        file.endswith("threading.py") and fn.split(".")[-1] in ("wait", "_wait_for_tstate_lock", "join"))


def _frame_parts(frame: str) -> tuple[str, str]:
    fn, _, rest = frame.partition(" (")
    return fn, rest.rstrip(")")


def summarize_profile(raw: Path, top: int = 25) -> str:
    """Self time (the innermost Python frame of each sample) by group and by function."""
    by_group: Counter[str] = Counter()
    by_fn: Counter[str] = Counter()
    total = idle_samples = 0
    idle = _idle_leaves()
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        c = int(count)
        frames = stack.split(";")
        leaf = frames[-1]
        fn, where = _frame_parts(leaf)
        file, _, lineno = where.rpartition(":")
        if _is_idle(fn, file, int(lineno) if lineno.isdigit() else 0, idle):
            idle_samples += c
            continue
        group = next((g for g, test in GROUPS if test(file, fn)), "other")
        by_group[group] += c
        by_fn[f"{fn} ({file.split('site-packages/')[-1].replace(str(ROOT) + '/', '')})"] += c
        total += c
    lines = [f"{total} busy samples, all threads ({idle_samples} more were threads blocked waiting for work, left out)",
             "self time by group:"]
    lines += [f"  {100 * c / total:5.1f} %  {g}" for g, c in by_group.most_common()]
    lines += [f"top {top} functions by self time:"]
    lines += [f"  {100 * c / total:5.1f} %  {f}" for f, c in by_fn.most_common(top)]
    return "\n".join(lines)


# --------------------------------------------------------------------------- main


async def amain(args: argparse.Namespace) -> int:
    global NODE_VERSION
    if args.profile_summary:
        print(summarize_profile(Path(args.profile_summary)), file=sys.stderr)
        return 0
    NODE_VERSION = node_version()
    install_hooks()
    started = time.monotonic()
    if pinning():
        pin(os.getpid(), {1})  # the bot workers run_load spawns inherit CPU 1
    data_root = Path(tempfile.mkdtemp(prefix="vs-colyseus-"))
    try:
        if args.profile:
            out = Path(args.profile)
            window = max(args.seconds or 0, args.profile_seconds + 2)
            say(f"profiling tickline at N={args.n}, {args.profile_hz} Hz send, {args.profile_seconds:g} s")
            turn = await tickline_turn(args.profile_hz, args.n, window, args.settle, 0, data_root,
                                       profile=(out, args.profile_seconds))
            say("turn: " + json.dumps(turn))
            summary = summarize_profile(out)
            Path(str(out) + ".summary.txt").write_text(summary + "\n")
            print(summary, file=sys.stderr)
            return 0

        rounds = args.rounds or (1 if args.quick else 3)
        window = args.seconds or (10 if args.quick else 20)
        quiet = args.wait_quiet if args.wait_quiet is not None else (2 if args.quick else 5)
        work = peer_work_dir(args.peer_work)
        npm_s = install_peer(work)
        say(f"N={args.n}, rounds={rounds}, window={window}s, wait_quiet={quiet}s, cores={CORES}, "
            f"peer in {work} (install {npm_s:.1f}s)")
        ours: dict[int, list[dict[str, Any]]] = {hz: [] for hz in RATES}
        peers: dict[int, list[dict[str, Any]]] = {hz: [] for hz in RATES}
        for r in range(rounds):
            for hz in RATES:
                say(f"round {r + 1}/{rounds}, {hz} Hz: Colyseus")
                p = await peer_turn(hz, args.n, window, quiet, work)
                peers[hz].append(p)
                say(f"  colyseus cpu={p['serverCpuPct']}% clients={p['serverClients']} down={p['downBpsPerClient']}B/s "
                    f"lat p50/p99={p['latP50ms']}/{p['latP99ms']}ms loadgen={p['clientCpuPct']}% other={p['otherCpuPct']}%")
                say(f"round {r + 1}/{rounds}, {hz} Hz: tickline")
                o = await tickline_turn(hz, args.n, window, args.settle, quiet, data_root)
                ours[hz].append(o)
                say(f"  tickline cpu={o['server_cpu_pct']}% players={o['players']} down={o['down_bytes_per_s_per_client']}B/s "
                    f"lat p50/p99={o['lat_p50_ms']}/{o['lat_p99_ms']}ms bots={o['bots_cpu_pct']}% "
                    f"ticks/s={o['ticks_per_s']} late p99={o['tick_late_ms_p99']}ms other={o['other_cpu_pct']}% "
                    f"disc={o['disconnects']} err={o['errors']}")
        report = Report(Path(args.json_out) if args.json_out else None)
        by_name: dict[str, dict[str, Any]] = {}
        for hz in RATES:
            for f in make_figures(hz, ours[hz], peers[hz], args.n, window):
                by_name[f["figure"]] = f
        for kind in ("cpu_per_player", "down_bytes_per_player", "input_to_visible_p99"):
            for hz in RATES:
                report.emit(by_name[f"{kind}_{hz}hz"])
        say(f"done in {time.monotonic() - started:.0f} s")
        return 0
    finally:
        shutil.rmtree(data_root, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description="tickline vs Colyseus 0.18, arena scenario, side by side")
    parser.add_argument("--quick", action="store_true", help="one round of 10 s windows (about 2-4 minutes)")
    parser.add_argument("--json-out", metavar="FILE", help="also write the JSON lines here")
    parser.add_argument("--n", type=int, default=200, help="players (default 200), in rooms of 50")
    parser.add_argument("--seconds", type=int, help="measurement window per turn (default 20, --quick 10)")
    parser.add_argument("--rounds", type=int, help="rounds of turns (default 3, --quick 1)")
    parser.add_argument("--settle", type=float, default=3.0, help="seconds after tickline's ramp before its window")
    parser.add_argument("--wait-quiet", type=float, help="before each turn, wait up to this long for an idle "
                        "machine, as the peer's WAIT_QUIET (default 5, --quick 2)")
    parser.add_argument("--peer-work", help="writable copy of the peer (default $PEER_WORK or $TMPDIR/colyseus-peer-work)")
    parser.add_argument("--profile", metavar="FILE", help="instead of the figures: one tickline turn with py-spy "
                        "recording the server (raw format) into FILE, and a self-time summary on stderr")
    parser.add_argument("--profile-hz", type=int, default=60, choices=RATES)
    parser.add_argument("--profile-seconds", type=float, default=10.0)
    parser.add_argument("--profile-summary", metavar="RAW", help="only summarise an existing py-spy raw file")
    parser.add_argument("--loop", default="auto", choices=loops.LOOPS,
                        help="event loop of tickline's server and bots (default: auto, uvloop where installed)")
    parser.add_argument("--no-fastpath", action="store_true", help="tickline's bots keep every datagram on QUIC")
    args = parser.parse_args()
    if args.n < 1:
        parser.error("--n must be at least 1")
    global LOOP, FASTPATH, SERVE_EXTRA
    LOOP, FASTPATH = args.loop, not args.no_fastpath
    SERVE_EXTRA = ["--no-fastpath"] if args.no_fastpath else []
    say(f"tickline on the {loops.loop_name(loops.loop_factory(LOOP))} loop, "
        f"{'fast path' if FASTPATH else 'QUIC datagrams only'}")
    return loops.run(amain(args), LOOP)


if __name__ == "__main__":
    sys.exit(main())
