"""tickline against Colyseus 0.18 on the same arena scenario, side by side (docs/benchmarks.md).

From the repository root, with the project's virtualenv:

    .venv/bin/python -m bench.vs_colyseus [--quick] [--json-out FILE] [--n 200] [--seconds S]
    .venv/bin/python -m bench.vs_colyseus --profile out.txt     # py-spy of tickline at 60 Hz, no figures
    .venv/bin/python -m bench.vs_colyseus --capacity            # capacity_players_vs_colyseus only

N players (200) in rooms of 50, 60 Hz simulation, state sent at 20 Hz and at 60 Hz.
Each round runs, for each send rate, the peer then tickline (peer, tickline, peer,
tickline ...):

- the peer: the Colyseus project's ``run.sh N HZ 50 SECONDS`` (Colyseus server pinned
  to CPU 0, its Node load client to CPU 1), its JSON line read back; the peer's folder
  is ``--peer-dir`` (or ``$TICKLINE_PEER_DIR``; by default ``shared/peers/colyseus``
  beside the checkout);
- tickline: ``python -m tickline serve`` with the peer's rules (GAME_SETTINGS below),
  pinned to the first CPU, and a ``tickline.bots.loadtest.LoadTest`` of N ``wander``
  bots (the peer's bot) in worker processes on the other CPU (this process pins itself
  there first, and the workers inherit it). Figures are taken over a steady window after
  the ramp, from the server's own accounting and the workers' once-a-second snapshots.

Six figures, ratio = tickline / Colyseus, lower is better for all (bench/README.md):
cpu_per_player_{20,60}hz, down_bytes_per_player_{20,60}hz, input_to_visible_p99_{20,60}hz.
With ``--capacity``, one figure instead: ``capacity_players_vs_colyseus``, the players
each server holds on one core (rooms of 50, 60 Hz ticks, 30 Hz sends), both searched with
``tickline.bots.capacity``'s doubling and bisection, a probe of each in turn.
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
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from bench.capacity import ratio_bounds
from bench.report import Report, med, rnd, sig, udp_rcvbuf_errors
from tickline import loops
from tickline.bots.capacity.probe import ProbeSettings, stop_process
from tickline.bots.capacity.run import CapacityConfig, Contender, run_searches, search_json
from tickline.bots.capacity.search import MIN_TICK_SHARE
from tickline.bots.client import ClientOptions
from tickline.bots.loadtest import LoadConfig, LoadTest
from tickline.bots.metrics import Scrape, percentile, scrape, server_window
from tickline.bots.procstat import (
    CORES,
    affinity,
    children,
    cpu_busy_s,
    cpu_plan,
    machine_busy_percent,
    own_cpu_s,
    pin_process,
    process_cpu_s,
)
from tickline.bots.profiling import profile_process, summarize_profile

HOST = "127.0.0.1"
# The peer's folder; by default shared/peers/colyseus beside the checkout. --peer-dir or TICKLINE_PEER_DIR overrides.
DEFAULT_PEER_DIR = Path(__file__).resolve().parents[2] / "shared" / "peers" / "colyseus"
PEER_FILES = (".npmrc", "package.json", "package-lock.json", "server.js", "loadclient.js", "summarize.js")
ROOM_SIZE = 50
# Targets for server CPU per player against the peer's: at most the same at
# 20 Hz sends, and at most 0.8 of it at 60 Hz (where tickline's sends are the larger share).
CPU_TARGETS = {20: 1.0, 60: 0.8}
TICK_RATE = 60
RATES = (20, 60)
RAMP_PER_S = 40.0  # bots started per second
PEER_INPUT_HZ = 30  # the peer's bots send one input message at 30 Hz; ours make and send inputs as often
SERVER_SEED = 7
BOT_SEED = 1
BOT_SATURATED_PCT = 90.0  # load generator CPU (% of its one core) above which it is the bottleneck
SERVER_SATURATED_PCT = 90.0
BUSY_OTHER_PCT = 25.0  # other processes' CPU (% of a core) worth a caveat
QUIET_PCT = 15.0  # the peer's WAIT_QUIET: the machine counts as quiet below this busy % (of one core)
# Set from the command line: the event loop (server and bots), whether the fast path is used, the peer.
LOOP = "auto"
FASTPATH = True
SERVE_EXTRA: list[str] = []
PEER_DIR = DEFAULT_PEER_DIR
# The server on the first CPU, the load generator (this process and the bot workers) on the others;
# None: no pinning (one CPU). On two CPUs, CPU 0 and CPU 1, as the peer's PIN=1.
SERVER_CPUS, LOAD_CPUS, PINNING = cpu_plan()

# The peer's rules (server.js), in the arena's config keys (shared/arena.py default_config).
GAME_SETTINGS: dict[str, Any] = {
    "max_players": ROOM_SIZE,  # rooms of 50
    "width": 1000,
    "height": 1000,  # ARENA = 1000
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
    "tick timers: each of the peer's rooms has its own simulation interval; tickline's four matches share one tick "
    "instant (--matches-per-tick, 4 by default), so one wake-up of its loop runs all four ticks",
    "load generators: the peer's is one Node process; tickline's is Python (aioquic client) in worker processes, "
    "both pinned to CPU 1; tickline's bots in one process decode and apply each delta the server shared "
    "between them once (bots.world.SharedViews), the peer's clients each decode their own patches",
]

PYTHON = platform.python_version()
TOTALS = ("connected", "joined", "errors", "disconnects", "deltas", "bytes_down", "bytes_up")


# --------------------------------------------------------------------------- the bot workers' loop (spawned)


def _quiet_handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    # aioquic leaves a ConnectionError in a future nobody awaits whenever a connection
    # is lost; the bots count lost connections themselves, so one line each is noise.
    if isinstance(context.get("exception"), ConnectionError) and "never retrieved" in context.get("message", ""):
        return
    loop.default_exception_handler(context)


class QuietLoop:
    """The bot workers' event loop (``LoadConfig.loop_factory``, pickled to each spawned
    worker): the ``choice`` of ``tickline.loops``, without a log line per lost connection."""

    def __init__(self, choice: str) -> None:
        self.choice = choice

    def __call__(self) -> asyncio.AbstractEventLoop:
        loop = (loops.loop_factory(self.choice) or asyncio.new_event_loop)()
        loop.set_exception_handler(_quiet_handler)
        return loop


# --------------------------------------------------------------------------- watching the load test (this process)


class Watch:
    """What this process hears of a load test (``LoadTest``'s ``on_snapshot``): every
    worker's once-a-second snapshots, each stamped with the machine-wide monotonic time
    it was taken (``mono``): its bots' totals so far, and the latency samples measured
    since its previous snapshot."""

    def __init__(self) -> None:
        self.snaps: dict[int, list[dict[str, Any]]] = {}

    def __call__(self, worker: int, snapshot: dict[str, Any]) -> None:
        kept = {k: snapshot.get(k, 0) for k in TOTALS}
        kept.update(
            mono=snapshot["mono"], latencies=list(snapshot["latencies"]), ack_latencies=list(snapshot["ack_latencies"])
        )
        self.snaps.setdefault(worker, []).append(kept)

    def ends(self, t0: float, t1: float) -> list[tuple[dict[str, Any], dict[str, Any]]]:
        """Per worker, its first snapshot at or after ``t0`` and its last at or before ``t1``."""
        out = []
        for snaps in self.snaps.values():
            a = next((s for s in snaps if s["mono"] >= t0), None)
            b = next((s for s in reversed(snaps) if s["mono"] <= t1), None)
            if a is not None and b is not None and b["mono"] > a["mono"]:
                out.append((a, b))
        return out

    def rate(self, key: str, t0: float, t1: float) -> float | None:
        """The bots' ``key`` per second over the window, every worker over its own snapshots."""
        pairs = self.ends(t0, t1)
        return sum((b[key] - a[key]) / (b["mono"] - a["mono"]) for a, b in pairs) if pairs else None

    def change(self, key: str, t0: float, t1: float) -> int | None:
        pairs = self.ends(t0, t1)
        return sum(b[key] - a[key] for a, b in pairs) if pairs else None

    def at_end(self, key: str, t0: float, t1: float) -> int:
        return sum(b[key] for _, b in self.ends(t0, t1))

    def connected_min(self, t0: float, t1: float) -> int | None:
        """The bots connected through the window: each worker's fewest, summed (every worker full: all of them)."""
        mins = [
            min(s["connected"] for s in inside)
            for snaps in self.snaps.values()
            if (inside := [s for s in snaps if t0 <= s["mono"] <= t1])
        ]
        return sum(mins) if mins else None

    def samples(self, key: str, begin: float, end: float) -> list[float]:
        """Latency samples (``key``) of the snapshots taken in (begin, end]."""
        return [x for snaps in self.snaps.values() for s in snaps if begin < s["mono"] <= end for x in s[key]]

    def last(self) -> dict[str, int]:
        """The bots' totals in every worker's last snapshot."""
        return {k: sum(snaps[-1][k] for snaps in self.snaps.values() if snaps) for k in TOTALS}


# --------------------------------------------------------------------------- reporting and process accounting


def say(message: str) -> None:
    print(f"[vs_colyseus] {message}", file=sys.stderr, flush=True)


def pinning() -> bool:
    return SERVER_CPUS is not None and LOAD_CPUS is not None


def busy_pct(a: dict[int, float], b: dict[int, float], cpus: set[int] | None, wall: float) -> float | None:
    """How busy ``cpus`` (None: every CPU) were between two ``cpu_busy_s`` readings, in % of one core."""
    if not a or not b:
        return None
    names = b.keys() if cpus is None else cpus
    return 100 * sum(b.get(c, 0.0) - a.get(c, 0.0) for c in names) / wall


def bot_workers() -> list[int]:
    """The load test's spawned bot workers: this process's multiprocessing children."""
    return children(marker=b"spawn_main")


def free_tcp_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


async def wait_quiet(limit_s: float, quiet_pct: float = QUIET_PCT) -> None:
    """The peer's WAIT_QUIET, for tickline's turns too: up to ``limit_s`` seconds for 3 quiet seconds in a row."""
    quiet, waited = 0, 0.0
    while waited < limit_s and quiet < 3:
        busy = await machine_busy_percent(1.0)
        quiet = quiet + 1 if busy is not None and busy < quiet_pct else 0
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
        subprocess.run(
            ["npm", "install", "--legacy-peer-deps", "--no-audit", "--no-fund"],
            cwd=work,
            stdout=subprocess.DEVNULL,
            check=True,
            timeout=600,
        )
    return time.monotonic() - t0


async def peer_turn(hz: int, n: int, window: int, quiet_s: float, work: Path) -> dict[str, Any]:
    fd, json_path = tempfile.mkstemp(prefix="vs-colyseus-", suffix=".jsonl")
    os.close(fd)
    port = free_tcp_port()
    stats_port = free_tcp_port()
    while stats_port == port:
        stats_port = free_tcp_port()
    env = {
        **os.environ,
        "JSON": json_path,
        "PEER_WORK": str(work),
        "WAIT_QUIET": str(int(quiet_s)),
        "PIN": "1" if pinning() else "0",
        "PORT": str(port),
        "STATS_PORT": str(stats_port),
    }
    proc = await asyncio.create_subprocess_exec(
        "bash",
        str(PEER_DIR / "run.sh"),
        str(n),
        str(hz),
        str(ROOM_SIZE),
        str(window),
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        start_new_session=True,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout=window + quiet_s + 150)
    except TimeoutError:
        say(f"peer run.sh (pid {proc.pid}) over its time: stopping it")
        await stop_process(proc, 15.0)
        raise RuntimeError("the peer's run.sh did not finish in time") from None
    try:
        text = Path(json_path).read_text().strip()  # noqa: ASYNC240 - a small local file, after the turn
    finally:
        os.unlink(json_path)
    for line in out.decode(errors="replace").splitlines():
        say("peer: " + line[:300])
    if proc.returncode != 0 or not text:
        raise RuntimeError(f"the peer's run.sh exited {proc.returncode}: {err.decode(errors='replace')[-500:]}")
    result: dict[str, Any] = json.loads(text.splitlines()[-1])
    return result


# --------------------------------------------------------------------------- tickline


class TicklineServer:
    """``python -m tickline serve`` on 127.0.0.1 (ports 0), pinned to the server's CPU; stopped by its PID."""

    def __init__(self, send_hz: int, n: int, data_dir: Path) -> None:
        self.send_hz, self.n, self.data_dir = send_hz, n, data_dir
        self.proc: asyncio.subprocess.Process | None = None
        self.port = self.metrics_port = 0

    def argv(self) -> list[str]:
        sets = [a for k, v in GAME_SETTINGS.items() for a in ("--set", f"{k}={v}")]
        return [
            sys.executable,
            "-m",
            "tickline",
            "--log-level",
            "warning",
            "--loop",
            LOOP,
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
            "--tick-rate",
            str(TICK_RATE),
            "--send-rate",
            str(self.send_hz),
            "--matches",
            str(math.ceil(self.n / ROOM_SIZE)),
            "--placement",
            "fill",
            "--seed",
            str(SERVER_SEED),
            *sets,
            *SERVE_EXTRA,
        ]

    async def start(self) -> TicklineServer:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        # Started on the server's CPU: every thread it makes stays there.
        # (Opening a local file takes microseconds, before anything is timed.)
        with open(self.data_dir / "stderr.log", "wb") as errlog, affinity(SERVER_CPUS):  # noqa: ASYNC230
            self.proc = await asyncio.create_subprocess_exec(
                *self.argv(), stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=errlog
            )
        assert self.proc.stdout is not None
        line = await asyncio.wait_for(self.proc.stdout.readline(), 60)
        if not line:
            await self.proc.wait()
            raise RuntimeError(f"tickline serve exited {self.proc.returncode}: {self.stderr_tail()}")
        ready = orjson.loads(line)
        self.port, self.metrics_port = ready["port"], ready["metrics_port"]
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
            await stop_process(self.proc, 15.0)


async def _window(
    server: TicklineServer, begin: float, end: float, on_begin: Callable[[], None] | None = None
) -> dict[str, Any]:
    """The server's and the bots' own accounting at ``begin`` and ``end`` (monotonic)."""

    async def reading() -> dict[str, Any]:
        try:
            samples = await scrape(server.metrics_url)
        except Exception as exc:  # noqa: BLE001 - reported as a caveat
            say(f"metrics scrape failed: {exc}")
            samples = None
        workers = bot_workers()
        return {
            "t": time.monotonic(),
            "server_cpu": process_cpu_s(server.pid) or 0.0,
            "bots_cpu": sum(process_cpu_s(p) or 0.0 for p in workers) + own_cpu_s(),
            "workers": workers,
            "cpu": cpu_busy_s(),
            "rcvbuf": udp_rcvbuf_errors(),
            "samples": samples,
        }

    await asyncio.sleep(max(0.0, begin - time.monotonic()))
    a = await reading()
    if on_begin is not None:
        on_begin()
    await asyncio.sleep(max(0.0, end - time.monotonic()))
    b = await reading()
    wall = b["t"] - a["t"]
    bots_cpu = max(0.0, b["bots_cpu"] - a["bots_cpu"])  # the same workers at both ends: they outlive the window
    out = {
        "t0": a["t"],
        "t1": b["t"],
        "wall": wall,
        "server_cpu_pct": 100 * (b["server_cpu"] - a["server_cpu"]) / wall,
        "bots_cpu_pct": 100 * bots_cpu / wall,
        "bot_workers": len(a["workers"]),
        "machine_busy_pct": busy_pct(a["cpu"], b["cpu"], None, wall),
        # The server's CPU and the load generator's (CPU 0 and CPU 1 on two CPUs, as the peer's).
        "cpu0_busy_pct": busy_pct(a["cpu"], b["cpu"], SERVER_CPUS or {0}, wall),
        "cpu1_busy_pct": busy_pct(a["cpu"], b["cpu"], LOAD_CPUS or {1}, wall),
        "udp_rcvbuf_errors": b["rcvbuf"] - a["rcvbuf"],
    }
    if a["samples"] is not None and b["samples"] is not None:
        out["server"] = server_window(
            Scrape(a["t"], a["samples"]),
            Scrape(b["t"], b["samples"]),
            [Scrape(a["t"], a["samples"]), Scrape(b["t"], b["samples"])],
        )
    return out


async def tickline_turn(
    hz: int,
    n: int,
    window: float,
    settle: float,
    quiet_s: float,
    data_root: Path,
    profile: tuple[Path, float, bool] | None = None,
) -> dict[str, Any]:
    """One tickline turn; with ``profile`` (FILE, seconds, native frames too), py-spy records the
    server from the window's start into FILE and the turn's figures carry its summary as ``profile``."""
    await wait_quiet(quiet_s)
    watch = Watch()
    data_dir = Path(tempfile.mkdtemp(prefix="tl-", dir=data_root))
    server = await TicklineServer(hz, n, data_dir).start()
    sampler: asyncio.Task[dict[str, Any]] | None = None
    spy: asyncio.Task[dict[str, Any]] | None = None
    profiled: dict[str, Any] | None = None
    try:
        ramp_s = n / RAMP_PER_S
        t_call = time.monotonic()
        begin = t_call + 1.0 + ramp_s + settle  # the load test starts its bots 1 s after it is called
        end = begin + window
        duration = ramp_s + settle + window + 1.5  # the first bot still plays when the window ends

        def start_spy() -> None:
            nonlocal spy
            if profile is not None:
                say(f"py-spy record -p {server.pid} -d {profile[1]:g} -> {profile[0]}")
                spy = asyncio.create_task(profile_process(server.pid, profile[1], profile[0], native=profile[2]))

        sampler = asyncio.create_task(_window(server, begin, end, on_begin=start_spy))
        cfg = LoadConfig(
            host=HOST,
            port=server.port,
            n=n,
            duration=duration,
            ramp=RAMP_PER_S,
            behaviour="wander",
            seed=BOT_SEED,
            # The server is read at the window's ends only (_window), as the peer's load client
            # reads its server once, after its window: the load test's once-a-second scrapes
            # would cost tickline's server about 3 ms of CPU each with 200 players.
            metrics_url=None,
            progress=False,
            client=ClientOptions(
                fast=FASTPATH, input_rate=PEER_INPUT_HZ, input_ticks=TICK_RATE // PEER_INPUT_HZ, local_host=HOST
            ),
            loop_factory=QuietLoop(LOOP),
        )
        report = await LoadTest(cfg, on_snapshot=watch).run()
        win = await sampler
    finally:
        if sampler is not None and not sampler.done():
            sampler.cancel()
        if spy is not None:
            profiled = await spy  # py-spy is bounded by its own duration (and profile_process's timeout)
        await server.stop()
        tail = server.stderr_tail(3)
        shutil.rmtree(data_dir, ignore_errors=True)
    t0, t1 = win["t0"], win["t1"]
    # Per bot that joined, connected or not, as the peer divides by its clients; every worker's
    # figures from its own snapshots nearest the window's ends.
    bots = max(1, watch.at_end("joined", t0, t1))
    down_rate, deltas_rate = watch.rate("bytes_down", t0, t1), watch.rate("deltas", t0, t1)
    down = None if down_rate is None else down_rate / bots
    deltas = None if deltas_rate is None else deltas_rate / bots
    connected_min = watch.connected_min(t0, t1)
    # Live counts from the workers' snapshots (the final report loses a worker that had to be terminated).
    lost_in_window = watch.change("disconnects", t0, t1)
    errors_in_window = watch.change("errors", t0, t1)
    last = watch.last()
    lat = watch.samples("ack_latencies", t0 + 1.0, t1)  # batches measured inside the window
    every = watch.samples("latencies", t0 + 1.0, t1)
    srv = win.get("server", {})
    players = srv.get("players_max") or n
    ours = {
        "server_cpu_pct": round(win["server_cpu_pct"], 1),
        "players": int(players),
        "down_bytes_per_s_per_client": rnd(down, 0),
        "deltas_per_s_per_client": rnd(deltas, 1),
        "bytes_per_delta": rnd(down / deltas, 0) if down is not None and deltas else None,
        "lat_p50_ms": rnd(1000 * percentile(lat, 50), 1),
        "lat_p99_ms": rnd(1000 * percentile(lat, 99), 1),
        "lat_samples": len(lat),
        "every_input_lat_p50_ms": rnd(1000 * percentile(every, 50), 1),
        "every_input_lat_p99_ms": rnd(1000 * percentile(every, 99), 1),
        "bots_cpu_pct": round(win["bots_cpu_pct"], 1),
        "bot_workers": win["bot_workers"],
        "cpu0_busy_pct": rnd(win["cpu0_busy_pct"], 1),
        "cpu1_busy_pct": rnd(win["cpu1_busy_pct"], 1),
        "other_cpu_pct": rnd(max(0.0, (win["machine_busy_pct"] or 0) - win["server_cpu_pct"] - win["bots_cpu_pct"]), 1),
        "ticks_per_s": srv.get("ticks_per_s"),
        "inputs_applied_per_s_per_client": rnd(srv["inputs_applied_per_s"] / players, 1) if srv else None,
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
    ours["served"] = bool(
        connected_min is not None
        and connected_min >= n
        and not lost_in_window
        and deltas is not None
        and deltas >= 0.75 * hz
    )
    if report.get("error_reasons"):
        ours["error_reasons"] = report["error_reasons"]
    odd = {
        k: v for k, v in report.get("closed_by_server", {}).items() if k not in ("match over", "server shutting down")
    }
    if odd:
        ours["closed_by_server"] = odd
    if tail and (report["errors"] or report["failures"]):
        ours["server_stderr_tail"] = tail
    if profiled is not None and "error" in profiled:
        ours["profile_error"] = profiled["error"]
    return ours


# --------------------------------------------------------------------------- figures


PEER_KEYS = (
    "serverCpuPct",
    "serverClients",
    "downBpsPerClient",
    "downMsgsPerClient",
    "latP50ms",
    "latP99ms",
    "latSamples",
    "clientCpuPct",
    "otherCpuPct",
    "tickHz",
    "lateTicksPct",
    "tickGapP99ms",
    "patchHz",
    "disconnects",
    "errors",
    "windowS",
    "joinS",
)


def caveats_for(hz: int, ours: list[dict[str, Any]], peers: list[dict[str, Any]], n: int) -> list[str]:
    out: list[str] = []

    def runs(values: list[Any]) -> str:
        return "/".join(str(v) for v in values)

    if not pinning():
        out.append(f"only {CORES} core(s): nothing pinned, server and load generator share cores")
    if any(o["bots_cpu_pct"] >= BOT_SATURATED_PCT for o in ours):
        out.append(
            f"tickline's bot workers saturated their core (CPU 1): {runs([o['bots_cpu_pct'] for o in ours])} % "
            "of a core; bot-side delays add to input_to_visible and late acks can enlarge deltas"
        )
    elif any((o["cpu1_busy_pct"] or 0) >= 95 for o in ours):
        out.append(
            f"the load generator's core (CPU 1) was full: busy {runs([o['cpu1_busy_pct'] for o in ours])} %, "
            f"of which tickline's bots {runs([o['bots_cpu_pct'] for o in ours])} % (the rest: other processes)"
        )
    if any((p.get("clientCpuPct") or 0) >= BOT_SATURATED_PCT for p in peers):
        out.append(f"the peer's load client saturated its core: {runs([p.get('clientCpuPct') for p in peers])} %")
    if any(o["server_cpu_pct"] >= SERVER_SATURATED_PCT for o in ours):
        out.append(f"tickline's server saturated its core (CPU 0): {runs([o['server_cpu_pct'] for o in ours])} %")
    expected = TICK_RATE * math.ceil(n / ROOM_SIZE)
    if any(o["ticks_per_s"] is not None and o["ticks_per_s"] < 0.98 * expected for o in ours):
        out.append(
            f"tickline skipped ticks: {runs([o['ticks_per_s'] for o in ours])} ticks/s over all matches, "
            f"{expected} expected"
        )
    if any(o["tick_late_ms_p99"] is not None and o["tick_late_ms_p99"] > 1000 / TICK_RATE for o in ours):
        out.append(f"tickline ticks ran late: p99 {runs([o['tick_late_ms_p99'] for o in ours])} ms")
    if any((p.get("tickHz") or 60) < 0.97 * TICK_RATE or (p.get("lateTicksPct") or 0) > 1 for p in peers):
        out.append(
            f"the peer's ticks fell behind: {runs([p.get('tickHz') for p in peers])} Hz per room, "
            f"late ticks {runs([p.get('lateTicksPct') for p in peers])} %"
        )
    for key, what in (
        ("disconnects", "bots that lost their connection"),
        ("reconnects", "bots that came back with their token"),
        ("errors", "bots that ended on an error (e.g. no welcome within 10 s)"),
        ("kicked", "connections the server closed (e.g. no hello within 10 s)"),
        ("udp_rcvbuf_errors", "UDP datagrams the kernel dropped at a full socket buffer, machine-wide"),
    ):
        if any(o.get(key) for o in ours):
            out.append(f"tickline {key} ({what}): {runs([o.get(key) for o in ours])}")
    if any(o["failures"] for o in ours):
        out.append("tickline load-test failures: " + "; ".join(f for o in ours for f in o["failures"])[:400])
    if not all(o["served"] for o in ours):
        out.append(
            f"tickline did not serve every player at {hz} Hz in every window (served: "
            f"{runs([o['served'] for o in ours])}; deltas applied per client per s: "
            f"{runs([o['deltas_per_s_per_client'] for o in ours])} of {hz}; connected min "
            f"{runs([o['connected_min'] for o in ours])} of {n}; disconnects in window "
            f"{runs([o['disconnects_in_window'] for o in ours])}): its figures describe a collapsed run, "
            "so no figure of this rate holds"
        )
    if any(o["connected_min"] is not None and o["connected_min"] < n for o in ours):
        out.append(
            f"not every tickline bot was connected through the window: min {runs([o['connected_min'] for o in ours])}"
        )
    out.extend(
        f"peer {key}: {runs([p.get(key) for p in peers])}"
        for key in ("disconnects", "errors")
        if any(p.get(key) for p in peers)
    )
    if any((p.get("serverClients") or n) < n for p in peers):
        out.append(f"not every peer client joined: {runs([p.get('serverClients') for p in peers])}")
    busy = [o["other_cpu_pct"] for o in ours] + [p.get("otherCpuPct") or 0 for p in peers]
    if any(b is not None and b > BUSY_OTHER_PCT for b in busy):
        out.append(
            "other processes were busy on the machine (% of a core; tickline turns then peer turns): "
            f"{runs([o['other_cpu_pct'] for o in ours])} / {runs([p.get('otherCpuPct') for p in peers])}"
        )
    return out


def make_figures(
    hz: int, ours: list[dict[str, Any]], peers: list[dict[str, Any]], n: int, window: float
) -> list[dict[str, Any]]:
    common = {
        "cores": CORES,
        "python": PYTHON,
        "node": NODE_VERSION,
        "scenario": f"N={n} players in rooms of {ROOM_SIZE}, {TICK_RATE} Hz simulation, state sent at {hz} Hz, "
        f"wander bots, {window:g} s windows",
        "pinning": PINNING,
        "game_settings": GAME_SETTINGS,
        "caveats": caveats_for(hz, ours, peers, n),
        "differences": DIFFERENCES,
        "tickline_runs": ours,
        "colyseus_runs": [{k: p.get(k) for k in PEER_KEYS} for p in peers],
    }

    def fig(
        name: str,
        unit: str,
        values: list[float | None],
        baselines: list[float | None],
        baseline_of: str,
        target: str,
        limit: float,
        digits: int,
        measured: str,
    ) -> dict[str, Any]:
        pairs = [(v, b) for v, b in zip(values, baselines, strict=True) if v is not None and b]
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
    per_update = [
        (o["bytes_per_delta"], p["downBpsPerClient"] / p["downMsgsPerClient"])
        for o, p in zip(ours, peers, strict=True)
        if o.get("bytes_per_delta") and p.get("downMsgsPerClient")
    ]
    extra = {
        f"down_bytes_per_player_{hz}hz": {
            "bytes_per_update": rnd(med([a for a, _ in per_update]), 0),
            "bytes_per_update_baseline": rnd(med([b for _, b in per_update]), 0),
            "bytes_per_update_ratio": sig(med([a / b for a, b in per_update])) if per_update else None,
            "updates_per_s_per_client": [o["deltas_per_s_per_client"] for o in ours],
            "updates_per_s_per_client_baseline": [p.get("downMsgsPerClient") for p in peers],
        }
    }

    peer_of = (
        f"Colyseus 0.18 (Node {NODE_VERSION}), the peer's server.js and loadclient.js, same N, rooms, rates, "
        "machine and run"
    )
    return [
        fig(
            f"cpu_per_player_{hz}hz",
            "% of one core per player",
            [o["server_cpu_pct"] / o["players"] for o in ours],
            [p["serverCpuPct"] / (p.get("serverClients") or n) for p in peers],
            peer_of,
            f"<= {CPU_TARGETS[hz]}",
            CPU_TARGETS[hz],
            4,
            "server process CPU (utime+stime from its own /proc/PID/stat) over the steady window, in % of one core, "
            "divided by the players it counted connected (tickline_server_players, the larger of the window's two "
            "readings); the peer's serverCpuPct / serverClients, measured the same way",
        ),
        fig(
            f"down_bytes_per_player_{hz}hz",
            "bytes/s per client",
            [o["down_bytes_per_s_per_client"] for o in ours],
            [p["downBpsPerClient"] for p in peers],
            peer_of,
            "<= 0.5",
            0.5,
            0,
            "downstream payload bytes per second per client, counted at the clients: tickline = datagram frame "
            "bytes (fast-path payloads or QUIC DATAGRAM payloads) + control-stream payload bytes "
            "(bots/client.py ClientStats.bytes_down; no fast-path/QUIC/UDP/IP headers, no AEAD tags, no ACK-only "
            "packets); the peer = WebSocket message payload bytes (no WS/TCP/IP framing). "
            "bytes_per_update divides by the state updates the clients applied (the peer: messages received)",
        ),
        fig(
            f"input_to_visible_p99_{hz}hz",
            "ms",
            [o["lat_p99_ms"] for o in ours],
            [p["latP99ms"] for p in peers],
            peer_of,
            "<= 1.0",
            1.0,
            1,
            "p99 of the time from a bot making an input until a state update names that input as applied "
            "(tickline's Delta.seq, the peer's player.ack), one sample per update whose named input moved; "
            "loopback, no added latency. tickline_runs' every_input_lat_p99_ms counts every input",
        ),
    ]


NODE_VERSION = ""


def node_version() -> str:
    try:
        return subprocess.run(["node", "--version"], capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "?"


# --------------------------------------------------------------------------- profiling


# (group, test on a frame's file and function), first match wins
GROUPS: list[tuple[str, Callable[[str, str], bool]]] = [
    (
        "aioquic: crypto/TLS",
        lambda f, fn: (
            "aioquic/quic/crypto.py" in f or "aioquic/_crypto" in f or "aioquic/tls.py" in f or "cryptography" in f
        ),
    ),
    (
        "aioquic: ACKs/loss recovery",
        lambda f, fn: (
            "aioquic/quic/recovery.py" in f
            or "rangeset.py" in f
            or "congestion" in f
            or ("aioquic/quic/connection.py" in f and "ack" in fn.lower())
        ),
    ),
    ("aioquic: packets (parse/build/frames)", lambda f, fn: "aioquic/quic/" in f or "aioquic/buffer" in f),
    ("aioquic: asyncio glue (transmit, timers)", lambda f, fn: "aioquic/asyncio" in f),
    (
        "tickline: sessions/transport/protocol",
        lambda f, fn: "server/session.py" in f or "server/transport.py" in f or "shared/protocol.py" in f,
    ),
    ("tickline: deltas/views", lambda f, fn: "shared/delta.py" in f or ("shared/arena.py" in f and "view" in fn)),
    ("tickline: game step (arena rules, hash)", lambda f, fn: "shared/arena.py" in f or "shared/game.py" in f),
    ("tickline: match loop", lambda f, fn: "server/match.py" in f),
    (
        "event log (SQLite writer, encoding)",
        lambda f, fn: (
            "server/eventlog.py" in f
            or "shared/logformat.py" in f
            or "sqlalchemy" in f
            or "aiosqlite" in f
            or "sqlite3" in f
            or "zstd" in f
        ),
    ),
    (
        "metrics/HTTP",
        lambda f, fn: "server/http.py" in f or "server/stats.py" in f or "aiohttp" in f or "prometheus_client" in f,
    ),
    ("asyncio/event loop/sockets", lambda f, fn: "asyncio/" in f or "selectors.py" in f or "socket.py" in f),
]


def _frame_parts(frame: str) -> tuple[str, str]:
    """("function", "file") of a summary's frame name, ``function (file)``."""
    fn, _, rest = frame.partition(" (")
    return fn, rest.rstrip(")")


def summarize(raw: Path, top: int = 25) -> str:
    """Self time (the innermost frame of each sample) of a py-spy raw file, by group and by
    function (``tickline.bots.profiling.summarize_profile``; samples of threads waiting, in
    select or on a queue, are left out)."""
    summary = summarize_profile(raw, top=100_000)
    by_group: dict[str, float] = {}
    for row in summary["self"]:
        fn, file = _frame_parts(row["frame"])
        group = next((g for g, test in GROUPS if test(file, fn)), "other")
        by_group[group] = by_group.get(group, 0.0) + row["share"]
    here = f"{Path.cwd()}/"
    lines = [
        f"{summary['busy_samples']} busy samples, all threads ({summary['samples'] - summary['busy_samples']} "
        "more were threads waiting, left out)",
        "self time by group:",
    ]
    lines += [f"  {100 * share:5.1f} %  {g}" for g, share in sorted(by_group.items(), key=lambda x: -x[1])]
    lines += [f"top {top} functions by self time:"]
    lines += [f"  {100 * row['share']:5.1f} %  {row['frame'].replace(here, '')}" for row in summary["self"][:top]]
    return "\n".join(lines)


# --------------------------------------------------------------------------- main


# --------------------------------------------------------------------------- capacity

CAPACITY_HZ = 30  # sends (patches) per second in the capacity searches; both tick at TICK_RATE
CAPACITY_TARGET = 1.0
SATURATED_PCT = 95.0  # a load generator this busy (of one core) may be the limit itself
MIN_PATCH_SHARE = 0.75  # of CAPACITY_HZ, a client's mean patches (deltas) per second
# Of PEER_INPUT_HZ, the inputs tickline's server applied per player per second. A load generator
# that falls behind sends fewer, and the server then passes with less than the scenario's load:
# at 700-850 players, with the generator's core full, its CPU grew 12-16 % for a third more players.
MIN_INPUT_SHARE = 0.95
# Both searches judge tick lateness p99 against one tick interval. The peer reports its ticks'
# gaps in whole milliseconds, and with a bound of a few ms its verdicts followed its timer's
# jitter at a fifth of a core (they flipped between tries at 250-375 players); a whole tick
# late at p99 is what players see as a stutter, whichever server it is.
CAPACITY_BOUND_MS = round(1000 / TICK_RATE, 1)


def _probe_shape(n: int, why: list[str], seconds: float, **figures: Any) -> dict[str, Any]:
    """A probe as bots.capacity's search and its reports read one."""
    return {"n": n, "pass": not why, "why": why, "seconds": round(seconds, 1), **figures}


async def capacity_probe_tickline(n: int, cfg: CapacityConfig, data_root: Path, window: float) -> dict[str, Any]:
    began = time.monotonic()
    t = await tickline_turn(CAPACITY_HZ, n, window, 1.0, 0, data_root)
    bound, late, ticks = cfg.probe.bound_ms, t["tick_late_ms_p99"], t["ticks_per_s"]
    due = MIN_TICK_SHARE * TICK_RATE * math.ceil(n / ROOM_SIZE)
    why = []
    if not t["served"]:
        why.append(
            f"not every player was served (connected min {t['connected_min']}, lost {t['disconnects_in_window']})"
        )
    if t["errors_in_window"]:
        why.append(f"{t['errors_in_window']} client errors")
    if late is None or late >= bound:
        why.append(f"tick lateness p99 {late} ms >= {bound:g} ms")
    if not ticks or ticks < due - 0.5:  # (rounded figures)
        why.append(f"{ticks} ticks/s < {due:.0f}")
    if t["deltas_per_s_per_client"] < MIN_PATCH_SHARE * CAPACITY_HZ:  # (the peer's rule, below)
        why.append(f"{t['deltas_per_s_per_client']} deltas/s a client < {MIN_PATCH_SHARE:.0%} of {CAPACITY_HZ}")
    applied = t["inputs_applied_per_s_per_client"]
    if applied is None or applied < MIN_INPUT_SHARE * PEER_INPUT_HZ:
        why.append(
            f"{applied} inputs/s applied a player < {MIN_INPUT_SHARE:.0%} of {PEER_INPUT_HZ}: "
            "the players sent less than the scenario's load"
        )
    bots = t["bots_cpu_pct"]
    return _probe_shape(
        n,
        why,
        time.monotonic() - began,
        tick_late_ms_p99=late,
        ticks_per_s=ticks,
        server_cpu_percent=t["server_cpu_pct"],
        recv_share_min=None,
        generator_cpu_percent=bots,
        generator_saturated=bots >= SATURATED_PCT * max(1, len(LOAD_CPUS or ())),
        other_on_server_cpu_percent=t["other_cpu_pct"],
        turn=t,
    )


async def capacity_probe_colyseus(n: int, cfg: CapacityConfig, work: Path, window: float) -> dict[str, Any]:
    began = time.monotonic()
    p = await peer_turn(CAPACITY_HZ, n, int(window), 0, work)
    bound, interval = cfg.probe.bound_ms, 1000 / TICK_RATE
    # The peer reports the gaps between a room's ticks; a gap over the interval is lateness.
    late = None if p.get("tickGapP99ms") is None else round(max(0.0, p["tickGapP99ms"] - interval), 2)
    why = []
    if p["serverClients"] < n or p["disconnects"]:
        why.append(f"{p['serverClients']} of {n} in the room, {p['disconnects']} disconnects")
    if p["errors"]:
        why.append(f"{p['errors']} client errors")
    if late is None or late >= bound:
        why.append(f"tick lateness p99 {late} ms >= {bound:g} ms")
    if p["tickHz"] < MIN_TICK_SHARE * TICK_RATE:
        why.append(f"{p['tickHz']} ticks/s a room < {MIN_TICK_SHARE * TICK_RATE:.0f}")
    if p["downMsgsPerClient"] < MIN_PATCH_SHARE * CAPACITY_HZ:
        why.append(f"{p['downMsgsPerClient']} patches/s a client < {MIN_PATCH_SHARE:.0%} of {CAPACITY_HZ}")
    return _probe_shape(
        n,
        why,
        time.monotonic() - began,
        tick_late_ms_p99=late,
        ticks_per_s=p["tickHz"],
        server_cpu_percent=p["serverCpuPct"],
        recv_share_min=None,
        generator_cpu_percent=p["clientCpuPct"],
        generator_saturated=p["clientCpuPct"] >= SATURATED_PCT,  # (one Node process: one core)
        other_on_server_cpu_percent=p["otherCpuPct"],
        peer={k: p.get(k) for k in PEER_KEYS},
    )


def capacity_verdict(
    t: dict[str, Any], c: dict[str, Any]
) -> tuple[float | None, list[float | None], bool | None, str | None]:
    """(ratio, [low, high] bounds, holds, why) of two searches' answers (``search_json``).

    A search without a figure still bounds its side from below (its largest pass held the
    whole load), not from above (its failure may be the load generator's): so the ratio's
    low bound needs the peer's figure and its high bound tickline's. A low bound at or
    above the target settles it, as the figure would.
    """
    ratio = round(t["players"] / c["players"], 3) if t["players"] and c["players"] else None
    low, high = ratio_bounds(t, c)
    bounds = [low if c["players"] else None, high if t["players"] else None]
    unanswered = "; ".join(f"{name}: {s['why']}" for name, s in (("tickline", t), ("colyseus", c)) if not s["players"])
    if ratio is not None:
        return ratio, bounds, ratio >= CAPACITY_TARGET, None
    if bounds[0] is not None and bounds[0] >= CAPACITY_TARGET:
        return None, bounds, True, f"held by the low bound {bounds[0]} ({unanswered})"
    return None, bounds, None, unanswered


async def capacity(args: argparse.Namespace, data_root: Path) -> dict[str, Any]:
    """Both capacity searches, a probe of each in turn: ``capacity_players_vs_colyseus``."""
    began = time.monotonic()
    window = args.seconds or (6 if args.quick else 10)
    cfg = CapacityConfig(
        probe=ProbeSettings(
            tick_rate=TICK_RATE,
            send_rate=CAPACITY_HZ,
            bound_ms=args.capacity_bound_ms,
            steady_s=window,
            ramp=RAMP_PER_S,
        ),
        start=args.capacity_start,
        max_players=args.capacity_max,
        budget_s=args.capacity_budget_s,
        quiet_wait_s=args.wait_quiet if args.wait_quiet is not None else 5,
        quick=args.quick,
    )
    work = peer_work_dir(args.peer_work)
    install_peer(work)
    ours = Contender("tickline", lambda n, _i: capacity_probe_tickline(n, cfg, data_root, window), overhead_s=8.0)
    peer = Contender("colyseus", lambda n, _i: capacity_probe_colyseus(n, cfg, work, window), overhead_s=8.0)
    await run_searches(cfg, [ours, peer])
    t, c = search_json(ours), search_json(peer)
    ratio, bounds, holds, why = capacity_verdict(t, c)
    return {
        "figure": "capacity_players_vs_colyseus",
        "value": t["players"],
        "unit": "players",
        "baseline": c["players"],
        "baseline_of": f"Colyseus 0.18 (Node {NODE_VERSION}) on one core, the peer's server.js and loadclient.js, "
        f"rooms of {ROOM_SIZE}, {TICK_RATE} Hz simulation and {CAPACITY_HZ} Hz patches, same run",
        "ratio": ratio,
        "target": f">= {CAPACITY_TARGET}",
        "holds": holds,
        "why": why,
        "runs": 1,
        "spread": [ratio, ratio],
        "ratio_bounds": bounds,
        "tickline_bracket": [t["at_least"], t["below"]],
        "colyseus_bracket": [c["at_least"], c["below"]],
        "measured": f"the largest n (rooms of {ROOM_SIZE}) each server holds with every player served, no errors, "
        f"tick lateness p99 < {cfg.probe.bound_ms:g} ms and >= {MIN_TICK_SHARE:.0%} of its ticks, tickline at "
        f"{TICK_RATE} Hz ticks and {CAPACITY_HZ} Hz sends; bracketed by doubling then bisection to "
        f"{cfg.tolerance:.0%} (bots.capacity's search), the two searches in turns",
        "caveats": [
            "the peer reports its ticks' gaps (setInterval), not a schedule's lateness: a gap over 16.7 ms is "
            "counted as lateness",
            "the peer reports each client's mean patch rate, not the slowest client's",
            f"only tickline's probes check the inputs its server applied (>= {MIN_INPUT_SHARE:.0%} of "
            f"{PEER_INPUT_HZ} a player a second): the peer's server does not count them, and its load client "
            "stayed near half a core",
        ],
        "cores": CORES,
        "pinning": PINNING,
        "tickline": t,
        "colyseus": c,
        "elapsed_s": round(time.monotonic() - began, 1),
    }


async def amain(args: argparse.Namespace) -> int:
    global NODE_VERSION
    if args.profile_summary:
        print(summarize(Path(args.profile_summary)), file=sys.stderr)
        return 0
    NODE_VERSION = node_version()
    started = time.monotonic()
    if LOAD_CPUS is not None:
        pin_process(os.getpid(), LOAD_CPUS)  # the bot workers the load test spawns inherit it
    data_root = Path(tempfile.mkdtemp(prefix="vs-colyseus-"))
    try:
        if args.profile:
            out = Path(args.profile)
            window = max(args.seconds or 0, args.profile_seconds + 2)
            say(f"profiling tickline at N={args.n}, {args.profile_hz} Hz send, {args.profile_seconds:g} s")
            turn = await tickline_turn(
                args.profile_hz,
                args.n,
                window,
                args.settle,
                0,
                data_root,
                profile=(out, args.profile_seconds, args.profile_native),
            )
            say("turn: " + json.dumps(turn))
            if "profile_error" in turn:
                say(f"no profile: {turn['profile_error']}")
                return 1
            summary = summarize(out)
            Path(str(out) + ".summary.txt").write_text(summary + "\n")  # noqa: ASYNC240 - after the turn
            print(summary, file=sys.stderr)
            return 0

        if args.capacity:
            result = await capacity(args, data_root)
            Report(Path(args.json_out) if args.json_out else None).emit(result)
            say(f"done in {time.monotonic() - started:.0f} s")
            return 0

        rounds = args.rounds or (1 if args.quick else 3)
        window = args.seconds or (10 if args.quick else 20)
        quiet = args.wait_quiet if args.wait_quiet is not None else (2 if args.quick else 5)
        work = peer_work_dir(args.peer_work)
        npm_s = install_peer(work)
        say(
            f"N={args.n}, rounds={rounds}, window={window}s, wait_quiet={quiet}s, cores={CORES}, "
            f"peer in {work} (install {npm_s:.1f}s)"
        )
        ours: dict[int, list[dict[str, Any]]] = {hz: [] for hz in RATES}
        peers: dict[int, list[dict[str, Any]]] = {hz: [] for hz in RATES}
        for r in range(rounds):
            for hz in RATES:
                say(f"round {r + 1}/{rounds}, {hz} Hz: Colyseus")
                p = await peer_turn(hz, args.n, window, quiet, work)
                peers[hz].append(p)
                say(
                    f"  colyseus cpu={p['serverCpuPct']}% clients={p['serverClients']} "
                    f"down={p['downBpsPerClient']}B/s lat p50/p99={p['latP50ms']}/{p['latP99ms']}ms "
                    f"loadgen={p['clientCpuPct']}% other={p['otherCpuPct']}%"
                )
                say(f"round {r + 1}/{rounds}, {hz} Hz: tickline")
                o = await tickline_turn(hz, args.n, window, args.settle, quiet, data_root)
                ours[hz].append(o)
                say(
                    f"  tickline cpu={o['server_cpu_pct']}% players={o['players']} "
                    f"down={o['down_bytes_per_s_per_client']}B/s "
                    f"lat p50/p99={o['lat_p50_ms']}/{o['lat_p99_ms']}ms bots={o['bots_cpu_pct']}% "
                    f"ticks/s={o['ticks_per_s']} late p99={o['tick_late_ms_p99']}ms other={o['other_cpu_pct']}% "
                    f"disc={o['disconnects']} err={o['errors']}"
                )
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.vs_colyseus", description="tickline vs Colyseus 0.18, arena scenario, side by side"
    )
    parser.add_argument("--quick", action="store_true", help="one round of 10 s windows (about 2-4 minutes)")
    parser.add_argument("--json-out", metavar="FILE", help="also write the JSON lines here")
    parser.add_argument("--n", type=int, default=200, help="players (default 200), in rooms of 50")
    parser.add_argument("--seconds", type=int, help="measurement window per turn (default 20, --quick 10)")
    parser.add_argument("--rounds", type=int, help="rounds of turns (default 3, --quick 1)")
    parser.add_argument("--settle", type=float, default=3.0, help="seconds after tickline's ramp before its window")
    parser.add_argument(
        "--wait-quiet",
        type=float,
        help="before each turn, wait up to this long for an idle "
        "machine, as the peer's WAIT_QUIET (default 5, --quick 2)",
    )
    parser.add_argument(
        "--peer-dir",
        help="the Colyseus peer's folder, with run.sh (default $TICKLINE_PEER_DIR, else "
        "shared/peers/colyseus beside the checkout)",
    )
    parser.add_argument(
        "--peer-work", help="writable copy of the peer (default $PEER_WORK or $TMPDIR/colyseus-peer-work)"
    )
    parser.add_argument(
        "--profile",
        metavar="FILE",
        help="instead of the figures: one tickline turn with py-spy "
        "recording the server (raw format) into FILE, and a self-time summary on stderr",
    )
    parser.add_argument(
        "--capacity",
        action="store_true",
        help=f"instead of the figures: capacity_players_vs_colyseus, the players each holds at {TICK_RATE} Hz "
        f"ticks and {CAPACITY_HZ} Hz sends",
    )
    parser.add_argument("--capacity-start", type=int, default=200, help="the searches' first n (default 200)")
    parser.add_argument("--capacity-max", type=int, default=3200, help="the searches' cap (default 3200)")
    parser.add_argument("--capacity-budget-s", type=float, default=1500.0, help="time for both searches (default 1500)")
    parser.add_argument(
        "--capacity-bound-ms",
        type=float,
        default=CAPACITY_BOUND_MS,
        help=f"the searches' tick lateness p99 bound (default {CAPACITY_BOUND_MS:g}, one tick interval)",
    )
    parser.add_argument("--profile-hz", type=int, default=60, choices=RATES)
    parser.add_argument("--profile-seconds", type=float, default=10.0)
    parser.add_argument(
        "--profile-native", action="store_true", help="py-spy --native: C frames too (native modules, the kernel calls)"
    )
    parser.add_argument("--profile-summary", metavar="RAW", help="only summarise an existing py-spy raw file")
    parser.add_argument(
        "--loop",
        default="auto",
        choices=loops.LOOPS,
        help="event loop of tickline's server and bots (default: auto, uvloop where installed)",
    )
    parser.add_argument("--no-fastpath", action="store_true", help="tickline's bots keep every datagram on QUIC")
    args = parser.parse_args(argv)
    if args.n < 1:
        parser.error("--n must be at least 1")
    try:
        loops.loop_factory(args.loop)
    except loops.LoopUnavailable as exc:
        parser.error(str(exc))
    global LOOP, FASTPATH, SERVE_EXTRA, PEER_DIR
    LOOP, FASTPATH = args.loop, not args.no_fastpath
    PEER_DIR = Path(args.peer_dir or os.environ.get("TICKLINE_PEER_DIR") or DEFAULT_PEER_DIR)
    SERVE_EXTRA = ["--no-fastpath"] if args.no_fastpath else []
    say(
        f"tickline on the {loops.loop_name(loops.loop_factory(LOOP))} loop, "
        f"{'fast path' if FASTPATH else 'QUIC datagrams only'}"
    )
    return loops.run(amain(args), LOOP)


if __name__ == "__main__":
    sys.exit(main())
