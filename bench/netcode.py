#!/usr/bin/env python
"""Benchmark of tickline's netcode, reported as BENCH.md says (one JSON line per figure).

    .venv/bin/python bench/netcode.py [--quick] [--json-out FILE]

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
127.0.0.1 (the bots' sockets too, see ``loopback_connect``); every server started
here is stopped by its PID (SIGTERM, then waited for).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import re
import resource
import shutil
import signal
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.report import Report, med, rnd  # noqa: E402

import orjson  # noqa: E402

import tickline.bots.client as client_module  # noqa: E402
from tickline.bots.arena_bot import ArenaBot  # noqa: E402
from tickline.bots.client import ClientError, GameClient  # noqa: E402
from tickline.bots.impair import Impairment, ImpairmentProxy  # noqa: E402
from tickline.shared.protocol import MAX_DATAGRAM, Delta, encode  # noqa: E402
from tickline.transport_ceiling import loopback_connect  # noqa: E402

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

CORES = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
PYTHON = platform.python_version()
CLK_TCK = os.sysconf("SC_CLK_TCK")


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


def sig(value: float, figures: int = 3) -> float:
    """``value`` to ``figures`` significant figures."""
    return float(f"{value:.{figures}g}") if value and value == value and abs(value) != float("inf") else value


def figure(name: str, unit: str, values: list[float], baselines: list[float], baseline_of: str,
           target: str, holds_ratio: float | None, digits: int, **extra: Any) -> dict[str, Any]:
    """value and baseline: medians of the turns; ratio: median of the per-round ratios,
    spread their min and max; ``holds``: ratio <= ``holds_ratio`` (None: report only)."""
    ratios = [v / b for v, b in zip(values, baselines) if b]
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


def proc_cpu_s(pid: int) -> float:
    """utime + stime of process ``pid`` (all its threads), from /proc/PID/stat."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        stat = f.read()
    # After the parenthesised command name (which may hold spaces) comes field 3,
    # state; utime and stime (fields 14 and 15) are the 12th and 13th from there.
    rest = stat[stat.rindex(b")") + 2:].split()
    return (int(rest[11]) + int(rest[12])) / CLK_TCK


def self_cpu_s() -> float:
    """CPU of this process: the 32 bots (and the impairment proxy, when there is one)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def machine_busy_s() -> float:
    """CPU seconds every process on the machine used (/proc/stat's cpu line)."""
    with open("/proc/stat") as f:
        values = [int(x) for x in f.readline().split()[1:9]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = values
    return (user + nice + system + irq + softirq + steal) / CLK_TCK


def udp_rcvbuf_errors() -> int:
    """UDP datagrams the kernel dropped because a socket's receive buffer was full."""
    try:
        with open("/proc/net/snmp") as f:
            rows = [line.split() for line in f if line.startswith("Udp:")]
        return int(rows[1][rows[0].index("RcvbufErrors")])
    except (OSError, ValueError, IndexError):
        return 0


async def scrape_metrics(port: int) -> dict[str, float]:
    """The server's own counters from its /metrics (127.0.0.1): ticks run, bytes sent."""
    reader, writer = await asyncio.open_connection(HOST, port)
    try:
        writer.write(f"GET /metrics HTTP/1.0\r\nHost: {HOST}\r\n\r\n".encode())
        await writer.drain()
        text = (await asyncio.wait_for(reader.read(), 5)).decode(errors="replace")
    finally:
        writer.close()
    out: dict[str, float] = {}
    for name in ("tickline_server_ticks_total", "tickline_server_bytes_down_total", "tickline_server_players"):
        match = re.search(rf"^{name} (\S+)$", text, re.M)
        if match:
            out[name] = float(match.group(1))
    return out


class _CountingProtocol(client_module._Protocol):
    """The SDK's QUIC protocol, also counting the UDP payloads (QUIC packets) it receives."""

    wire_down = 0
    packets_down = 0

    def datagram_received(self, data: bytes, addr: Any) -> None:  # type: ignore[override]
        self.wire_down += len(data)
        self.packets_down += 1
        super().datagram_received(data, addr)


# GameClient.connect looks both names up in its module when it connects: in this
# process only, the bots bind to loopback and count their wire bytes. No code
# outside bench/ changes.
client_module._Protocol = _CountingProtocol  # type: ignore[misc]
client_module.connect = loopback_connect  # type: ignore[assignment]


class BenchClient(GameClient):
    """GameClient that counts the delta frames it receives (and how), and may keep them."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.delta_frames = 0
        self.full_frames = 0  # base 0: a full snapshot
        self.keep: list[Delta] | None = None

    def _apply(self, frame: Delta) -> None:
        self.delta_frames += 1
        self.full_frames += frame.base == 0
        if self.keep is not None:
            self.keep.append(frame)
        super()._apply(frame)

    def counters(self) -> dict[str, int]:
        proto = self._protocol
        return {
            "bytes_down": self.stats.bytes_down,
            "wire_down": getattr(proto, "wire_down", 0),
            "packets_down": getattr(proto, "packets_down", 0),
            "delta_frames": self.delta_frames,
            "full_frames": self.full_frames,
            "deltas_applied": self.stats.deltas_applied,
            "datagrams_down": self.stats.datagrams_down,
            "inputs_sent": self.stats.inputs_sent,
        }


@dataclass
class Swarm:
    """32 arena bots in this process, each playing one input per tick as bots.swarm does."""

    port: int
    cafile: str
    clients: dict[int, BenchClient] = field(default_factory=dict)
    tried: int = 0
    errors: Counter = field(default_factory=Counter)
    close_reasons: Counter = field(default_factory=Counter)
    slips: int = 0  # bot ticks that began more than one tick period late
    all_tried: asyncio.Event = field(default_factory=asyncio.Event)
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def connected(self) -> int:
        return len(self.clients)

    def _tried(self) -> None:
        self.tried += 1
        if self.tried == PLAYERS:
            self.all_tried.set()

    async def bot(self, i: int) -> None:
        # bots.swarm.run_bot/_play, with a stop signal in place of a deadline (so that
        # the window's counters can be read while every bot still plays) and a count
        # of late ticks (does this process keep up with 32 bots at 60 Hz?).
        await asyncio.sleep(i * RAMP_S)
        loop = asyncio.get_running_loop()
        period = 1 / TICK_RATE
        try:
            async with BenchClient.connect(HOST, self.port, f"bot{i + 1}", cafile=self.cafile,
                                           timeout=15.0) as client:
                assert isinstance(client, BenchClient) and client.welcome is not None
                bot = ArenaBot(client.player_id, BOT_SEED + i, client.welcome.config)
                self.clients[i] = client
                self._tried()
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
                self._tried()

    def counters(self) -> dict[str, int]:
        total: Counter = Counter()
        for client in self.clients.values():
            total.update(client.counters())
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
        self._stderr: Any = None
        self._terminated = False

    async def start(self) -> ServerProc:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        sets = [arg for kv in GAME_SETTINGS for arg in ("--set", kv)]
        argv = [
            sys.executable, "-m", "tickline", "--log-level", "warning", "serve",
            "--host", HOST, "--port", "0", "--metrics-port", "0", "--data-dir", str(self.data_dir),
            "--tick-rate", str(TICK_RATE), "--send-rate", str(SEND_RATE), "--seed", str(SERVER_SEED),
            *sets, *self.config.serve_args,
        ]
        self._stderr = open(self.data_dir / "stderr.log", "wb")  # noqa: SIM115 - closed in stop()
        self.proc = await asyncio.create_subprocess_exec(
            *argv, cwd=ROOT, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=self._stderr,
        )
        assert self.proc.stdout is not None
        line = await asyncio.wait_for(self.proc.stdout.readline(), 60)
        if not line:
            await self.proc.wait()
            raise RuntimeError(f"tickline serve ({self.config.name}) exited {self.proc.returncode}: "
                               f"{self.stderr_tail()}")
        ready = orjson.loads(line)
        self.port, self.cert, self.metrics_port = ready["port"], ready["cert"], ready["metrics_port"]
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def cpu_s(self) -> float:
        return proc_cpu_s(self.pid)

    def stderr_tail(self, n: int = 5) -> str:
        try:
            lines = (self.data_dir / "stderr.log").read_text(errors="replace").strip().splitlines()
        except OSError:
            return ""
        return " | ".join(lines[-n:])

    def terminate(self) -> None:
        """SIGTERM, once: a second one could land after the server's asyncio loop (and its
        handler) is gone, and kill it mid-shutdown."""
        if self.proc is not None and self.proc.returncode is None and not self._terminated:
            self._terminated = True
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
        if self._stderr is not None:
            self._stderr.close()
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
    wire_bytes_per_client_s: float  # UDP payloads (QUIC packets) the bots received
    packets_per_client_s: float
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
    samples: list[Delta] = field(default_factory=list)
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


async def run_turn(config: Config, server: ServerProc, round_no: int, warmup_s: float, window_s: float,
                   start_next: Any) -> Turn:
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
        try:
            await asyncio.wait_for(swarm.all_tried.wait(), 40)
        except TimeoutError:
            pass
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
                client.keep = []
        m0 = await scrape_metrics(server.metrics_port)
        slips0, c0, s0, b0, a0, e0, t0 = (swarm.slips, swarm.counters(), server.cpu_s(), self_cpu_s(),
                                          machine_busy_s(), udp_rcvbuf_errors(), time.monotonic())
        p0 = (proxy.stats.down.packets, proxy.stats.down.dropped, proxy.stats.up.packets,
              proxy.stats.up.dropped) if proxy else (0, 0, 0, 0)
        await asyncio.sleep(window_s)
        slips1, c1, s1, b1, a1, e1, t1 = (swarm.slips, swarm.counters(), server.cpu_s(), self_cpu_s(),
                                          machine_busy_s(), udp_rcvbuf_errors(), time.monotonic())
        p1 = (proxy.stats.down.packets, proxy.stats.down.dropped, proxy.stats.up.packets,
              proxy.stats.up.dropped) if proxy else (0, 0, 0, 0)
        m1 = await scrape_metrics(server.metrics_port)
        samples = [f for client in swarm.clients.values() if client.keep for f in client.keep]
        for client in swarm.clients.values():
            client.keep = None
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
    ticks = m1.get("tickline_server_ticks_total", 0) - m0.get("tickline_server_ticks_total", 0)
    players = int(m1.get("tickline_server_players", n))
    sends = int(ticks // (TICK_RATE // SEND_RATE)) * players
    cpu, bench = s1 - s0, b1 - b0
    proxy_loss = {}
    if proxy is not None:
        proxy_loss = {"down": round((p1[1] - p0[1]) / max(1, p1[0] - p0[0]), 4),
                      "up": round((p1[3] - p0[3]) / max(1, p1[2] - p0[2]), 4)}
    turn = Turn(
        config=config.name, round=round_no, window_s=dt, connected=swarm.connected,
        bytes_per_client_s=dc.get("bytes_down", 0) / n / dt,
        server_bytes_per_client_s=(m1.get("tickline_server_bytes_down_total", 0)
                                   - m0.get("tickline_server_bytes_down_total", 0)) / max(1, players) / dt,
        wire_bytes_per_client_s=dc.get("wire_down", 0) / n / dt,
        packets_per_client_s=dc.get("packets_down", 0) / n / dt,
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
        slips=slips1 - slips0, rcvbuf_drops=e1 - e0, proxy_loss=proxy_loss,
        errors=dict(swarm.errors), samples=samples, server_exit=status,
    )
    say(f"  round {round_no} {config.name:21s} {turn.bytes_per_client_s:8.0f} B/s/client "
        f"({turn.bytes_per_frame:.0f} B/frame, server says {turn.server_bytes_per_client_s:.0f} B/s), "
        f"{turn.deltas_per_client_s:.1f} deltas/s ({turn.datagram_share:.0%} datagrams, "
        f"{turn.full_share:.0%} full), {turn.inputs_per_client_s:.1f} inputs/s; CPU: server "
        f"{turn.server_cpu_pct:.0f} % ({turn.cpu_us_per_client_send:.0f} us/send), bots "
        f"{turn.bench_cpu_pct:.0f} %, others {turn.others_cpu_pct:.0f} %; slips {turn.slips}, "
        f"rcvbuf drops {turn.rcvbuf_drops}{f', proxy loss {proxy_loss}' if proxy_loss else ''}"
        f"{' COLLAPSED' if turn.collapsed else ''} [connect {connect_s:.1f} s, wind-down {wind_down:.1f} s]")
    if status not in (0, None):
        say(f"  server exited {status}: {server.stderr_tail()}")
    return turn


# --------------------------------------------------------------------------- where the bytes go


def byte_profile(frames: list[Delta]) -> dict[str, Any]:
    """Bytes per received delta frame, split by the part of the view they change.

    A frame is ``{"tick","base","seq","diff","t"}``; the diff is shared.delta's
    ``{"s": {...}, "u": {...}, "r": [...]}`` over the view's keys (players, shots,
    pickups, over, winner). Per table: entities entering the view (the whole
    entity), leaving it (their ids), and changed in part, split by field, with the
    rest of a change (entity ids, ``{"s":{...}}`` nesting, braces) as ``overhead``.
    """
    parts: Counter = Counter()
    counts: Counter = Counter()
    total = 0
    dumps = orjson.dumps

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
        "parts_bytes_per_frame": {k: round(v / n, 1) for k, v in parts.most_common() if v},
        "counts_per_frame": {k: round(v / n, 2) for k, v in counts.most_common() if v},
    }


# --------------------------------------------------------------------------- the run


async def main(args: argparse.Namespace) -> None:
    report = Report(Path(args.json_out) if args.json_out else None)
    rounds = args.rounds or (2 if args.quick else 3)
    window_s = args.window or (3.0 if args.quick else 8.0)
    warmup_s = 1.5 if args.quick else 2.0
    configs = [c for c in CONFIGS if not args.only or c.name in args.only.split(",")]
    started = time.monotonic()
    say(f"{PLAYERS} bots, {TICK_RATE} Hz ticks, {SEND_RATE} Hz sends; {rounds} rounds of "
        f"{', '.join(c.name for c in configs)}; {window_s:g} s windows after {warmup_s:g} s of warm-up")
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
            try:
                await (await pending).stop()
            except Exception:  # noqa: BLE001 - it failed to start; nothing to stop
                pass
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
            "wire_bytes_per_client_s": rnd(med(col(name, "wire_bytes_per_client_s")), 0),
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
                notes.append(f"{name} collapsed in round(s) {collapsed} (full snapshots on the reliable stream; "
                             f"others used {max(t.others_cpu_pct for t in ts if t.collapsed):.0f} % CPU)")
            behind = [t for t in ts if t.behind and not t.collapsed]
            if behind:
                notes.append(f"{name} behind in round(s) {[t.round for t in behind]}: down to "
                             f"{min(t.deltas_per_client_s for t in behind):.1f} deltas/s (of {SEND_RATE}) and "
                             f"{min(t.inputs_per_client_s for t in behind):.1f} inputs/s (of {TICK_RATE})"
                             + (": its snapshots queue on the reliable stream, so its bytes/s is what the stream "
                                "delivered, not the send rate's worth (see ratio_per_frame)"
                                if CONFIG_BY_NAME[name].full else ""))
            bots_cpu = max(col(name, "bench_cpu_pct"))
            if bots_cpu >= 85:
                notes.append(f"{name}: the bots' process used up to {bots_cpu:.0f} % of a core: it may not keep up")
            if max(col(name, "server_cpu_pct")) >= 85:
                notes.append(f"{name}: the server used up to {max(col(name, 'server_cpu_pct')):.0f} % of a core")
        return notes

    def common(*names: str) -> dict[str, Any]:
        out: dict[str, Any] = {"players": PLAYERS, "tick_rate": TICK_RATE, "send_rate": SEND_RATE,
                               "window_s": window_s, "warmup_s": warmup_s}
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
        return sig(med([x / y for x, y in zip(col(a, "bytes_per_frame"), col(b, "bytes_per_frame")) if y]))

    def server_sent(a: str, b: str) -> float:
        # what the servers say they sent per client (their /metrics): the protocol's cost
        # at the send rate whether or not the bots kept up with it
        return sig(med([x / y for x, y in zip(col(a, "server_bytes_per_client_s"),
                                              col(b, "server_bytes_per_client_s")) if y]))

    full_of = f"full snapshots (--full-snapshots --set view_radius=0) at the same {SEND_RATE} Hz send rate"
    bytes_are = ("frame bodies the bots received (datagrams + control stream), as run_swarm counts them, "
                 "over the steady window only")
    have = set(turns)
    if {"delta_interest", "full"} <= have:
        fig = figure(
            "down_bytes_per_client_s", "bytes/s", col("delta_interest", "bytes_per_client_s"),
            col("full", "bytes_per_client_s"), full_of, "<= 0.2", 0.2, 0,
            config="acknowledged-baseline deltas with interest management (arena default view_radius 500)",
            bytes=bytes_are, **common("delta_interest", "full"),
            profile=steady_profile("delta_interest"), baseline_profile=steady_profile("full", summary=True),
        )
        fig["ratio_per_frame"] = per_frame("delta_interest", "full")
        fig["ratio_server_sent"] = server_sent("delta_interest", "full")
        report.emit(fig)
    if {"delta_no_interest", "full"} <= have:
        report.emit(figure(
            "down_bytes_per_client_s_no_interest", "bytes/s", col("delta_no_interest", "bytes_per_client_s"),
            col("full", "bytes_per_client_s"), full_of, "none (reported)", None, 0,
            config="acknowledged-baseline deltas, --set view_radius=0", bytes=bytes_are,
            **common("delta_no_interest", "full"), profile=steady_profile("delta_no_interest", summary=True),
            ratio_per_frame=per_frame("delta_no_interest", "full"),
            ratio_server_sent=server_sent("delta_no_interest", "full"),
        ))
    if {"delta_interest_loss5", "full_loss5"} <= have:
        lossy = turns["delta_interest_loss5"] + turns["full_loss5"]
        report.emit(figure(
            "down_bytes_per_client_s_loss5", "bytes/s", col("delta_interest_loss5", "bytes_per_client_s"),
            col("full_loss5", "bytes_per_client_s"), full_of + ", through the same impairment",
            "none (reported)", None, 0,
            config=f"deltas with interest through ImpairmentProxy: loss 0.05 each way, latency 0, seed {LOSS_SEED}",
            bytes=bytes_are + "; what the proxy lets through, so lost and retransmitted bytes are not in it",
            proxy_loss_measured={"down": rnd(med([t.proxy_loss.get("down", 0) for t in lossy]), 3),
                                 "up": rnd(med([t.proxy_loss.get("up", 0) for t in lossy]), 3)},
            **common("delta_interest_loss5", "full_loss5"),
            ratio_per_frame=per_frame("delta_interest_loss5", "full_loss5"),
            ratio_server_sent=server_sent("delta_interest_loss5", "full_loss5"),
        ))
    if {"delta_interest", "full"} <= have:
        fig = figure(
            "server_cpu_us_per_client_send", "us", col("delta_interest", "cpu_us_per_client_send"),
            col("full", "cpu_us_per_client_send"), "the same, for the full-snapshot server",
            "none (reported)", None, 1,
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
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 rounds of 3 s windows: about a minute")
    parser.add_argument("--json-out", metavar="FILE", help="also write the JSON lines to FILE")
    parser.add_argument("--rounds", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--window", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--only", help=argparse.SUPPRESS)  # e.g. delta_interest,full while working on one part
    return parser.parse_args(argv)


if __name__ == "__main__":
    asyncio.run(main(parse_args()))
