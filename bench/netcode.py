"""Benchmark of tickline's netcode, one JSON line per figure (docs/benchmarks.md).

From the repository root, with the project's virtualenv:

    .venv/bin/python -m bench.netcode [--quick] [--json-out FILE]

A 32-player arena match at 60 Hz simulation and a 30 Hz send rate (the server's
defaults): a real ``tickline serve`` subprocess per turn, 32 real QUIC arena bots
(60 inputs/s each) in this process. Figures (bench/README.md says what each means):

1. ``down_bytes_per_client_s``              acknowledged-baseline deltas with interest (view_radius 500)
                                            vs full snapshots (``--full-snapshots --set view_radius=0``)
2. ``down_bytes_per_client_s_no_interest``  deltas with ``view_radius=0`` vs the same full snapshots
3. ``down_bytes_per_client_s_loss5``        (1) through ImpairmentProxy with 5 % loss each way, vs full
                                            snapshots through the same impairment
4. ``server_cpu_us_per_client_send``        server process CPU (/proc/PID/stat) per client per send,
                                            for the servers of (1): deltas with interest vs full snapshots

Each round runs every configuration once, in turns (A B A B ...; every other
round in reverse order); a figure's ratio is the median of its per-round ratios.
Only stdout carries the JSON lines; progress goes to stderr. Everything binds
127.0.0.1 (the bots' sockets too: ``ClientOptions(local_host=...)``); every server
started here is stopped by its PID (SIGTERM, then waited for).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import platform
import shutil
import signal
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import orjson

from bench.report import Report, med, rnd, sig, udp_rcvbuf_errors
from tickline.bots.arena_bot import ArenaBot
from tickline.bots.client import ClientError, ClientOptions, GameClient
from tickline.bots.impair import Impairment, ImpairmentProxy
from tickline.bots.metrics import sample_sum, scrape
from tickline.bots.procstat import CORES, cpu_busy_s, own_cpu_s, process_cpu_s
from tickline.bots.world import ClientWorld
from tickline.shared.protocol import MAX_DATAGRAM, Delta, encode, encode_packed_delta, unpack_diff

HOST = "127.0.0.1"
PLAYERS = 32
TICK_RATE = 60
SEND_RATE = 30
SERVER_SEED = 11  # the match's seed: every turn plays the same spawns and pickups
BOT_SEED = 1  # bot i's own choices are seeded BOT_SEED + i, as run_swarm does
LOSS_SEED = 5
RAMP_S = 0.02  # bots start this far apart (run_swarm's default)
# Long enough that no match here ends on its own.
GAME_SETTINGS = ["time_limit_s=3600", "score_limit=100000"]
FULL = ["--full-snapshots", "--set", "view_radius=0"]
SAMPLED_BOTS = 4  # bots whose received deltas (inside the window) are kept for the byte profile

PYTHON = platform.python_version()
# Every bot's connection: the SDK's defaults (fast path, one input datagram per send), sent from 127.0.0.1.
BOT_OPTIONS = ClientOptions(local_host=HOST)
# The server's own counters read around each window (its /metrics).
SERVER_COUNTERS = (
    "tickline_server_ticks_total",
    "tickline_server_bytes_down_total",
    "tickline_server_players",
    "tickline_fastpath_bytes_out_total",
    "tickline_fastpath_packets_out_total",
)


@dataclass(frozen=True)
class Config:
    name: str
    serve_args: list[str]
    loss: float = 0.0  # > 0: the bots reach the server through ImpairmentProxy
    full: bool = False  # the server sends full snapshots


CONFIGS = [
    Config("delta_interest", []),
    Config("full", FULL, full=True),
    Config("delta_no_interest", ["--set", "view_radius=0"]),
    Config("delta_interest_loss5", [], loss=0.05),
    Config("full_loss5", FULL, loss=0.05, full=True),
]


# --------------------------------------------------------------------------- reporting


def say(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def figure(
    name: str,
    unit: str,
    values: list[float],
    baselines: list[float],
    baseline_of: str,
    target: str,
    holds_ratio: float | None,
    digits: int,
    **extra: Any,
) -> dict[str, Any]:
    """value and baseline: medians of the turns; ratio: median of the per-round ratios,
    spread their min and max; ``holds``: ratio <= ``holds_ratio`` (None: report only)."""
    ratios = [v / b for v, b in zip(values, baselines, strict=True) if b]
    ratio = med(ratios)
    return {
        "figure": name,
        "value": rnd(med(values), digits),
        "unit": unit,
        "baseline": rnd(med(baselines), digits),
        "baseline_of": baseline_of,
        "ratio": sig(ratio),
        "target": target,
        "holds": None if holds_ratio is None else bool(ratio <= holds_ratio),
        "runs": len(ratios),
        "spread": [sig(min(ratios)), sig(max(ratios))] if ratios else None,
        "cores": CORES,
        "python": PYTHON,
        **extra,
    }


# --------------------------------------------------------------------------- what is measured, and how


def machine_busy_s() -> float:
    """CPU seconds every process on the machine has used, all CPUs together."""
    return sum(cpu_busy_s().values())


async def server_counters(server: ServerProc) -> dict[str, float]:
    """The server's own counters (SERVER_COUNTERS) from its /metrics on 127.0.0.1."""
    samples = await scrape(f"http://{HOST}:{server.metrics_port}/metrics", timeout=5.0)
    return {name: sample_sum(samples, name) for name in SERVER_COUNTERS}


# A kept delta frame: the frame (its diff unpacked) and its size as it came, on the wire.
Kept = tuple[Delta, int]


class CountingWorld(ClientWorld):
    """A bot's world that also counts the delta frames it is given, and the full snapshots
    (base 0) among them, and, while ``keep`` is a list, keeps each with its size as it came.

    Every delta reaches the world, whatever carried it: a packed datagram (fast path or
    QUIC) through ``on_packed_delta``, a frame on the control stream through ``on_delta``.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.delta_frames = 0
        self.full_frames = 0
        self.keep: list[Kept] | None = None

    def reconnected(self) -> CountingWorld:
        """``GameClient.connect`` starts each connection's world from the one it is given this
        way; the bench's bots connect once, so there is no input numbering to carry over."""
        assert self.last_seq == 0 and self.server_seq == 0, "a bench bot does not reconnect"
        return CountingWorld(self.rules, self.player_id, self.tick_rate, self.interp_ticks, self.shared)

    def on_delta(self, frame: Delta, now: float = 0.0) -> bool:
        self.delta_frames += 1
        self.full_frames += frame.base == 0
        if self.keep is not None:
            self.keep.append((frame, len(encode(frame))))
        return super().on_delta(frame, now)

    def on_packed_delta(self, tick: int, base: int, seq: int, packed: bytes, now: float = 0.0) -> bool:
        self.delta_frames += 1
        self.full_frames += base == 0
        if self.keep is not None:
            frame = Delta(tick=tick, base=base, seq=seq, diff=unpack_diff(packed))
            self.keep.append((frame, len(encode_packed_delta(tick, base, seq, packed))))
        return super().on_packed_delta(tick, base, seq, packed, now)


def world_of(client: GameClient) -> CountingWorld:
    world = client.world
    assert isinstance(world, CountingWorld)
    return world


def counters(client: GameClient) -> dict[str, int]:
    """A bot's own counts so far: its SDK's stats and its world's frame counts."""
    world = world_of(client)
    return {
        "bytes_down": client.stats.bytes_down,
        "delta_frames": world.delta_frames,
        "full_frames": world.full_frames,
        "deltas_applied": client.stats.deltas_applied,
        "datagrams_down": client.stats.datagrams_down,
        "inputs_sent": client.stats.inputs_sent,
    }


@dataclass
class Swarm:
    """32 arena bots in this process, each playing one input per tick as bots.swarm does."""

    port: int
    cafile: str
    clients: dict[int, GameClient] = field(default_factory=dict)
    tried: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    close_reasons: Counter[str] = field(default_factory=Counter)
    slips: int = 0  # bot ticks that began more than one tick period late
    all_tried: asyncio.Event = field(default_factory=asyncio.Event)
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def connected(self) -> int:
        return len(self.clients)

    def count_tried(self) -> None:
        self.tried += 1
        if self.tried == PLAYERS:
            self.all_tried.set()

    async def bot(self, i: int) -> None:
        # As tickline.bots.swarm.run_bot plays, with a stop signal in place of a deadline (so that
        # the window's counters can be read while every bot still plays) and a count
        # of late ticks (does this process keep up with 32 bots at 60 Hz?).
        await asyncio.sleep(i * RAMP_S)
        loop = asyncio.get_running_loop()
        period = 1 / TICK_RATE
        try:
            async with GameClient.connect(
                HOST,
                self.port,
                f"bot{i + 1}",
                cafile=self.cafile,
                timeout=15.0,
                world=CountingWorld(),
                options=BOT_OPTIONS,
            ) as client:
                assert client.welcome is not None
                bot = ArenaBot(client.player_id, BOT_SEED + i, client.welcome.config)
                self.clients[i] = client
                self.count_tried()
                next_tick = loop.time()
                while not self.stop.is_set() and not client.closed.is_set():
                    next_tick += period
                    delay = next_tick - loop.time()
                    if delay > 0:
                        await asyncio.sleep(delay)
                    else:
                        self.slips += delay < -period
                        next_tick = loop.time()  # fell behind: do not try to catch up
                    if client.closed.is_set() or self.stop.is_set():
                        break
                    client.send_input(bot.decide(client.world, client.now()))
                if client.closed.is_set():
                    self.close_reasons[client.close_reason] += 1
        except Exception as exc:  # noqa: BLE001 - counted and reported; the turn goes on
            self.errors[str(exc) if isinstance(exc, ClientError) else repr(exc)] += 1
            if i not in self.clients:
                self.count_tried()

    def counters(self) -> dict[str, int]:
        total: Counter[str] = Counter()
        for client in self.clients.values():
            total.update(counters(client))
        return dict(total)


# --------------------------------------------------------------------------- servers


class ServerProc:
    """``python -m tickline serve`` on 127.0.0.1, port 0, its own data dir; stopped by PID."""

    def __init__(self, config: Config, data_dir: Path) -> None:
        self.config = config
        self.data_dir = data_dir
        self.proc: asyncio.subprocess.Process | None = None
        self.port = 0
        self.metrics_port = 0
        self.cert = ""
        self.stderr_file: BinaryIO | None = None
        self.terminated = False

    async def start(self) -> ServerProc:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        sets = [arg for kv in GAME_SETTINGS for arg in ("--set", kv)]
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
            "--tick-rate",
            str(TICK_RATE),
            "--send-rate",
            str(SEND_RATE),
            "--seed",
            str(SERVER_SEED),
            *sets,
            *self.config.serve_args,
        ]
        # Closed in stop(); opening a local file takes microseconds, before anything is timed.
        self.stderr_file = open(self.data_dir / "stderr.log", "wb")  # noqa: SIM115, ASYNC230
        self.proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=self.stderr_file,
        )
        assert self.proc.stdout is not None
        line = await asyncio.wait_for(self.proc.stdout.readline(), 60)
        if not line:
            await self.proc.wait()
            raise RuntimeError(
                f"tickline serve ({self.config.name}) exited {self.proc.returncode}: {self.stderr_tail()}"
            )
        ready = orjson.loads(line)
        self.port, self.cert, self.metrics_port = ready["port"], ready["cert"], ready["metrics_port"]
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def cpu_s(self) -> float:
        """The server process's utime + stime so far (all its threads)."""
        cpu = process_cpu_s(self.pid)
        if cpu is None:
            raise RuntimeError(f"cannot read the CPU time of server {self.pid} (/proc/PID/stat)")
        return cpu

    def stderr_tail(self, n: int = 5) -> str:
        try:
            lines = (self.data_dir / "stderr.log").read_text(errors="replace").strip().splitlines()
        except OSError:
            return ""
        return " | ".join(lines[-n:])

    def terminate(self) -> None:
        """SIGTERM, once: a second one could land after the server's asyncio loop (and its
        handler) is gone, and kill it mid-shutdown."""
        if self.proc is not None and self.proc.returncode is None and not self.terminated:
            self.terminated = True
            self.proc.send_signal(signal.SIGTERM)

    async def stop(self) -> int | None:
        """SIGTERM (if not sent yet), then wait; SIGKILL after 20 s. Returns the exit status."""
        proc = self.proc
        if proc is None:
            return None
        self.terminate()
        try:
            await asyncio.wait_for(proc.wait(), 20)
        except TimeoutError:
            say(f"server {proc.pid} ({self.config.name}) still running 20 s after SIGTERM; SIGKILL")
            proc.kill()
            await proc.wait()
        if self.stderr_file is not None:
            self.stderr_file.close()
        return proc.returncode


# --------------------------------------------------------------------------- one turn


@dataclass
class Turn:
    config: str
    round: int
    window_s: float
    connected: int
    bytes_per_client_s: float  # what the figures report: the bots' own counts
    server_bytes_per_client_s: float  # what the server says it sent (its /metrics)
    # Fast-path packets the server sent, as UDP payloads (header and AEAD tag included), from its
    # /metrics: the wire's side of the datagram frames; QUIC packets (the control stream, ACKs) not in it.
    fast_wire_bytes_per_client_s: float
    fast_packets_per_client_s: float
    deltas_per_client_s: float  # applied
    frames_per_client_s: float  # received
    full_share: float  # received frames that were full snapshots (base 0)
    datagram_share: float  # received frames that came as datagrams (not on the stream)
    bytes_per_frame: float
    inputs_per_client_s: float
    sends: int  # server sends in the window: ticks run / (tick rate / send rate) x players
    server_cpu_pct: float
    cpu_us_per_client_send: float
    bench_cpu_pct: float
    others_cpu_pct: float  # every other process on the machine
    slips: int
    rcvbuf_drops: int
    proxy_loss: dict[str, float] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    samples: list[Kept] = field(default_factory=list)
    server_exit: int | None = None

    @property
    def collapsed(self) -> bool:
        """A delta configuration that fell back to full snapshots on the reliable stream
        (see bench/README.md: once behind, it stays behind)."""
        return not CONFIG_BY_NAME[self.config].full and (self.full_share > 0.05 or self.datagram_share < 0.8)

    @property
    def behind(self) -> bool:
        return self.deltas_per_client_s < 0.9 * SEND_RATE or self.inputs_per_client_s < 0.95 * TICK_RATE


CONFIG_BY_NAME = {c.name: c for c in CONFIGS}


async def run_turn(
    config: Config, server: ServerProc, round_no: int, warmup_s: float, window_s: float, start_next: Callable[[], None]
) -> Turn:
    """32 bots against ``server`` (started already); counters read over the steady window.

    ``start_next()`` is called as soon as the window ends, so that the next turn's
    server starts while this one's bots and server wind down.
    """
    proxy: ImpairmentProxy | None = None
    port = server.port
    if config.loss:
        proxy = ImpairmentProxy(Impairment(latency_ms=0, loss=config.loss, seed=LOSS_SEED))
        port = await proxy.start((HOST, 0), (HOST, server.port))
    swarm = Swarm(port, server.cert)
    tasks = [asyncio.create_task(swarm.bot(i)) for i in range(PLAYERS)]
    began = time.monotonic()
    try:
        with contextlib.suppress(TimeoutError):  # then some bots did not connect: said below
            await asyncio.wait_for(swarm.all_tried.wait(), 40)
        connect_s = time.monotonic() - began
        if swarm.connected < PLAYERS:
            say(f"  {config.name}: only {swarm.connected}/{PLAYERS} bots connected: {dict(swarm.errors)}")
        if not swarm.connected:
            raise RuntimeError(f"no bot could connect to the {config.name} server: {dict(swarm.errors)}")
        # Warm-up: every bot has had its welcome and its first full snapshot (base 0:
        # nothing acknowledged yet); let those and the handshakes' CPU pass.
        await asyncio.sleep(warmup_s)
        # The steady window. Bytes are the bots' own counters (those run_swarm sums),
        # read here at the window's start and end while all 32 bots play: the
        # handshake, welcome and first full snapshot of each bot fall before it.
        # The server's CPU is read from /proc/PID/stat at the same two moments, and
        # its tick counter (for the number of sends) from its /metrics just outside them.
        for i, client in swarm.clients.items():
            if i < SAMPLED_BOTS:
                world_of(client).keep = []
        m0 = await server_counters(server)
        slips0, c0, s0, b0, a0, e0, t0 = (
            swarm.slips,
            swarm.counters(),
            server.cpu_s(),
            own_cpu_s(),
            machine_busy_s(),
            udp_rcvbuf_errors(),
            time.monotonic(),
        )
        p0 = (
            (proxy.stats.down.packets, proxy.stats.down.dropped, proxy.stats.up.packets, proxy.stats.up.dropped)
            if proxy
            else (0, 0, 0, 0)
        )
        await asyncio.sleep(window_s)
        slips1, c1, s1, b1, a1, e1, t1 = (
            swarm.slips,
            swarm.counters(),
            server.cpu_s(),
            own_cpu_s(),
            machine_busy_s(),
            udp_rcvbuf_errors(),
            time.monotonic(),
        )
        p1 = (
            (proxy.stats.down.packets, proxy.stats.down.dropped, proxy.stats.up.packets, proxy.stats.up.dropped)
            if proxy
            else (0, 0, 0, 0)
        )
        m1 = await server_counters(server)
        samples = [kept for client in swarm.clients.values() for kept in world_of(client).keep or ()]
        for client in swarm.clients.values():
            world_of(client).keep = None
    finally:
        start_next()
        wind_down = time.monotonic()
        # The bots say bye and the server is told to stop at once: bots stuck behind a
        # stream backlog are then closed by the server's goodbye.
        swarm.stop.set()
        server.terminate()
        _, pending = await asyncio.wait(tasks, timeout=3)
        for task in pending:  # still draining (3 PTOs of a backlogged RTT): let them go
            task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=2)
        if proxy is not None:
            proxy.close()
        status = await server.stop()
        wind_down = time.monotonic() - wind_down
    n = swarm.connected or 1
    dt = t1 - t0
    dc = {k: c1.get(k, 0) - c0.get(k, 0) for k in c1}
    frames = dc.get("delta_frames", 0)
    ticks = m1["tickline_server_ticks_total"] - m0["tickline_server_ticks_total"]
    players = int(m1["tickline_server_players"]) or n
    sends = int(ticks // (TICK_RATE // SEND_RATE)) * players
    cpu, bench = s1 - s0, b1 - b0
    proxy_loss = {}
    if proxy is not None:
        proxy_loss = {
            "down": round((p1[1] - p0[1]) / max(1, p1[0] - p0[0]), 4),
            "up": round((p1[3] - p0[3]) / max(1, p1[2] - p0[2]), 4),
        }
    turn = Turn(
        config=config.name,
        round=round_no,
        window_s=dt,
        connected=swarm.connected,
        bytes_per_client_s=dc.get("bytes_down", 0) / n / dt,
        server_bytes_per_client_s=(m1["tickline_server_bytes_down_total"] - m0["tickline_server_bytes_down_total"])
        / players
        / dt,
        fast_wire_bytes_per_client_s=(m1["tickline_fastpath_bytes_out_total"] - m0["tickline_fastpath_bytes_out_total"])
        / players
        / dt,
        fast_packets_per_client_s=(
            m1["tickline_fastpath_packets_out_total"] - m0["tickline_fastpath_packets_out_total"]
        )
        / players
        / dt,
        deltas_per_client_s=dc.get("deltas_applied", 0) / n / dt,
        frames_per_client_s=frames / n / dt,
        full_share=dc.get("full_frames", 0) / max(1, frames),
        datagram_share=dc.get("datagrams_down", 0) / max(1, frames),
        bytes_per_frame=dc.get("bytes_down", 0) / max(1, frames),
        inputs_per_client_s=dc.get("inputs_sent", 0) / n / dt,
        sends=sends,
        server_cpu_pct=100 * cpu / dt,
        cpu_us_per_client_send=1e6 * cpu / max(1, sends),
        bench_cpu_pct=100 * bench / dt,
        others_cpu_pct=max(0.0, 100 * ((a1 - a0) - cpu - bench) / dt),
        slips=slips1 - slips0,
        rcvbuf_drops=e1 - e0,
        proxy_loss=proxy_loss,
        errors=dict(swarm.errors),
        samples=samples,
        server_exit=status,
    )
    say(
        f"  round {round_no} {config.name:21s} {turn.bytes_per_client_s:8.0f} B/s/client "
        f"({turn.bytes_per_frame:.0f} B/frame, server says {turn.server_bytes_per_client_s:.0f} B/s), "
        f"{turn.deltas_per_client_s:.1f} deltas/s ({turn.datagram_share:.0%} datagrams, "
        f"{turn.full_share:.0%} full), {turn.inputs_per_client_s:.1f} inputs/s; CPU: server "
        f"{turn.server_cpu_pct:.0f} % ({turn.cpu_us_per_client_send:.0f} us/send), bots "
        f"{turn.bench_cpu_pct:.0f} %, others {turn.others_cpu_pct:.0f} %; slips {turn.slips}, "
        f"rcvbuf drops {turn.rcvbuf_drops}{f', proxy loss {proxy_loss}' if proxy_loss else ''}"
        f"{' COLLAPSED' if turn.collapsed else ''} [connect {connect_s:.1f} s, wind-down {wind_down:.1f} s]"
    )
    if status not in (0, None):
        say(f"  server exited {status}: {server.stderr_tail()}")
    return turn


# --------------------------------------------------------------------------- where the bytes go


def byte_profile(kept: list[Kept]) -> dict[str, Any]:
    """Bytes per received delta frame, split by the part of the view they change.

    The parts are of the frame's JSON (``shared.protocol.encode``), before a packed
    delta's deflate; ``wire_bytes_per_frame`` is what the frames took as they came
    (a packed datagram's deflated body, or the JSON on the control stream).
    A frame is ``{"tick","base","seq","diff","t"}``; the diff is shared.delta's
    ``{"s": {...}, "u": {...}, "r": [...]}`` over the view's keys (players, shots,
    pickups, over, winner). Per table: entities entering the view (the whole
    entity), leaving it (their ids), and changed in part, split by field, with the
    rest of a change (entity ids, ``{"s":{...}}`` nesting, braces) as ``overhead``.
    """
    parts: Counter[str] = Counter()
    counts: Counter[str] = Counter()
    total = 0
    dumps = orjson.dumps
    frames = [frame for frame, _wire in kept]

    def item(key: str, value: Any) -> int:  # '"key":value,'
        return len(dumps(key)) + 1 + len(dumps(value)) + 1

    for frame in frames:
        size = len(encode(frame))
        total += size
        diff = frame.diff
        diff_len = len(dumps(diff))
        parts["envelope: tick, base, seq, t"] += size - diff_len
        counts["full snapshots (base 0)"] += frame.base == 0
        counts["over the datagram limit"] += size > MAX_DATAGRAM
        accounted = 0
        for op in ("s", "u", "r"):
            section = diff.get(op)
            if not section:
                continue
            if op == "r":
                n = item(op, section)
                parts["view keys removed"] += n
                accounted += n
                continue
            for key, value in section.items():
                n = item(key, value)
                accounted += n
                if op == "s" or not isinstance(value, dict):
                    parts[f"{key}: whole" if op == "s" else f"{key}: changed"] += n
                    if op == "s" and isinstance(value, dict):
                        counts[f"{key} sent whole"] += len(value)
                    continue
                inner = n  # a table changed in part: entering / leaving / changing entities
                for sub_op, sub in value.items():
                    if sub_op == "s":
                        parts[f"{key}: entering (whole entity)"] += len(dumps(sub))
                        counts[f"{key} entering"] += len(sub)
                        inner -= len(dumps(sub))
                    elif sub_op == "r":
                        parts[f"{key}: leaving (ids)"] += len(dumps(sub))
                        counts[f"{key} leaving"] += len(sub)
                        inner -= len(dumps(sub))
                    else:
                        changed = len(dumps(sub))
                        for ent in sub.values():
                            counts[f"{key} changed"] += 1
                            for fields_ in ent.values():
                                if isinstance(fields_, dict):
                                    for fname, fval in fields_.items():
                                        n_f = item(fname, fval)
                                        parts[f"{key}: changed .{fname}"] += n_f
                                        changed -= n_f
                        parts[f"{key}: changed, overhead (ids, nesting)"] += changed
                        inner -= len(dumps(sub))
                parts[f"{key}: table delta wrapper"] += inner
        parts["diff: top-level wrapper"] += diff_len - accounted
    n = len(frames) or 1
    return {
        "frames": len(frames),
        "bytes_per_frame": round(total / n, 1),
        "wire_bytes_per_frame": round(sum(wire for _frame, wire in kept) / n, 1),
        "parts_bytes_per_frame": {k: round(v / n, 1) for k, v in parts.most_common() if v},
        "counts_per_frame": {k: round(v / n, 2) for k, v in counts.most_common() if v},
    }


# --------------------------------------------------------------------------- the run


async def amain(args: argparse.Namespace) -> None:
    report = Report(Path(args.json_out) if args.json_out else None)
    rounds = args.rounds or (2 if args.quick else 3)
    window_s = args.window or (3.0 if args.quick else 8.0)
    warmup_s = 1.5 if args.quick else 2.0
    configs = [c for c in CONFIGS if not args.only or c.name in args.only.split(",")]
    started = time.monotonic()
    say(
        f"{PLAYERS} bots, {TICK_RATE} Hz ticks, {SEND_RATE} Hz sends; {rounds} rounds of "
        f"{', '.join(c.name for c in configs)}; {window_s:g} s windows after {warmup_s:g} s of warm-up"
    )
    tmp = Path(tempfile.mkdtemp(prefix="tlbench-netcode-"))
    turns: dict[str, list[Turn]] = {c.name: [] for c in configs}
    # A B A B ...: every round runs each configuration once, every other round in
    # reverse order, so that no configuration always follows the same other one.
    plan = [(r, c) for r in range(1, rounds + 1) for c in (configs if r % 2 else configs[::-1])]

    def launch(k: int) -> asyncio.Task[ServerProc] | None:
        if k >= len(plan):
            return None
        r, c = plan[k]
        return asyncio.create_task(ServerProc(c, tmp / f"{c.name}-{r}").start())

    pending = launch(0)
    try:
        for k, (r, config) in enumerate(plan):
            assert pending is not None
            server = await pending
            pending = None

            def start_next(k: int = k) -> None:
                nonlocal pending
                pending = launch(k + 1)

            turns[config.name].append(await run_turn(config, server, r, warmup_s, window_s, start_next))
    finally:
        if pending is not None:  # a failure left a server starting or started: stop it
            with contextlib.suppress(Exception):  # it failed to start: nothing to stop
                await (await pending).stop()
        shutil.rmtree(tmp, ignore_errors=True)
    emit_figures(report, turns, window_s, warmup_s)
    say(f"done in {time.monotonic() - started:.0f} s")


def emit_figures(report: Report, turns: dict[str, list[Turn]], window_s: float, warmup_s: float) -> None:
    def col(name: str, attr: str) -> list[float]:
        return [getattr(t, attr) for t in turns[name]]

    def side(name: str) -> dict[str, Any]:
        ts = turns[name]
        return {
            "values": [rnd(t.bytes_per_client_s, 0) for t in ts],
            "bytes_per_frame": rnd(med(col(name, "bytes_per_frame")), 0),
            "deltas_per_client_s": rnd(med(col(name, "deltas_per_client_s")), 1),
            "datagram_share": rnd(med(col(name, "datagram_share")), 2),
            "full_share": rnd(med(col(name, "full_share")), 2),
            "server_bytes_per_client_s": rnd(med(col(name, "server_bytes_per_client_s")), 0),
            "fast_wire_bytes_per_client_s": rnd(med(col(name, "fast_wire_bytes_per_client_s")), 0),
            "inputs_per_client_s": rnd(med(col(name, "inputs_per_client_s")), 1),
            "server_cpu_pct": rnd(med(col(name, "server_cpu_pct")), 0),
            "bots_cpu_pct": rnd(med(col(name, "bench_cpu_pct")), 0),
            "others_cpu_pct": rnd(med(col(name, "others_cpu_pct")), 0),
        }

    def caveats(*names: str) -> list[str]:
        notes = []
        for name in names:
            ts = turns[name]
            for t in ts:
                if t.connected < PLAYERS:
                    notes.append(f"{name} round {t.round}: {t.connected}/{PLAYERS} bots connected")
                if t.server_exit not in (0, None):
                    notes.append(f"{name} round {t.round}: the server exited {t.server_exit}")
            collapsed = [t.round for t in ts if t.collapsed]
            if collapsed:
                notes.append(
                    f"{name} collapsed in round(s) {collapsed} (full snapshots on the reliable stream; "
                    f"others used {max(t.others_cpu_pct for t in ts if t.collapsed):.0f} % CPU)"
                )
            behind = [t for t in ts if t.behind and not t.collapsed]
            if behind:
                notes.append(
                    f"{name} behind in round(s) {[t.round for t in behind]}: down to "
                    f"{min(t.deltas_per_client_s for t in behind):.1f} deltas/s (of {SEND_RATE}) and "
                    f"{min(t.inputs_per_client_s for t in behind):.1f} inputs/s (of {TICK_RATE})"
                    + (
                        ": its snapshots queue on the reliable stream, so its bytes/s is what the stream "
                        "delivered, not the send rate's worth (see ratio_per_frame)"
                        if CONFIG_BY_NAME[name].full
                        else ""
                    )
                )
            bots_cpu = max(col(name, "bench_cpu_pct"))
            if bots_cpu >= 85:
                notes.append(f"{name}: the bots' process used up to {bots_cpu:.0f} % of a core: it may not keep up")
            if max(col(name, "server_cpu_pct")) >= 85:
                notes.append(f"{name}: the server used up to {max(col(name, 'server_cpu_pct')):.0f} % of a core")
        return notes

    def common(*names: str) -> dict[str, Any]:
        out: dict[str, Any] = {
            "players": PLAYERS,
            "tick_rate": TICK_RATE,
            "send_rate": SEND_RATE,
            "window_s": window_s,
            "warmup_s": warmup_s,
        }
        out.update({name: side(name) for name in names})
        notes = caveats(*names)
        if notes:
            out["caveat"] = "; ".join(notes)
        return out

    def steady_profile(name: str, summary: bool = False) -> dict[str, Any] | None:
        frames = [f for t in turns[name] if not t.collapsed for f in t.samples]
        if not frames:
            return None
        p = byte_profile(frames)
        if summary:
            p["parts_bytes_per_frame"] = dict(list(p["parts_bytes_per_frame"].items())[:6])
        return p

    def per_frame(a: str, b: str) -> float:
        # bytes per received frame, delta over full: what the ratio would be if both
        # sides delivered every send (the full-snapshot side often cannot, see caveats)
        return sig(med([x / y for x, y in zip(col(a, "bytes_per_frame"), col(b, "bytes_per_frame"), strict=True) if y]))

    def server_sent(a: str, b: str) -> float:
        # what the servers say they sent per client (their /metrics): the protocol's cost
        # at the send rate whether or not the bots kept up with it
        return sig(
            med(
                [
                    x / y
                    for x, y in zip(
                        col(a, "server_bytes_per_client_s"), col(b, "server_bytes_per_client_s"), strict=True
                    )
                    if y
                ]
            )
        )

    full_of = f"full snapshots (--full-snapshots --set view_radius=0) at the same {SEND_RATE} Hz send rate"
    bytes_are = (
        "frame bodies the bots received (datagrams + control stream), as run_swarm counts them, "
        "over the steady window only"
    )
    have = set(turns)
    if {"delta_interest", "full"} <= have:
        fig = figure(
            "down_bytes_per_client_s",
            "bytes/s",
            col("delta_interest", "bytes_per_client_s"),
            col("full", "bytes_per_client_s"),
            full_of,
            "<= 0.2",
            0.2,
            0,
            config="acknowledged-baseline deltas with interest management (arena default view_radius 500)",
            bytes=bytes_are,
            **common("delta_interest", "full"),
            profile=steady_profile("delta_interest"),
            baseline_profile=steady_profile("full", summary=True),
        )
        fig["ratio_per_frame"] = per_frame("delta_interest", "full")
        fig["ratio_server_sent"] = server_sent("delta_interest", "full")
        report.emit(fig)
    if {"delta_no_interest", "full"} <= have:
        report.emit(
            figure(
                "down_bytes_per_client_s_no_interest",
                "bytes/s",
                col("delta_no_interest", "bytes_per_client_s"),
                col("full", "bytes_per_client_s"),
                full_of,
                "none (reported)",
                None,
                0,
                config="acknowledged-baseline deltas, --set view_radius=0",
                bytes=bytes_are,
                **common("delta_no_interest", "full"),
                profile=steady_profile("delta_no_interest", summary=True),
                ratio_per_frame=per_frame("delta_no_interest", "full"),
                ratio_server_sent=server_sent("delta_no_interest", "full"),
            )
        )
    if {"delta_interest_loss5", "full_loss5"} <= have:
        lossy = turns["delta_interest_loss5"] + turns["full_loss5"]
        report.emit(
            figure(
                "down_bytes_per_client_s_loss5",
                "bytes/s",
                col("delta_interest_loss5", "bytes_per_client_s"),
                col("full_loss5", "bytes_per_client_s"),
                full_of + ", through the same impairment",
                "none (reported)",
                None,
                0,
                config=f"deltas with interest through ImpairmentProxy: loss 0.05 each way, latency 0, seed {LOSS_SEED}",
                bytes=bytes_are + "; what the proxy lets through, so lost and retransmitted bytes are not in it",
                proxy_loss_measured={
                    "down": rnd(med([t.proxy_loss.get("down", 0) for t in lossy]), 3),
                    "up": rnd(med([t.proxy_loss.get("up", 0) for t in lossy]), 3),
                },
                **common("delta_interest_loss5", "full_loss5"),
                ratio_per_frame=per_frame("delta_interest_loss5", "full_loss5"),
                ratio_server_sent=server_sent("delta_interest_loss5", "full_loss5"),
            )
        )
    if {"delta_interest", "full"} <= have:
        fig = figure(
            "server_cpu_us_per_client_send",
            "us",
            col("delta_interest", "cpu_us_per_client_send"),
            col("full", "cpu_us_per_client_send"),
            "the same, for the full-snapshot server",
            "none (reported)",
            None,
            1,
            config="deltas with interest (the servers and windows of down_bytes_per_client_s)",
            method="server process utime+stime (/proc/PID/stat) over the window / (clients x sends), "
            "sends from the server's own tick counter (/metrics); all of the server's work "
            "(simulation, event log, inputs, encoding, QUIC) is counted",
            server_cpu_pct={n: [rnd(x, 0) for x in col(n, "server_cpu_pct")] for n in ("delta_interest", "full")},
            sends_per_window={n: [t.sends for t in turns[n]] for n in ("delta_interest", "full")},
        )
        notes = caveats("delta_interest", "full")
        if notes:
            fig["caveat"] = "; ".join(notes)
        report.emit(fig)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.netcode", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 rounds of 3 s windows: about a minute")
    parser.add_argument("--json-out", metavar="FILE", help="also write the JSON lines to FILE")
    parser.add_argument("--rounds", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--window", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--only", help=argparse.SUPPRESS)  # e.g. delta_interest,full while working on one part
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    asyncio.run(amain(parse_args(argv)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
