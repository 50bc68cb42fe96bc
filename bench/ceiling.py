"""The transport ceiling: tickline's QUIC endpoint and clients with no game at all.

The capacity benchmark (``python -m bench.capacity``) compares how many players
one tickline server holds with how many clients this holds at the same tick
rate, send rate and datagram sizes, on the same machine, in turns. What it
keeps from tickline is what the network sees and the loop's shape:

- the server (``python -m bench.ceiling serve ...``, a child process): tickline's
  own endpoint (``tickline.server.transport.start_endpoint`` with its
  ``server_configuration``: the same ALPN, packet size and TLS), whose
  connections feed a :class:`BareReceiver` instead of a game session; and a
  fixed-tick loop on tickline's own schedule (``tickline.server.ticker.Ticker``)
  that, every ``tick_rate / send_rate`` ticks, sends each client one datagram of
  ``--delta-bytes``. It counts the datagrams clients send it and does nothing
  else with them. It prints one JSON line when ready, then one a second:
  cumulative ticks, datagrams sent and received, its own CPU seconds, connected
  clients, and the lateness of every tick since the previous line. SIGTERM
  closes every connection and exits 0; ``--max-seconds`` bounds its life.
- ``--fastpath``: clients that ask (their first control-stream bytes) get the
  fast path's keys as tickline sends them (a ``FastPath`` frame on the control
  stream); from then on their inputs come as sealed packets and, while they
  do, their deltas go back the same way (``tickline.server.fastpath``).
- the clients (:func:`run_clients`): aioquic clients in worker processes, each
  bound to 127.0.0.1, sending one ``--input-bytes`` datagram per send interval on
  absolute deadlines (as a tickline bot sends one input datagram per send
  interval) and counting what they receive; a client given fast-path keys
  seals its inputs with ``tickline.shared.fastpath`` and opens its deltas.
- :func:`probe_ceiling`: one probe of the capacity search against this server,
  judged by the same rules as a tickline probe.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import multiprocessing as mp
import os
import queue as queue_module
import signal
import sys
import time
from collections import Counter
from collections.abc import Callable, Coroutine
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, cast

import orjson
from aioquic.quic.events import ConnectionTerminated, DatagramFrameReceived, QuicEvent, StreamDataReceived

from tickline import loops
from tickline.bots.capacity.probe import ProbeSettings, read_ready_line, stop_process, stop_workers
from tickline.bots.capacity.search import verdict, window_shares
from tickline.bots.client import ClientProtocol, client_configuration, quic_connect
from tickline.bots.metrics import cumulative_buckets, histogram_quantile
from tickline.bots.procstat import CpuSampler, affinity, cpu_plan, own_cpu_s
from tickline.server.fastpath import FastPath
from tickline.server.http import TICK_BUCKETS
from tickline.server.session import Channel
from tickline.server.ticker import Ticker
from tickline.server.tls import ensure_certificate
from tickline.server.transport import server_configuration, start_endpoint
from tickline.server.udp import UdpTransport
from tickline.shared import fastpath
from tickline.shared.protocol import (
    IDLE_TIMEOUT_S,
    MAX_DATAGRAM,
    PROTOCOL_VERSION,
    Hello,
    StreamDecoder,
    encode,
    encode_stream,
)
from tickline.shared.protocol import (
    FastPath as FastPathFrame,
)

HOST = "127.0.0.1"
# As tickline's client to a server that does not count fast-path packets (FastPath.idle_ms 0):
# on the fast path QUIC carries nothing, so a PING this often keeps it open.
KEEPALIVE_S = 2.0


# ---------------------------------------------------------------------- the server


class Figures:
    def __init__(self) -> None:
        self.clients: set[Channel] = set()
        self.ticks = 0
        self.sent = 0
        self.received = 0
        self.handshakes = 0
        self.catch_ups = 0
        self.late: list[float] = []  # since the last report line


class BareReceiver:
    """What a connection's traffic goes to instead of a game session: a counter."""

    def __init__(self, channel: Channel, figures: Figures) -> None:
        self.channel = channel
        self.figures = figures
        self.keyed = False

    def on_stream_data(self, data: bytes) -> None:
        if not self.keyed:  # the client's hello: offer the fast path, as tickline's welcome does
            self.keyed = True
            keys = self.channel.offer_fastpath()
            if keys is not None:
                idle_ms = round(IDLE_TIMEOUT_S * 1000)  # (the endpoint's: fast-path packets count)
                self.channel.send_reliable(encode(FastPathFrame(**keys.to_wire(), idle_ms=idle_ms, packed=0)))

    def on_datagram(self, data: bytes) -> None:
        self.figures.received += 1

    def on_closed(self, reason: str) -> None:
        self.figures.clients.discard(self.channel)

    def fail(self, reason: str) -> None:
        self.close(reason)

    def close(self, reason: str) -> None:
        self.figures.clients.discard(self.channel)
        self.channel.close(reason)


async def _tick_loop(
    figures: Figures, tick_rate: int, send_every: int, payload: bytes, stop: asyncio.Event, intake: UdpTransport | None
) -> None:
    """tickline's tick schedule with nothing in the tick but the sends, and the socket's reads
    at its start as a match's (``intake``; None: the event loop reads packets as they come)."""
    clock = asyncio.get_running_loop().time
    ticker = Ticker(tick_rate, clock())
    with intake.ticking() if intake is not None else contextlib.nullcontext():
        while not stop.is_set():
            figures.late.append(await ticker.wait(clock))
            if intake is not None:
                intake.drain()
            figures.catch_ups = ticker.catch_ups
            figures.ticks += 1
            if figures.ticks % send_every == 0:
                for channel in figures.clients:
                    # QUIC: queued, one transmit per connection at the end of this turn; or
                    # sealed, to leave with the turn's other fast-path packets.
                    channel.send_datagram(payload)
                figures.sent += len(figures.clients)


def _line(figures: Figures, fast: FastPath | None, final: bool = False) -> bytes:
    late, figures.late = figures.late, []
    body: dict[str, Any] = {
        "t": round(time.monotonic(), 4),
        "ticks": figures.ticks,
        "clients": len(figures.clients),
        "sent": figures.sent,
        "received": figures.received,
        "handshakes": figures.handshakes,
        "cpu_s": round(own_cpu_s(), 4),
        "catch_ups": figures.catch_ups,
        "late_ms": [round(x * 1000, 3) for x in late],
    }
    if fast is not None:
        body.update(
            {
                "fast_in": fast.packets_in,
                "fast_out": fast.packets_out,
                "fast_dropped": sum(fast.dropped.values()),
                "fast_routes": fast.active_routes(),
            }
        )
    if final:
        body["event"] = "stopped"
    return orjson.dumps(body) + b"\n"


async def serve_ceiling(args: argparse.Namespace) -> int:
    cert, key, _ = ensure_certificate(Path(args.cert_dir))
    figures = Figures()
    fast = FastPath() if args.fastpath else None

    def accept(channel: Channel) -> BareReceiver:
        figures.clients.add(channel)
        figures.handshakes += 1
        return BareReceiver(channel, figures)

    endpoint, port = await start_endpoint(HOST, args.port, server_configuration(cert, key), accept, fast)
    if args.read_per_packet:
        endpoint.intake.per_wake = 1  # as asyncio's own transport reads: one datagram a wake
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    loop.call_later(args.max_seconds, stop.set)
    out = sys.stdout.buffer
    out.write(
        orjson.dumps(
            {
                "event": "ready",
                "host": HOST,
                "port": port,
                "pid": os.getpid(),
                "delta_bytes": args.delta_bytes,
                "fastpath": fast is not None,
                "loop": type(loop).__module__.split(".")[0],
            }
        )
        + b"\n"
    )
    out.flush()
    payload = b"d" * args.delta_bytes

    async def report() -> None:
        next_at = loop.time() + 1.0
        while True:
            await asyncio.sleep(max(0.0, next_at - loop.time()))
            next_at += 1.0
            out.write(_line(figures, fast))
            out.flush()

    try:
        async with asyncio.TaskGroup() as tg:
            reporter = tg.create_task(report(), name="report")
            tg.create_task(
                _tick_loop(
                    figures,
                    args.tick_rate,
                    max(1, args.tick_rate // args.send_rate),
                    payload,
                    stop,
                    None if args.read_per_packet else endpoint.intake,
                ),
                name="ticks",
            )
            await stop.wait()
            reporter.cancel()
        for channel in list(figures.clients):
            channel.close("bye")
        await asyncio.sleep(0.2)  # the close frames go out on the next turns of the loop
    finally:
        endpoint.close()
    out.write(_line(figures, fast, final=True))
    out.flush()
    return 0


# ---------------------------------------------------------------------- the clients


@dataclass(slots=True)
class ClientResult:
    connected: bool = False
    connect_s: float = 0.0  # from the first attempt until the handshake completed
    seconds: float = 0.0  # from the first attempt until the end
    received: int = 0
    sent: int = 0
    closed_at: float = 0.0  # time.monotonic() when the server closed the connection (0: it did not)
    close_reason: str = ""
    error: str = ""
    fast_received: int = 0  # of ``received``, fast-path packets that opened
    fast_sent: int = 0  # of ``sent``, fast-path packets
    fast_dropped: int = 0  # fast-path packets that did not open (shared.fastpath.Dropped)


class BareClient(ClientProtocol):
    """An aioquic client that counts what it gets and takes the fast path when offered."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.result = ClientResult()
        self.ended = asyncio.Event()
        self.server: tuple[str, int] = (HOST, 0)
        self.udp: asyncio.DatagramTransport | None = None
        # The fast path's (sealer, opener), once the server sent the keys.
        self.ends: tuple[fastpath.Sealer, fastpath.Opener] | None = None
        self._control = StreamDecoder()
        self._pinged_at = 0.0
        self._pings = True  # on the fast path: until the server says it counts fast-path packets

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # (asyncio's own UDP transport does not subclass DatagramTransport; it has its methods)
        self.udp = cast(asyncio.DatagramTransport, transport)
        super().connection_made(transport)

    def datagram_received(self, data: bytes | str, addr: Any) -> None:
        if self.ends is not None and isinstance(data, bytes) and fastpath.is_fastpath(data):
            try:
                self.ends[1].open(data)
            except fastpath.Dropped:
                self.result.fast_dropped += 1
                return
            self.result.received += 1
            self.result.fast_received += 1
            return
        super().datagram_received(data, addr)

    def say_hello(self) -> None:
        """Open the control stream, as a tickline client does; the server offers the fast path."""
        stream = self._quic.get_next_available_stream_id()
        self._quic.send_stream_data(stream, encode_stream(Hello(version=PROTOCOL_VERSION, name="bare")))
        self.transmit()

    def send_input(self, payload: bytes, now: float) -> None:
        """One input: sealed onto the fast path once the keys came, else a QUIC datagram."""
        if self.ends is not None and self.udp is not None:
            self.udp.sendto(self.ends[0].seal(fastpath.DATA, payload), self.server)
            self.result.fast_sent += 1
            if not self._pings or now - self._pinged_at < KEEPALIVE_S:
                return
            self._quic.send_ping(0)
            self._pinged_at = now
        else:
            self._quic.send_datagram_frame(payload)
        self.transmit()

    def quic_event_received(self, event: QuicEvent) -> None:
        if isinstance(event, StreamDataReceived):
            for frame in self._control.feed(event.data):
                if isinstance(frame, FastPathFrame):
                    keys = fastpath.FastKeys.from_wire({"sid": frame.sid, "up": frame.up, "down": frame.down})
                    self.ends = fastpath.client_ends(keys)
                    self._pings = frame.idle_ms == 0
        elif isinstance(event, DatagramFrameReceived):
            self.result.received += 1
        elif isinstance(event, ConnectionTerminated):
            self.result.closed_at = time.monotonic()
            self.result.close_reason = event.reason_phrase or f"code {event.error_code}"
            self.ended.set()


async def _one_client(port: int, duration: float, send_rate: int, payload: bytes, result: ClientResult) -> None:
    config = client_configuration()
    started = time.monotonic()
    deadline = started + duration
    connection = quic_connect(HOST, port, configuration=config, create_protocol=BareClient, local_host=HOST)
    try:
        async with asyncio.timeout(10):
            client: BareClient = await connection.__aenter__()
    except (TimeoutError, ConnectionError, OSError) as exc:
        result.error = f"cannot connect: {str(exc) or 'timed out'}"
        result.seconds = time.monotonic() - started
        return
    try:
        client.result, client.server = result, (HOST, port)
        result.connected = True
        result.connect_s = time.monotonic() - started
        client.say_hello()
        loop = asyncio.get_running_loop()
        interval = 1.0 / send_rate
        next_send = loop.time()
        while not client.ended.is_set() and time.monotonic() < deadline:
            next_send += interval
            delay = next_send - loop.time()
            if delay > 0:
                try:
                    async with asyncio.timeout(delay):
                        await client.ended.wait()
                    break
                except TimeoutError:
                    pass
            else:
                next_send = loop.time()  # fell behind: do not try to catch up
            client.send_input(payload, loop.time())
            result.sent += 1
    finally:
        result.seconds = time.monotonic() - started
        await connection.__aexit__(None, None, None)


def _client_worker(cfg: dict[str, Any], index: int, first: int, count: int, start_at: float, out: Any) -> None:
    try:
        results, snaps = loops.run(_client_worker_main(cfg, first, count, start_at), cfg["loop"])
        out.put(("done", index, {"results": [asdict(r) for r in results], "snaps": snaps}))
    except BaseException as exc:  # noqa: BLE001 - reported to the parent, which fails the probe
        out.put(("failed", index, f"{type(exc).__name__}: {exc}"))


def _counts(results: list[ClientResult]) -> list[int | None]:
    """Datagrams each client has received so far; None while it is not connected."""
    return [r.received if r.connected and not r.closed_at else None for r in results]


async def _client_worker_main(
    cfg: dict[str, Any], first: int, count: int, start_at: float
) -> tuple[list[ClientResult], list[tuple[float, list[int | None]]]]:
    """This worker's clients; and, once a second, (time.monotonic(), every client's count so far)."""
    ramp_s = 1.0 / cfg["ramp"]
    payload = b"i" * cfg["input_bytes"]
    results = [ClientResult() for _ in range(count)]
    snaps: list[tuple[float, list[int | None]]] = []

    async def staggered(i: int) -> None:
        await asyncio.sleep(max(0.0, start_at + (first + i) * ramp_s - time.time()))
        await _one_client(cfg["port"], cfg["duration"], cfg["send_rate"], payload, results[i])

    async def snapshots() -> None:
        while True:
            await asyncio.sleep(1.0)
            snaps.append((time.monotonic(), _counts(results)))

    async with asyncio.TaskGroup() as tg:
        clients = [tg.create_task(staggered(i)) for i in range(count)]
        reporter = tg.create_task(snapshots())
        await asyncio.gather(*clients)
        reporter.cancel()
    return results, snaps


async def run_clients(
    port: int,
    n: int,
    duration: float,
    *,
    ramp: float,
    send_rate: int,
    input_bytes: int,
    workers: int,
    loop: str = "asyncio",
) -> dict[str, Any]:
    """``n`` bare clients over ``workers`` spawned processes (on the event ``loop``, see
    ``tickline.loops``), ``ramp`` started per second, each for up to ``duration`` s (less
    when the server closes it). Returns every client's result and, per worker, its
    once-a-second snapshots of every client's received count; a worker still running
    ``duration + n / ramp + 30`` s after the start is terminated by PID."""
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    cfg = {
        "port": port,
        "duration": duration,
        "ramp": ramp,
        "send_rate": send_rate,
        "input_bytes": input_bytes,
        "loop": loop,
    }
    workers = max(1, min(workers, n))
    share, extra = divmod(n, workers)
    start_at = time.time() + 1.0  # spawned interpreters need a moment to import
    procs, first = [], 0
    for w in range(workers):
        count = share + (1 if w < extra else 0)
        procs.append(ctx.Process(target=_client_worker, args=(cfg, w, first, count, start_at, out), daemon=True))
        first += count
    for proc in procs:
        proc.start()
    deadline = time.monotonic() + 1.0 + duration + n / ramp + 30
    running = asyncio.get_running_loop()
    finals: dict[int, dict[str, Any]] = {}
    failures: list[str] = []
    ended: set[int] = set()

    def get() -> Any:
        try:
            return out.get(timeout=0.25)
        except queue_module.Empty:
            return None

    try:
        while len(ended) < workers:
            if time.monotonic() > deadline:
                failures.append("client workers did not finish in time; terminated")
                break
            message = await running.run_in_executor(None, get)
            if message is None:
                dead = [w for w, p in enumerate(procs) if not p.is_alive() and w not in ended]
                if dead and out.empty():
                    failures.append(f"client worker {dead[0]} died with exit code {procs[dead[0]].exitcode}")
                    ended.add(dead[0])
                continue
            kind, worker, body = message
            ended.add(worker)
            if kind == "done":
                finals[worker] = body
            else:
                failures.append(f"client worker {worker} failed: {body}")
    finally:
        for proc in procs:
            proc.join(timeout=5)
            if proc.is_alive():
                proc.terminate()  # ours, by PID
                proc.join(timeout=5)
    results = [r for w in sorted(finals) for r in finals[w]["results"]]
    snaps = {w: finals[w]["snaps"] for w in sorted(finals)}
    return {"results": results, "snaps": snaps, "failures": failures, "workers": workers}


# ---------------------------------------------------------------------- one probe of the capacity search


def choose_window(
    points: list[tuple[float, float]], n: int, settle_s: float, steady_s: float
) -> tuple[int, int] | None:
    """Indices (begin, end) into ``points`` [(t, clients)]: begin is the first point ``settle_s``
    after the first with ``n`` clients, end the first ``steady_s - 0.5`` s after begin."""
    all_in = next((t for t, c in points if c >= n), None)
    if all_in is None:
        return None
    begin = next((i for i, (t, _) in enumerate(points) if t >= all_in + settle_s), None)
    if begin is None:
        return None
    end = next((i for i, (t, _) in enumerate(points) if i > begin and t >= points[begin][0] + steady_s - 0.5), None)
    return None if end is None else (begin, end)


def client_workers(n: int) -> int:
    """As the load tester chooses worker processes for its bots: about 100 clients each."""
    return max(1, min(os.cpu_count() or 1, math.ceil(n / 100), n))


def _window_figures(lines: list[dict[str, Any]], chosen: tuple[int, int]) -> dict[str, Any]:
    a, b = lines[chosen[0]], lines[chosen[1]]
    wall = max(1e-9, b["t"] - a["t"])
    late = [x for line in lines[chosen[0] + 1 : chosen[1] + 1] for x in line["late_ms"]]
    # Read through the same histogram buckets as the tickline server's /metrics.
    buckets = cumulative_buckets([x / 1000 for x in late], TICK_BUCKETS)
    p99, p50 = histogram_quantile(0.99, {}, buckets), histogram_quantile(0.5, {}, buckets)
    return {
        "window_s": round(wall, 2),
        "tick_late_ms_p99": None if p99 is None else round(p99 * 1000, 3),
        "tick_late_ms_p50": None if p50 is None else round(p50 * 1000, 3),
        "tick_late_ms_p99_exact": round(sorted(late)[min(len(late) - 1, math.ceil(0.99 * len(late)) - 1)], 3)
        if late
        else None,
        "ticks_per_s": round((b["ticks"] - a["ticks"]) / wall, 1),
        "cpu_percent": round(100 * (b["cpu_s"] - a["cpu_s"]) / wall, 1),
        "received_per_s": round((b["received"] - a["received"]) / wall, 1),
        "sent_per_s": round((b["sent"] - a["sent"]) / wall, 1),
        # Server CPU per datagram (or fast-path packet) it sent or received.
        "us_per_message": round(
            1e6 * (b["cpu_s"] - a["cpu_s"]) / max(1, b["sent"] - a["sent"] + b["received"] - a["received"]), 3
        ),
        "players_begin": a["clients"],
        "players_end": b["clients"],
    }


async def probe_ceiling(
    n: int,
    ps: ProbeSettings,
    workdir: Path,
    index: int,
    delta_bytes: int,
    input_bytes: int,
    server_args: tuple[str, ...] = (),
    client_loop: str = "asyncio",
    on_window: Callable[[int, float], Coroutine[Any, Any, Any]] | None = None,
) -> dict[str, Any]:
    """One probe at ``n`` bare clients; its verdict and figures. ``server_args`` go to
    ``bench.ceiling serve`` (``--fastpath``, ``--loop uvloop``); ``on_window(pid, seconds)`` is
    started ``settle_s`` after every client is in (a profiler)."""
    began = time.monotonic()
    server_cpus, load_cpus, _ = cpu_plan()
    duration = n / ps.ramp + ps.settle_s + ps.steady_s + 30.0
    log_path = workdir / f"p{index:02d}-ceiling-{n}.log"
    with log_path.open("ab") as log_file, affinity(server_cpus):
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bench.ceiling",
            "serve",
            "--port",
            "0",
            "--tick-rate",
            str(ps.tick_rate),
            "--send-rate",
            str(ps.send_rate),
            "--delta-bytes",
            str(delta_bytes),
            "--cert-dir",
            str(workdir / "ceiling-tls"),
            "--max-seconds",
            str(round(duration + n / ps.ramp + 60)),
            *server_args,
            stdout=asyncio.subprocess.PIPE,
            stderr=log_file,
        )
    lines: list[dict[str, Any]] = []
    window: dict[str, Any] = {}
    clients: dict[str, Any] = {"results": [], "failures": []}
    status: int | None = None
    stop_at = 0.0
    try:
        async with asyncio.timeout(duration + n / ps.ramp + 60):
            ready = await read_ready_line(proc, "the bare server", log_path)

            async def read_lines() -> None:
                assert proc.stdout is not None
                while raw := await proc.stdout.readline():
                    lines.append(orjson.loads(raw))

            async with asyncio.TaskGroup() as tg:
                tg.create_task(read_lines(), name="ceiling-lines")
                with affinity(load_cpus), CpuSampler() as cpu:
                    run = tg.create_task(
                        run_clients(
                            ready["port"],
                            n,
                            duration,
                            ramp=ps.ramp,
                            send_rate=ps.send_rate,
                            input_bytes=input_bytes,
                            workers=client_workers(n),
                            loop=client_loop,
                        )
                    )
                    profiling: asyncio.Task[Any] | None = None
                    try:
                        give_up = time.monotonic() + 1.0 + n / ps.ramp + 10.0
                        chosen = None
                        while not run.done() and time.monotonic() < give_up + ps.settle_s + ps.steady_s + 2:
                            await asyncio.sleep(0.25)
                            points = [(x["t"], x["clients"]) for x in lines]
                            all_in = any(c >= n for _, c in points)
                            if on_window is not None and profiling is None and all_in:
                                profiling = tg.create_task(_later(ps.settle_s, on_window, proc.pid, ps.steady_s))
                            chosen = choose_window(points, n, ps.settle_s, ps.steady_s)
                            if chosen is not None or (time.monotonic() > give_up and not all_in):
                                break
                        all_in_at = next((x["t"] for x in lines if x["clients"] >= n), None)
                        window["all_in"] = chosen is not None
                        if chosen is None and len(lines) >= 2:  # judge whatever ran, as a failure
                            chosen = (max(0, len(lines) - 1 - int(ps.steady_s)), len(lines) - 1)
                        if chosen is not None:
                            window.update(_window_figures(lines, chosen))
                            a, b = lines[chosen[0]], lines[chosen[1]]
                            window.update(cpu.figures(server_cpus, load_cpus, window["cpu_percent"], a["t"], b["t"]))
                            if all_in_at is not None:
                                window["bounds"] = (all_in_at, a["t"], b["t"])
                    finally:
                        if profiling is not None:
                            await profiling
                        stop_at = time.monotonic()
                        status = await stop_process(proc)
                        clients = await run
    finally:
        if proc.returncode is None:
            status = await stop_process(proc, 5)
        stop_workers()
    return _verdict(n, ps, window, clients, stop_at, load_cpus, delta_bytes, input_bytes) | {
        "server_exit": status,
        "seconds": round(time.monotonic() - began, 1),
    }


def _verdict(
    n: int,
    ps: ProbeSettings,
    window: dict[str, Any],
    clients: dict[str, Any],
    stop_at: float,
    load_cpus: set[int] | None,
    delta_bytes: int,
    input_bytes: int,
) -> dict[str, Any]:
    results = clients["results"]
    connected = [r for r in results if r["connected"]]
    shares: list[float] = []
    span = None
    if "bounds" in window:
        all_in_at, begin, end = window.pop("bounds")
        shares, span = window_shares(clients.get("snaps", {}), begin, end, all_in_at, stop_at, ps.send_rate)
    # Closed before we stopped the server: lost.
    lost = sum(1 for r in connected if r["closed_at"] and r["closed_at"] < stop_at - 0.05)
    errors = Counter(r["error"] for r in results if r["error"])
    down = sum(r["received"] for r in connected)
    return verdict(
        n,
        window,
        shares,
        span,
        connected=len(connected),
        errors=sum(errors.values()),
        lost=lost,
        failures=clients["failures"],
        tick_rate=ps.tick_rate,
        bound_ms=ps.bound_ms,
        load_cpus=load_cpus,
    ) | {
        "tick_late_ms_p99_exact": window.get("tick_late_ms_p99_exact"),
        "error_reasons": dict(errors) or None,
        # Of what the clients received, the share that came as fast-path packets (--fastpath).
        "fast_share_down": round(sum(r["fast_received"] for r in connected) / down, 4) if down else None,
        "delta_bytes": delta_bytes,
        "input_bytes": input_bytes,
        "us_per_message": window.get("us_per_message"),
        "received_per_s": window.get("received_per_s"),
        "sent_per_s": window.get("sent_per_s"),
    }


async def _later(delay: float, func: Callable[[int, float], Coroutine[Any, Any, Any]], *args: Any) -> Any:
    await asyncio.sleep(delay)
    return await func(*args)


# ---------------------------------------------------------------------- command line


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.ceiling", description="The bare server of the capacity and transport benchmarks."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    s = sub.add_parser("serve", help="run the bare server until SIGTERM (or --max-seconds)")
    s.add_argument("--port", type=int, default=0)
    s.add_argument("--tick-rate", type=int, default=60)
    s.add_argument("--send-rate", type=int, default=30)
    s.add_argument("--delta-bytes", type=int, default=200)
    s.add_argument("--cert-dir", required=True)
    s.add_argument("--max-seconds", type=float, default=600.0)
    s.add_argument(
        "--read-per-packet",
        action="store_true",
        help="the event loop reads the socket a packet a wake (before tickline read it at its ticks)",
    )
    s.add_argument(
        "--fastpath",
        action="store_true",
        help="offer every client tickline's fast path and send on it once it is in use",
    )
    s.add_argument(
        "--loop",
        default="auto",
        choices=loops.LOOPS,
        help="the event loop (default: auto, uvloop where installed, as `tickline serve`)",
    )
    args = parser.parse_args(argv)
    if not 1 <= args.delta_bytes <= MAX_DATAGRAM:
        parser.error(
            f"--delta-bytes must be 1 to {MAX_DATAGRAM} (aioquic never sends a datagram that does not fit one packet)"
        )
    try:
        return loops.run(serve_ceiling(args), args.loop)
    except loops.LoopUnavailable as exc:
        parser.error(str(exc))


if __name__ == "__main__":
    sys.exit(main())
