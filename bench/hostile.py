"""A hostile client: the abuses SECURITY.md defends against, from one process, each bounded
in count and time, against a server on loopback.

    .venv/bin/python -m bench.hostile --port PORT --http http://127.0.0.1:HTTP_PORT [--seconds S]

Two phases. First, abuse over connections that complete their handshake (each needs the
gate to admit it, so they go one at a time): malformed, unknown, misplaced and oversized
control frames; control streams held open with half a frame; many streams opened at once;
a flood of valid input datagrams and one of garbage datagrams after a welcome; connection
churn (join, leave, again); and a real player, relayed through a socket that records its
packets, whose captured QUIC and fast-path packets are sent again (replays) and forged
(its session id, bytes of our own). Then ``--seconds`` of packet floods: random UDP, fake
fast-path packets, Initials with random connection ids that do not decrypt, genuine
ClientHellos from a socket that never answers, and real handshakes that complete and close.

It prints one JSON line: how much of each it sent, and how the server answered (every close
reason it gave). tests/test_soak.py runs it while bots play; bench/security.py uses its
senders for its floods.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import os
import random
import socket
import struct
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import orjson
from aioquic.asyncio.client import connect
from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection
from aioquic.quic.events import ConnectionTerminated, QuicEvent, StreamDataReceived

from bench.serve import HOST
from tickline.bots.client import ClientOptions, GameClient, client_configuration
from tickline.bots.lobby import fetch_connect_token
from tickline.shared.fastpath import DATA, SESSION_ID_SIZE, is_fastpath
from tickline.shared.protocol import (
    ALPN,
    PROTOCOL_VERSION,
    Bye,
    Hello,
    Input,
    StreamDecoder,
    Welcome,
    encode,
    encode_stream,
)

Address = tuple[str, int]


def say(message: str) -> None:
    print(f"[hostile] {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------- packets


def client_initials(port: int, n: int) -> list[bytes]:
    """The first datagram of ``n`` genuine clients: a ClientHello each, padded to 1200 bytes."""
    out = []
    for _ in range(n):
        quic = QuicConnection(configuration=QuicConfiguration(is_client=True, alpn_protocols=[ALPN]))
        quic.connect((HOST, port), now=time.monotonic())
        out.append(quic.datagrams_to_send(now=time.monotonic())[0][0])
    return out


def random_initial() -> bytes:
    """A long-header Initial of version 1 with a fresh connection id and a random payload."""
    return bytes([0xC0, 0, 0, 0, 1, 8]) + os.urandom(8) + b"\x00\x00" + (0x4000 | 1190).to_bytes(2) + os.urandom(1190)


def random_udp(rng: random.Random) -> bytes:
    return rng.randbytes(rng.randint(1, 1400))


def fake_fastpath(rng: random.Random, session_id: bytes = b"") -> bytes:
    """A packet the server's fast path must read (the QUIC fixed bit clear): a random or the
    given session id, a sequence number, and random bytes where the sealed payload goes."""
    sid = session_id or rng.randbytes(SESSION_ID_SIZE)
    packet = bytes([DATA]) + sid + rng.randint(1, 2**40).to_bytes(8, "big") + rng.randbytes(rng.randint(0, 200))
    assert is_fastpath(packet)
    return packet


class Silent:
    """A UDP socket that sends and never answers (a forged source address), counting what comes back."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((HOST, 0))
        self.sock.setblocking(False)
        self.sent = self.back = 0

    def send(self, packet: bytes, port: int) -> None:
        with contextlib.suppress(BlockingIOError):
            self.sock.sendto(packet, (HOST, port))
            self.sent += len(packet)

    def drain(self) -> int:
        while True:
            try:
                self.back += len(self.sock.recv(65536))
            except BlockingIOError:
                return self.back

    def close(self) -> None:
        self.sock.close()


async def paced(per_s: float, seconds: float, action: Callable[[], object]) -> int:
    """Call ``action()`` ``per_s`` times a second for ``seconds``, in batches every 10 ms; the count."""
    loop = asyncio.get_running_loop()
    start, done = loop.time(), 0
    while (elapsed := loop.time() - start) < seconds:
        due = int(elapsed * per_s)
        while done < due:
            action()
            done += 1
        await asyncio.sleep(0.01)  # the sender's own pacing
    return done


async def real_handshakes(port: int, per_s: float, seconds: float) -> int:
    """aioquic clients that complete a handshake and close at once; how many completed."""
    # A client the gate turns away gives up by its own idle timeout, so that aioquic's
    # connection waiter is awaited when it fails (cancelled from outside, it would fail unseen).
    config = QuicConfiguration(is_client=True, alpn_protocols=[ALPN], verify_mode=0, idle_timeout=4)
    completed = 0

    async def one() -> None:
        nonlocal completed
        with contextlib.suppress(ConnectionError, TimeoutError, OSError):
            async with asyncio.timeout(20), connect(HOST, port, configuration=config, wait_connected=True):
                completed += 1

    async with asyncio.TaskGroup() as tg:
        await paced(per_s, seconds, lambda: tg.create_task(one()))
    return completed


# ---------------------------------------------------------------------- raw connections


class Raw(QuicConnectionProtocol):
    """A QUIC connection that sends whatever it is told to, and hears the server's reason."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.decoder = StreamDecoder()
        self.frames: asyncio.Queue[object] = asyncio.Queue()
        self.terminated: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self.stream_id = self._quic.get_next_available_stream_id()

    def quic_event_received(self, event: QuicEvent) -> None:
        if isinstance(event, StreamDataReceived):
            with contextlib.suppress(Exception):  # ours to misuse; the server's frames are well formed
                for frame in self.decoder.feed(event.data):
                    self.frames.put_nowait(frame)
        elif isinstance(event, ConnectionTerminated) and not self.terminated.done():
            self.terminated.set_result(event.reason_phrase or f"code {event.error_code}")

    def send_stream(self, data: bytes, stream_id: int | None = None, end: bool = False) -> None:
        self._quic.send_stream_data(self.stream_id if stream_id is None else stream_id, data, end_stream=end)
        self.transmit()

    def new_stream(self) -> int:
        return self._quic.get_next_available_stream_id()

    def send_datagram(self, data: bytes) -> None:
        self._quic.send_datagram_frame(data)
        self.transmit()


@asynccontextmanager
async def raw(port: int) -> AsyncIterator[Raw]:
    async with asyncio.timeout(10), connect(HOST, port, configuration=client_configuration(), create_protocol=Raw) as c:
        assert isinstance(c, Raw)
        yield c


def framed(body: bytes) -> bytes:
    return struct.pack("!I", len(body)) + body


def hello(name: str, connect_token: str = "") -> bytes:
    return encode_stream(Hello(version=PROTOCOL_VERSION, name=name, connect_token=connect_token))


# ---------------------------------------------------------------------- the attacker


class Attacker:
    def __init__(self, port: int, http: str, seed: int) -> None:
        self.port, self.http = port, http
        self.rng = random.Random(seed)
        self.sent: Counter[str] = Counter()
        self.reasons: dict[str, list[str]] = {}  # attack -> the server's close reasons
        self.failed: Counter[str] = Counter()  # attacks that could not be made (no connection)

    def _heard(self, attack: str, reason: str) -> None:
        self.reasons.setdefault(attack, []).append(reason)

    async def _closed(self, attack: str, client: Raw, timeout: float = 10.0) -> None:
        try:
            self._heard(attack, await asyncio.wait_for(asyncio.shield(client.terminated), timeout))
        except TimeoutError:
            self._heard(attack, "(still open)")

    async def _try(self, attack: str, run: Callable[[], Awaitable[None]]) -> None:
        try:
            await run()
        except (ConnectionError, TimeoutError, OSError) as exc:
            self.failed[attack] += 1
            say(f"{attack}: no connection ({type(exc).__name__})")

    @asynccontextmanager
    async def _joined(self, name: str) -> AsyncIterator[Raw]:
        """A connection that came in with a connect token and was welcomed as a player."""
        token = (await fetch_connect_token(self.http, name))["token"]
        async with raw(self.port) as client:
            client.send_stream(hello(name, token))
            welcome = await asyncio.wait_for(client.frames.get(), 10)
            if not isinstance(welcome, Welcome):
                raise ConnectionError(f"no welcome: {welcome!r}")
            yield client

    # phase one: abuse over connections ----------------------------------------

    async def bad_frames(self) -> None:
        payloads = {
            "malformed_json": framed(b"{not json"),
            "unknown_frame": framed(orjson.dumps({"t": "teleport"})),
            "oversized_frame": struct.pack("!I", 10_000_000),
            "wrong_first_frame": framed(orjson.dumps({"t": "bye", "reason": "x"})),
            "huge_hello": hello("x" * 100_000),
        }
        for attack, payload in payloads.items():

            async def one(payload: bytes = payload, attack: str = attack) -> None:
                async with raw(self.port) as client:
                    client.send_stream(payload)
                    self.sent[attack] += 1
                    await self._closed(attack, client)

            await self._try(attack, one)

    async def half_frames(self, n: int = 3) -> None:
        """Control streams that say half a frame and then nothing, held open together."""

        async def one() -> None:
            async with raw(self.port) as client:
                client.send_stream(struct.pack("!I", 200) + b'{"t":"hello"')
                self.sent["half_frame"] += 1
                await self._closed("half_frame", client, timeout=30)

        async with asyncio.TaskGroup() as tg:
            for _ in range(n):
                tg.create_task(self._try("half_frame", one))

    async def many_streams(self, n: int = 64) -> None:
        async def one() -> None:
            async with raw(self.port) as client:
                for _ in range(n):
                    client.send_stream(b"\x00", stream_id=client.new_stream())
                self.sent["many_streams"] += n
                await self._closed("many_streams", client)

        await self._try("many_streams", one)

    async def datagram_floods(self, n: int = 3000) -> None:
        async def valid() -> None:
            async with self._joined("flood") as client:
                for seq in range(1, n + 1):
                    client.send_datagram(encode(Input(ack=0, inputs=[[seq, {}]])))
                    if seq % 100 == 0:
                        await asyncio.sleep(0)  # let what aioquic queued leave
                self.sent["input_flood"] += n
                await self._closed("input_flood", client)

        async def garbage() -> None:
            async with self._joined("garbage") as client:
                for _ in range(50):
                    client.send_datagram(self.rng.randbytes(self.rng.randint(1, 1100)))
                self.sent["garbage_datagrams"] += 50
                await self._closed("garbage_datagrams", client)

        await self._try("input_flood", valid)
        await self._try("garbage_datagrams", garbage)

    async def churn(self, n: int = 8) -> None:
        async def one(i: int) -> None:
            async with self._joined(f"churn{i}") as client:
                client.send_stream(encode_stream(Bye(reason="churn")))
                self.sent["churn"] += 1
                await self._closed("churn", client)

        for i in range(n):
            await self._try("churn", functools.partial(one, i))

    async def replays(self, seconds: float = 3.0) -> None:
        """A real player through a relay that records what it sends; its packets sent again
        (QUIC's and the fast path's), and fast-path packets forged with its session id."""
        relay = Relay()
        loop = asyncio.get_running_loop()
        front, _ = await loop.create_datagram_endpoint(lambda: relay.front, local_addr=(HOST, 0))
        up, _ = await loop.create_datagram_endpoint(lambda: relay.up, remote_addr=(HOST, self.port))
        relay_port = front.get_extra_info("sockname")[1]
        try:
            token = (await fetch_connect_token(self.http, "replayed"))["token"]
            async with GameClient.connect(
                HOST, relay_port, "replayed", connect_token=token, options=ClientOptions(local_host=HOST)
            ) as player:
                start = loop.time()
                while loop.time() - start < seconds:
                    await player.wait_update(timeout=2)
                    player.send_input({"mx": 1, "my": 0, "ax": 1, "ay": 0, "fire": False})
                    captured = list(relay.captured)
                    for packet in self.rng.sample(captured, min(5, len(captured))):
                        relay.send_up(packet)  # from the player's own address: a replay
                        self.sent["replayed_packets"] += 1
                    session_ids = {p[1 : 1 + SESSION_ID_SIZE] for p in captured if is_fastpath(p)}
                    for sid in session_ids:
                        relay.send_up(fake_fastpath(self.rng, sid))  # its session, our bytes
                        self.sent["forged_fastpath"] += 1
                self._heard("replays", "player still connected" if not player.closed.is_set() else player.close_reason)
        except (ConnectionError, TimeoutError, OSError) as exc:
            self.failed["replays"] += 1
            say(f"replays: {type(exc).__name__}: {exc}")
        finally:
            front.close()
            up.close()

    # phase two: packet floods --------------------------------------------------

    async def floods(
        self, seconds: float, random_per_s: float = 500, hellos_per_s: float = 50, handshakes_per_s: float = 10
    ) -> None:
        silent = Silent()
        hellos = iter(client_initials(self.port, int(hellos_per_s * seconds) + 10))
        try:
            async with asyncio.TaskGroup() as tg:
                jobs = {
                    "random_udp": (random_per_s, lambda: silent.send(random_udp(self.rng), self.port)),
                    "fake_fastpath": (random_per_s, lambda: silent.send(fake_fastpath(self.rng), self.port)),
                    "random_initials": (random_per_s, lambda: silent.send(random_initial(), self.port)),
                    "silent_hellos": (hellos_per_s, lambda: silent.send(next(hellos), self.port)),
                }
                tasks = {name: tg.create_task(paced(rate, seconds, send)) for name, (rate, send) in jobs.items()}
                tasks["real_handshakes"] = tg.create_task(real_handshakes(self.port, handshakes_per_s, seconds))
            for name, task in tasks.items():
                self.sent[name] += task.result()
            self.sent["flood_bytes_back"] = silent.drain()
        finally:
            silent.close()

    async def run(self, seconds: float) -> dict[str, Any]:
        began = time.monotonic()
        await self.bad_frames()
        await self.many_streams()
        await self.datagram_floods()
        await self.churn()
        async with asyncio.TaskGroup() as tg:  # held open (until the hello timeout) while the rest goes on
            tg.create_task(self.half_frames())
            tg.create_task(self.replays())
        say(f"connection abuse done in {time.monotonic() - began:.1f} s; floods for {seconds:g} s")
        await self.floods(seconds)
        return {"sent": dict(self.sent), "reasons": self.reasons, "failed": dict(self.failed)}


class Relay:
    """One client's UDP relay to the server, recording what the client sends."""

    def __init__(self) -> None:
        self.client: Address | None = None
        self.captured: list[bytes] = []
        relay = self

        class Front(asyncio.DatagramProtocol):
            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                self.transport = transport

            def datagram_received(self, data: bytes, addr: Address) -> None:
                relay.client = addr
                if len(relay.captured) < 2000:
                    relay.captured.append(data)
                relay.send_up(data)

        class Up(asyncio.DatagramProtocol):
            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                self.transport = transport

            def datagram_received(self, data: bytes, addr: Address) -> None:
                if relay.client is not None:
                    relay.front.transport.sendto(data, relay.client)  # type: ignore[attr-defined]

        self.front, self.up = Front(), Up()

    def send_up(self, packet: bytes) -> None:
        self.up.transport.sendto(packet)  # type: ignore[attr-defined]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.hostile", description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True, help="the server's QUIC port on 127.0.0.1")
    parser.add_argument("--http", required=True, help="the server's HTTP side, for connect tokens")
    parser.add_argument("--seconds", type=float, default=8.0, help="how long the packet floods last (default: 8)")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    if not 0 < args.seconds <= 300:
        parser.error(f"--seconds {args.seconds:g} is out of range; use up to 300")
    result = asyncio.run(Attacker(args.port, args.http, args.seed).run(args.seconds))
    print(orjson.dumps(result).decode(), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
