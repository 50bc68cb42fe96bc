"""The transport ceiling: a bare aioquic server and its clients, with no game at all.

``tickline bench capacity`` compares how many players one tickline server holds
with how many clients this holds at the same tick rate, send rate and datagram
sizes, on the same machine, in turns. What it keeps from tickline is only what
the network sees and the loop's shape:

- the server (``python -m tickline.transport_ceiling serve ...``, a child
  process): an aioquic endpoint on 127.0.0.1 (self-signed certificate from
  ``server.tls.ensure_certificate``, ALPN ``ceiling/1``, datagrams enabled, the
  same QUIC packet size as tickline, ``shared.protocol.QUIC_PACKET_SIZE``) and a
  fixed-tick loop on absolute deadlines, exactly as ``server.match`` runs it
  (same catch-up rule); every ``tick_rate / send_rate`` ticks it queues one
  datagram of ``--delta-bytes`` for each client and transmits at the end of the
  loop turn (``_transmit_soon``), through ``server.transport``'s own
  ``ServerConnection.send_datagram`` on its ``Endpoint`` socket. It counts the
  datagrams clients send it and does nothing else with them. It prints one JSON
  line when ready, then one a second: cumulative ticks, datagrams sent and
  received, its own CPU seconds (``resource.getrusage``), connected clients, and
  the lateness of every tick since the previous line. SIGTERM closes every
  connection (``bye``) and exits 0; ``--max-seconds`` bounds its life.
  ``--loop`` picks its event loop (``tickline.loops``; default asyncio's own).
- ``--fastpath`` (bench/transport.py): the same server with tickline's fast path
  (docs/fastpath.md): right after the handshake each connection opens a
  ``server.fastpath`` route and sends its keys (``FastKeys.to_wire()`` as JSON)
  on a server-opened unidirectional stream; once a client's input arrives as a
  fast-path packet, ``send_datagram`` seals that client's deltas onto the fast
  path (QUIC datagrams before that, and again from any input that comes over
  QUIC). Its lines add the fast path's packet counters (``fast_in``, ``fast_out``,
  ``fast_dropped``).
- the clients (:func:`run_clients`): aioquic clients in worker processes (the
  same ramp as ``bots.loadtest``), each sending one ``--input-bytes`` datagram
  per send interval on absolute deadlines, as a tickline bot sends one input
  datagram per send interval, and counting the datagrams it receives. Their
  sockets are bound to 127.0.0.1 (:func:`loopback_connect`). A client given
  fast-path keys sends its inputs as fast-path packets from its QUIC socket
  (``shared.fastpath`` sealer, as ``bots.client`` does, with a QUIC PING every
  ``KEEPALIVE_S``) and opens the sealed deltas it receives.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import queue as queue_module
import resource
import signal
import socket
import ssl
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import orjson
from aioquic.asyncio import QuicConnectionProtocol
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection
from aioquic.quic.events import (
    ConnectionTerminated,
    DatagramFrameReceived,
    HandshakeCompleted,
    QuicEvent,
    StreamDataReceived,
)

from bots.client import ClientProtocol
from server.fastpath import FastPath
from server.transport import Endpoint, ServerConnection
from shared import fastpath
from shared.protocol import MAX_DATAGRAM, QUIC_PACKET_SIZE
from tickline import loops

ALPN = "ceiling/1"
HOST = "127.0.0.1"
# As server.match: further behind than this, restart the schedule from now.
MAX_BEHIND_S = 0.25
# As bots.client: on the fast path QUIC carries nothing, so a PING this often keeps it open.
KEEPALIVE_S = 2.0


# ---------------------------------------------------------------------- loopback connect


@asynccontextmanager
async def loopback_connect(host: str, port: int, *, configuration: QuicConfiguration,
                           create_protocol: Any = QuicConnectionProtocol) -> AsyncIterator[Any]:
    """``aioquic.asyncio.connect`` (1.7) with the client's socket bound to 127.0.0.1
    (aioquic binds it to "::", every address), for an IPv4 loopback server."""
    loop = asyncio.get_running_loop()
    if configuration.server_name is None:
        configuration.server_name = host
    connection = QuicConnection(configuration=configuration)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.bind((HOST, 0))
    except BaseException:
        sock.close()
        raise
    transport, protocol = await loop.create_datagram_endpoint(lambda: create_protocol(connection), sock=sock)
    try:
        protocol.connect((host, port), transmit=True)
        await protocol.wait_connected()
        yield protocol
    finally:
        protocol.close()
        try:
            async with asyncio.timeout(2):
                await protocol.wait_closed()
        except TimeoutError:
            pass
        finally:
            transport.close()


# ---------------------------------------------------------------------- the server


class _Figures:
    def __init__(self) -> None:
        self.clients: set[_ServerConnection] = set()
        self.ticks = 0
        self.sent = 0
        self.received = 0
        self.handshakes = 0
        self.catch_ups = 0
        self.late: list[float] = []  # since the last report line


class _ServerConnection(ServerConnection):
    """``server.transport.ServerConnection`` (its sends, its fast-path route) with no Session."""

    def __init__(self, *args: Any, figures: _Figures, **kwargs: Any) -> None:
        super().__init__(*args, accept=_no_session, **kwargs)
        self._figures = figures

    def quic_event_received(self, event: QuicEvent) -> None:
        if isinstance(event, DatagramFrameReceived):
            if self._route is not None:
                self._route.active = False  # as ServerConnection: answer on QUIC from now on
            self._figures.received += 1
        elif isinstance(event, HandshakeCompleted):
            self._figures.clients.add(self)
            self._figures.handshakes += 1
            if self._fast is not None:
                self._route = self._fast.open_route(self._on_fast_input, self._validated_addr)
                stream = self._quic.get_next_available_stream_id(is_unidirectional=True)
                self._quic.send_stream_data(stream, orjson.dumps(self._route.keys.to_wire()), end_stream=True)
        elif isinstance(event, ConnectionTerminated):
            self._drop_route()
            self._figures.clients.discard(self)

    def _on_fast_input(self, payload: bytes) -> None:
        self._figures.received += 1


def _no_session(session: Any) -> None:
    raise AssertionError("the transport ceiling makes no sessions")


async def _tick_loop(figures: _Figures, tick_rate: int, send_every: int, payload: bytes, stop: asyncio.Event) -> None:
    """``server.match.Match._tick_loop``'s schedule with nothing in the tick but the sends."""
    loop = asyncio.get_running_loop()
    dt = 1.0 / tick_rate
    start = loop.time()
    n = 0
    while not stop.is_set():
        deadline = start + n * dt
        delay = deadline - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        now = loop.time()
        late = now - deadline
        if late > MAX_BEHIND_S:
            start, n, late = now, 0, 0.0
            figures.catch_ups += 1
        figures.late.append(late)
        figures.ticks += 1
        if figures.ticks % send_every == 0:
            for conn in figures.clients:
                # QUIC: queued, one transmit per connection at the end of this turn; or sealed
                # and sent at once on the connection's fast-path route.
                conn.send_datagram(payload)
            figures.sent += len(figures.clients)
        n += 1


def _line(figures: _Figures, fast: FastPath | None, final: bool = False) -> bytes:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    late, figures.late = figures.late, []
    body = {
        "t": round(time.monotonic(), 4), "ticks": figures.ticks, "clients": len(figures.clients),
        "sent": figures.sent, "received": figures.received, "handshakes": figures.handshakes,
        "cpu_s": round(usage.ru_utime + usage.ru_stime, 4), "catch_ups": figures.catch_ups,
        "late_ms": [round(x * 1000, 3) for x in late],
    }
    if fast is not None:
        body.update({"fast_in": fast.packets_in, "fast_out": fast.packets_out,
                     "fast_dropped": sum(fast.dropped.values()), "fast_routes": fast.active_routes()})
    if final:
        body["event"] = "stopped"
    return orjson.dumps(body) + b"\n"


async def serve_ceiling(args: argparse.Namespace) -> int:
    from server.tls import ensure_certificate

    cert, key, _ = ensure_certificate(Path(args.cert_dir))
    config = QuicConfiguration(is_client=False, alpn_protocols=[ALPN], max_datagram_frame_size=65536,
                               max_datagram_size=QUIC_PACKET_SIZE, idle_timeout=15.0)
    config.load_cert_chain(cert, key)
    figures = _Figures()

    fast = FastPath() if args.fastpath else None

    def create(*a: Any, **kw: Any) -> _ServerConnection:
        return _ServerConnection(*a, figures=figures, fast=fast, **kw)

    loop = asyncio.get_running_loop()
    _, endpoint = await loop.create_datagram_endpoint(
        lambda: Endpoint(fast=fast, configuration=config, create_protocol=create), local_addr=(HOST, args.port))
    port = endpoint._transport.get_extra_info("sockname")[1]
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    loop.call_later(args.max_seconds, stop.set)
    out = sys.stdout.buffer
    out.write(orjson.dumps({"event": "ready", "host": HOST, "port": port, "pid": os.getpid(),
                            "alpn": ALPN, "delta_bytes": args.delta_bytes, "fastpath": fast is not None,
                            "loop": type(loop).__module__.split(".")[0]}) + b"\n")
    out.flush()
    payload = b"d" * args.delta_bytes
    send_every = max(1, args.tick_rate // args.send_rate)
    ticker = asyncio.create_task(_tick_loop(figures, args.tick_rate, send_every, payload, stop))

    async def report() -> None:
        next_at = loop.time() + 1.0
        while not stop.is_set():
            await asyncio.sleep(max(0.0, next_at - loop.time()))
            next_at += 1.0
            out.write(_line(figures, fast))
            out.flush()

    reporter = asyncio.create_task(report())
    await stop.wait()
    await ticker
    reporter.cancel()
    for conn in list(figures.clients):
        conn.close("bye")
    await asyncio.sleep(0.2)  # let the closes go out
    out.write(_line(figures, fast, final=True))
    out.flush()
    endpoint.close()
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


class _ClientConnection(ClientProtocol):
    result: ClientResult | None = None
    ended: asyncio.Event | None = None
    # The fast path's (sealer, opener), once the server sent the keys.
    ends: tuple[fastpath.Sealer, fastpath.Opener] | None = None
    _keys = b""
    _pinged_at = 0.0

    def datagram_received(self, data: bytes | str, addr: Any) -> None:
        if self.ends is not None and fastpath.is_fastpath(data):  # type: ignore[arg-type]
            self._on_fast(data)  # type: ignore[arg-type]
            return
        super().datagram_received(data, addr)

    def _on_fast(self, packet: bytes) -> None:
        result = self.result
        if self.ends is None or result is None:
            return
        try:
            self.ends[1].open(packet)
        except fastpath.Dropped:
            result.fast_dropped += 1
            return
        result.received += 1
        result.fast_received += 1

    def send_input(self, payload: bytes, now: float) -> None:
        """One input: sealed onto the fast path once the keys came (as ``bots.client``), else a QUIC datagram."""
        paths = self._quic._network_paths
        if self.ends is not None and self._transport is not None and paths:
            self._transport.sendto(self.ends[0].seal(fastpath.DATA, payload), paths[0].addr)
            if self.result is not None:
                self.result.fast_sent += 1
            if now - self._pinged_at < KEEPALIVE_S:
                return
            self._quic.send_ping(0)
            self._pinged_at = now
        else:
            self._quic.send_datagram_frame(payload)
        self.transmit()

    def quic_event_received(self, event: QuicEvent) -> None:
        if isinstance(event, StreamDataReceived):  # the fast path's keys, the one stream the server opens
            self._keys += event.data
            if event.end_stream:
                self.ends = fastpath.client_ends(fastpath.FastKeys.from_wire(orjson.loads(self._keys)))
            return
        result = self.result
        if result is None:
            return
        if isinstance(event, DatagramFrameReceived):
            result.received += 1
        elif isinstance(event, ConnectionTerminated):
            result.closed_at = time.monotonic()
            result.close_reason = event.reason_phrase or f"code {event.error_code}"
            if self.ended is not None:
                self.ended.set()


async def _one_client(port: int, duration: float, send_rate: int, payload: bytes, result: ClientResult) -> None:
    config = QuicConfiguration(is_client=True, alpn_protocols=[ALPN], max_datagram_frame_size=65536,
                               max_datagram_size=QUIC_PACKET_SIZE, idle_timeout=15.0)
    config.verify_mode = ssl.CERT_NONE
    started = time.monotonic()
    deadline = started + duration
    connection = loopback_connect(HOST, port, configuration=config, create_protocol=_ClientConnection)
    try:
        async with asyncio.timeout(10):
            protocol = await connection.__aenter__()
    except (TimeoutError, ConnectionError, OSError) as exc:
        result.error = f"cannot connect: {exc or 'timed out'}"
        result.seconds = time.monotonic() - started
        return
    try:
        ended = asyncio.Event()
        protocol.result, protocol.ended = result, ended
        result.connected = True
        result.connect_s = time.monotonic() - started
        loop = asyncio.get_running_loop()
        interval = 1.0 / send_rate
        next_send = loop.time()
        while not ended.is_set() and time.monotonic() < deadline:
            next_send += interval
            delay = next_send - loop.time()
            if delay > 0:
                try:
                    async with asyncio.timeout(delay):
                        await ended.wait()
                    break
                except TimeoutError:
                    pass
            else:
                next_send = loop.time()  # fell behind: do not try to catch up
            protocol.send_input(payload, loop.time())
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


async def _client_worker_main(cfg: dict[str, Any], first: int, count: int,
                              start_at: float) -> tuple[list[ClientResult], list[tuple[float, list[int | None]]]]:
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


async def run_clients(port: int, n: int, duration: float, *, ramp: float, send_rate: int, input_bytes: int,
                      workers: int, loop: str = "asyncio") -> dict[str, Any]:
    """``n`` bare clients over ``workers`` spawned processes (on the event ``loop``, see
    ``tickline.loops``), ``ramp`` started per second, each for up to ``duration`` s (less
    when the server closes it). Returns every client's result and,
    per worker, its once-a-second snapshots of every client's received count; a worker still
    running ``duration + n / ramp + 30`` s after the start is terminated by PID."""
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    cfg = {"port": port, "duration": duration, "ramp": ramp, "send_rate": send_rate, "input_bytes": input_bytes,
           "loop": loop}
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
    loop = asyncio.get_running_loop()
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
            message = await loop.run_in_executor(None, get)
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


# ---------------------------------------------------------------------- command line


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tickline.transport_ceiling",
                                     description="The bare aioquic server of `tickline bench capacity`.")
    sub = parser.add_subparsers(dest="command", required=True)
    s = sub.add_parser("serve", help="run the bare server until SIGTERM (or --max-seconds)")
    s.add_argument("--port", type=int, default=0)
    s.add_argument("--tick-rate", type=int, default=60)
    s.add_argument("--send-rate", type=int, default=30)
    s.add_argument("--delta-bytes", type=int, default=200)
    s.add_argument("--cert-dir", required=True)
    s.add_argument("--max-seconds", type=float, default=600.0)
    s.add_argument("--fastpath", action="store_true",
                   help="offer every client tickline's fast path (server.fastpath) and send on it once it is in use")
    s.add_argument("--loop", default="auto", choices=loops.LOOPS,
                   help="the event loop (default: auto, uvloop where installed, as `tickline serve`)")
    args = parser.parse_args(argv)
    if not 1 <= args.delta_bytes <= MAX_DATAGRAM:
        parser.error(f"--delta-bytes must be 1 to {MAX_DATAGRAM} (aioquic never sends a datagram that does not fit one packet)")
    try:
        return loops.run(serve_ceiling(args), args.loop)
    except loops.LoopUnavailable as exc:
        parser.error(str(exc))


if __name__ == "__main__":
    sys.exit(main())
