"""The Python client SDK: connect to a tickline server over QUIC and play.

    async with GameClient.connect("127.0.0.1", 4433, "alice", cafile=cert) as client:
        while not client.closed.is_set():
            await client.wait_update()
            client.send_input({"mx": 1, "my": 0, "ax": 1, "ay": 0, "fire": True})

The handshake (hello -> welcome) runs on the reliable control stream; inputs go
up and deltas come down as QUIC datagrams, or, once the server has sent the
fast path's keys, as fast-path packets on the same socket (shared/fastpath.py).
When no fast-path packet arrives for ``FALLBACK_S`` the client goes back to
QUIC datagrams by itself, and the server follows. ``client.world`` (a
:class:`bots.world.ClientWorld`) holds the newest view and does the acks.

Where UDP cannot go, ``transport="websocket"`` (with the server's ``http_port``)
carries the same frames on a WebSocket to the server's HTTP side (server/websocket.py):
each message a kind byte and a control-stream chunk or a datagram; no fast path
there. ``client.transport`` says which one a client uses.

A spectator (``GameClient.spectate``) is the same client that never sends
inputs: it acknowledges each view it applies with an input datagram that
carries only the ack, so that the server can send it deltas; its views are
the server's, ``client.welcome.spectator_delay`` ticks behind the match.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, cast

from aioquic.asyncio.client import connect
from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection
from aioquic.quic.events import (
    ConnectionTerminated,
    DatagramFrameReceived,
    QuicEvent,
    StreamDataReceived,
)

from tickline.bots.world import ClientWorld
from tickline.shared import fastpath
from tickline.shared.games import UnknownGame, make_rules
from tickline.shared.protocol import (
    ACK_GRID,
    ALPN,
    DEFLATE,
    IDLE_TIMEOUT_S,
    MAX_INPUT_TICKS,
    MAX_STREAM_FRAME,
    PACKED_DELTA,
    PACKED_INPUTS,
    PROTOCOL_VERSION,
    QUIC_IDLE_S,
    QUIC_PACKET_SIZE,
    WEBSOCKET_PATH,
    WS_CONTROL,
    WS_DATAGRAM,
    Bye,
    Delta,
    Event,
    FastPath,
    Frame,
    Hello,
    ProtocolError,
    StreamDecoder,
    Welcome,
    decode_datagram,
    encode,
    encode_stream,
    split_packed_delta,
)

if TYPE_CHECKING:
    import aiohttp


class ClientError(Exception):
    """The connection failed or the server refused us; the message says why."""


@dataclass(slots=True)
class ClientStats:
    bytes_down: int = 0
    bytes_up: int = 0
    datagrams_down: int = 0
    deltas_applied: int = 0
    inputs_sent: int = 0
    fast_packets_down: int = 0
    fast_dropped: int = 0
    fast_fallbacks: int = 0
    quic_pings: int = 0  # keepalives sent as QUIC PINGs (none on the fast path to a server that counts it)


@dataclass(frozen=True, slots=True)
class ClientOptions:
    """How a client uses the wire, beyond where it connects."""

    fast: bool = True  # take the fast path where the server offers it
    # Input datagrams per second (at most the tick rate; 0: one per state update the server sends).
    input_rate: int = 0
    # Ticks each input holds (1 to MAX_INPUT_TICKS): 2 at 60 Hz ticks for a client
    # that reads its controls at 30 Hz. Each input is applied at the first tick
    # the server has for it and kept through the others.
    input_ticks: int = 1
    # The local address to send from (None: every address, IPv4 and IPv6, as aioquic binds).
    # "127.0.0.1" keeps a load test on IPv4 loopback end to end.
    local_host: str | None = None

    def __post_init__(self) -> None:
        if not 1 <= self.input_ticks <= MAX_INPUT_TICKS:
            raise ValueError(f"input_ticks must be 1 to {MAX_INPUT_TICKS}, not {self.input_ticks}")
        if self.input_rate < 0:
            raise ValueError(f"input_rate must be 0 or more, not {self.input_rate}")


# Seconds without a fast-path packet after which inputs go back to QUIC datagrams.
FALLBACK_S = 1.0
# A QUIC client keeps its connection alive itself (QUIC's own idle timer is a backstop a day
# long, shared/protocol.py): when it has sent nothing that the server counts for this share of
# the server's idle timeout (so two may be lost), it sends something. On the fast path, to a
# server that counts fast-path packets (it says so with the keys), that is an ack sealed as a
# fast-path packet; otherwise a QUIC PING, which costs the server a packet in and an ACK out.
# And a connection that brings nothing from the server for the idle timeout is ended.
KEEPALIVE_SHARE = 1 / 3


class ClientProtocol(QuicConnectionProtocol):
    """aioquic's client protocol, minus a warning per connect that timed out.

    ``wait_connected`` awaits a shielded future; when the wait is cancelled (a
    connect timeout), closing the connection later fails that future with nobody
    to hear it, and asyncio logs "Future exception was never retrieved" for
    every such client: hundreds of lines when a load test overloads a server."""

    async def wait_connected(self) -> None:
        try:
            await super().wait_connected()
        except asyncio.CancelledError:
            waiter = self._connected_waiter
            if waiter is not None:
                waiter.add_done_callback(lambda f: None if f.cancelled() else f.exception())
            raise


@asynccontextmanager
async def quic_connect(
    host: str,
    port: int,
    *,
    configuration: QuicConfiguration,
    create_protocol: type[QuicConnectionProtocol] = QuicConnectionProtocol,
    local_host: str | None = None,
) -> AsyncIterator[Any]:
    """``aioquic.asyncio.connect``, sending from ``local_host`` when given (aioquic always
    binds every address, "::"); yields the connected protocol and closes it on exit."""
    if local_host is None:
        async with connect(host, port, configuration=configuration, create_protocol=create_protocol) as protocol:
            yield protocol
        return
    loop = asyncio.get_running_loop()
    family = socket.AF_INET6 if ":" in local_host else socket.AF_INET
    infos = await loop.getaddrinfo(host, port, family=family, type=socket.SOCK_DGRAM)
    if configuration.server_name is None:
        configuration.server_name = host
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        sock.bind((local_host, 0))
    except BaseException:
        sock.close()
        raise
    connection = QuicConnection(configuration=configuration)
    transport, protocol = await loop.create_datagram_endpoint(lambda: create_protocol(connection), sock=sock)
    try:
        protocol.connect(infos[0][4], transmit=True)
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


class _Protocol(ClientProtocol):
    client: GameClient
    udp: asyncio.DatagramTransport | None = None  # the socket QUIC sends from (and the fast path)
    packets = 0  # QUIC packets received (the client's keepalive looks at it)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # (asyncio's own UDP transport does not subclass DatagramTransport; it has its methods)
        self.udp = cast(asyncio.DatagramTransport, transport)
        super().connection_made(transport)

    def datagram_received(self, data: bytes | str, addr: Any) -> None:
        client = getattr(self, "client", None)
        if client is not None and isinstance(data, bytes) and fastpath.is_fastpath(data):
            client._on_fast(data, addr)
            return
        self.packets += 1
        super().datagram_received(data, addr)

    def quic_event_received(self, event: QuicEvent) -> None:
        client = getattr(self, "client", None)
        if client is None:
            return
        if isinstance(event, StreamDataReceived):
            client._on_stream(event.data)
        elif isinstance(event, DatagramFrameReceived):
            client._on_datagram(event.data)
        elif isinstance(event, ConnectionTerminated):
            client._on_closed(event.reason_phrase or f"connection closed (code {event.error_code})")


Transport = Literal["quic", "websocket"]
# A WebSocket close frame's reason is at most 123 bytes (RFC 6455 5.5).
_MAX_WS_REASON = 123
# Seconds a WebSocket close waits for the server's close frame.
_WS_CLOSE_S = 2.0


class _Wire(Protocol):
    """How a client's frames travel: what GameClient asks of a transport."""

    transport: Transport

    def attach(self, client: GameClient) -> None:
        """From now on, what arrives goes to ``client``."""

    def send_stream(self, data: bytes) -> None:
        """Bytes for the control stream (length-prefixed frames)."""

    def send_datagram(self, body: bytes) -> None:
        """One datagram frame."""

    def close(self, reason: str, error: bool = False) -> None:
        """Close the connection, telling the server ``reason``."""


class _QuicWire:
    """A QUIC connection: the control stream is the client's first bidirectional stream."""

    transport: Transport = "quic"

    def __init__(self, protocol: _Protocol) -> None:
        self.protocol = protocol
        self.quic = protocol._quic
        self._stream_id = self.quic.get_next_available_stream_id()

    def attach(self, client: GameClient) -> None:
        self.protocol.client = client

    def send_stream(self, data: bytes) -> None:
        self.quic.send_stream_data(self._stream_id, data)
        self.protocol.transmit()

    def send_datagram(self, body: bytes) -> None:
        self.quic.send_datagram_frame(body)
        self.protocol.transmit()

    def close(self, reason: str, error: bool = False) -> None:
        self.protocol.close(error_code=1 if error else 0, reason_phrase=reason[:200])

    def ping(self) -> None:
        self.quic.send_ping(0)
        self.protocol.transmit()

    def send_udp(self, packet: bytes, addr: Any = None) -> None:
        """One fast-path packet from our QUIC socket, to ``addr`` (default: the server's)."""
        transport = self.protocol.udp
        # The server's address as QUIC knows it: aioquic keeps it only in its connection's
        # private _network_paths (the current path first) and has no public accessor.
        paths = self.quic._network_paths
        if transport is not None and (addr is not None or paths):
            transport.sendto(packet, addr if addr is not None else paths[0].addr)


class _WebSocketWire:
    """A WebSocket to the server's HTTP side: each binary message is a kind byte and a
    control-stream chunk or one datagram (server/websocket.py). Sends are queued and a
    writer task sends them in order; :meth:`run` is that task's owner."""

    transport: Transport = "websocket"

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self._ws = ws
        self._client: GameClient | None = None
        self._out: deque[bytes] = deque()
        self._wake = asyncio.Event()
        self._close: tuple[int, bytes] | None = None
        self._ended: str | None = None  # why the WebSocket closed, once it has

    def attach(self, client: GameClient) -> None:
        self._client = client
        if self._ended is not None:  # the server closed it before we said hello
            client._on_closed(self._ended)

    def send_stream(self, data: bytes) -> None:
        self._queue(WS_CONTROL + data)

    def send_datagram(self, body: bytes) -> None:
        self._queue(WS_DATAGRAM + body)

    def close(self, reason: str, error: bool = False) -> None:
        if self._close is None:
            cut = reason.encode()[:_MAX_WS_REASON].decode(errors="ignore").encode()
            self._close = (1008 if error else 1000, cut)
            self._wake.set()

    def _queue(self, message: bytes) -> None:
        if self._close is None and self._ended is None:
            self._out.append(message)
            self._wake.set()

    async def run(self) -> None:
        """Read into the client and send what it queued, until the WebSocket closes."""
        reason = "connection lost"
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._write())
                try:
                    reason = await self._read()
                finally:
                    self._ended = reason
                    self._wake.set()
        finally:
            if self._client is not None:
                self._client._on_closed(reason)

    async def _read(self) -> str:
        import aiohttp

        ws = self._ws
        while True:
            msg = await ws.receive()
            client = self._client
            if msg.type is aiohttp.WSMsgType.CLOSE:
                return msg.extra or f"connection closed (code {msg.data})"
            if msg.type is aiohttp.WSMsgType.ERROR:
                return f"connection lost ({msg.data})"
            if msg.type in (aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.CLOSED):
                return "connection closed"
            if client is None:
                continue  # (the server sends nothing before our hello)
            data = msg.data if msg.type is aiohttp.WSMsgType.BINARY else b""
            if data[:1] == WS_CONTROL:
                client._on_stream(data[1:])
            elif data[:1] == WS_DATAGRAM:
                client._on_datagram(data[1:])
            else:
                client._fail(f"bad message from server: {msg.type.name.lower()} message of kind {data[:1].hex()!r}")

    async def _write(self) -> None:
        ws = self._ws
        try:
            while True:
                self._wake.clear()
                while self._out:
                    await ws.send_bytes(self._out.popleft())
                if self._close is not None:
                    code, reason = self._close
                    await ws.close(code=code, message=reason)
                    return
                if self._ended is not None:
                    return
                await self._wake.wait()
        except ConnectionResetError:
            return  # the server went away; the read side says so


def client_configuration(cafile: Path | str | None = None) -> QuicConfiguration:
    """A native client's QUIC configuration: tickline's ALPN and datagrams; the server's
    certificate checked against ``cafile``, or not at all without one (tests, load tests)."""
    config = QuicConfiguration(
        is_client=True,
        alpn_protocols=[ALPN],
        # Without this on both ends, aioquic drops datagrams silently.
        max_datagram_frame_size=65536,
        max_datagram_size=QUIC_PACKET_SIZE,
        idle_timeout=QUIC_IDLE_S,
    )
    if cafile is not None:
        config.load_verify_locations(cafile=str(cafile))
    else:
        config.verify_mode = ssl.CERT_NONE
    return config


@asynccontextmanager
async def _quic_wire(
    host: str, port: int, *, cafile: Path | str | None, timeout: float, local_host: str | None
) -> AsyncIterator[_QuicWire]:
    """A QUIC connection to ``host:port``, closed on exit."""
    config = client_configuration(cafile)
    try:
        async with asyncio.timeout(timeout):
            connection = quic_connect(
                host, port, configuration=config, create_protocol=_Protocol, local_host=local_host
            )
            protocol = await connection.__aenter__()
    except (TimeoutError, ConnectionError, OSError) as exc:
        raise ClientError(f"cannot connect to {host}:{port}: {str(exc) or 'timed out'}") from None
    try:
        yield _QuicWire(protocol)
    finally:
        await connection.__aexit__(None, None, None)


@asynccontextmanager
async def _websocket_wire(
    host: str, port: int, *, timeout: float, local_host: str | None
) -> AsyncIterator[_WebSocketWire]:
    """A WebSocket to ``ws://host:port/ws``, closed on exit (a goodbye queued before goes first)."""
    import aiohttp
    from yarl import URL

    url = URL.build(scheme="ws", host=host, port=port, path=WEBSOCKET_PATH)
    connector = aiohttp.TCPConnector(local_addr=(local_host, 0) if local_host else None)
    async with aiohttp.ClientSession(connector=connector) as http:
        try:
            async with asyncio.timeout(timeout):
                ws = await http.ws_connect(
                    url,
                    max_msg_size=1 + 4 + MAX_STREAM_FRAME,  # a kind byte and the largest control frame
                    timeout=aiohttp.ClientWSTimeout(ws_close=_WS_CLOSE_S),
                )
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise ClientError(f"cannot connect to {url}: {str(exc) or 'timed out'}") from None
        wire = _WebSocketWire(ws)
        running = asyncio.create_task(wire.run(), name=f"websocket {url}")
        try:
            yield wire
        finally:
            wire.close("client done")
            await running  # ends once the close is done: within _WS_CLOSE_S of a silent server


class GameClient:
    def __init__(self, wire: _Wire, name: str, world: ClientWorld | None = None) -> None:
        self._wire = wire
        # The fast path runs beside QUIC only.
        self._quic = wire if isinstance(wire, _QuicWire) else None
        self.transport: Transport = wire.transport
        self.name = name
        self._decoder = StreamDecoder()
        self._welcome: asyncio.Future[Welcome] = asyncio.get_running_loop().create_future()
        self._updated = asyncio.Event()
        self.world = world.reconnected() if world is not None else ClientWorld()
        self.input_batch = 1
        self._unsent = 0
        self._loop = asyncio.get_running_loop()
        self._heard_at = self._loop.time()
        self.stats = ClientStats()
        self.events: list[Event] = []
        self.closed = asyncio.Event()
        self.close_reason = ""
        self.welcome: Welcome | None = None
        # Called after each view is applied, with its tick and the view (which is never changed later).
        self.on_view: Callable[[int, dict[str, Any]], None] | None = None
        self.options = ClientOptions()
        # The fast path, once the server sent its keys; "off" after falling back.
        self._fast: tuple[fastpath.Sealer, fastpath.Opener] | None = None
        self.fast_state = "none"  # none | trying | on | off
        self._fast_heard_at = 0.0
        # Keepalive (KEEPALIVE_SHARE): the server's idle timeout (it says so with the fast
        # path's keys), whether it counts fast-path packets, when we last sent anything and
        # anything on QUIC, and the packets heard from it at the last look, since when.
        self._idle_s = IDLE_TIMEOUT_S
        self._fast_keepalive = False
        # Whether the server reads packed input datagrams (it says so with the fast path's keys).
        self._packed_inputs = False
        self._sent_at = self._quic_sent_at = self._loop.time()
        self._heard_count, self._heard_count_at = 0, self._loop.time()
        self._keepalive_timer: asyncio.TimerHandle | None = None
        if self._quic is not None:
            self._keepalive_timer = self._loop.call_later(self._idle_s * KEEPALIVE_SHARE, self._keepalive)
        wire.attach(self)

    # ------------------------------------------------------------ connect

    @classmethod
    def connect(
        cls,
        host: str,
        port: int,
        name: str,
        *,
        cafile: Path | str | None = None,
        timeout: float = 10.0,
        token: str = "",
        world: ClientWorld | None = None,
        options: ClientOptions = ClientOptions(),
        transport: Transport = "quic",
        http_port: int | None = None,
        connect_token: str = "",
    ) -> AbstractAsyncContextManager[GameClient]:
        """Connect, say hello, and yield once welcomed; leave politely on exit.

        Without ``cafile`` the server's certificate is not verified (for load
        tests on your own machine); with it, it must be signed by ``cafile``.
        To come back after a dropped connection, pass the ``token`` of the
        earlier welcome (and that client's ``world`` to keep its input
        numbering); the server gives the same player back. ``options`` says
        whether to take the fast path and how often to send inputs.
        ``transport="websocket"`` connects to ``ws://host:http_port/ws`` (the
        server's HTTP port) instead of QUIC on ``port``. ``connect_token`` is one
        from the server's lobby (``bots.lobby.fetch_connect_token``), which a server
        that requires them seats by (its name and match win over ``name``).
        """
        hello = Hello(version=PROTOCOL_VERSION, name=name, token=token, connect_token=connect_token)
        return cls._open(
            host,
            port,
            hello,
            cafile=cafile,
            timeout=timeout,
            world=world,
            options=options,
            transport=transport,
            http_port=http_port,
        )

    @classmethod
    def spectate(
        cls,
        host: str,
        port: int,
        match_id: str,
        follow: int = 0,
        *,
        name: str = "spectator",
        cafile: Path | str | None = None,
        timeout: float = 10.0,
        options: ClientOptions = ClientOptions(),
        transport: Transport = "quic",
        http_port: int | None = None,
        connect_token: str = "",
    ) -> AbstractAsyncContextManager[GameClient]:
        """Watch match ``match_id`` (or the one match whose id starts with it) as a spectator,
        and yield once welcomed; leave politely on exit.

        ``follow`` names a player whose views to watch, as that player was shown
        them; 0 watches the whole match (``Rules.spectator_view``: hidden
        information too). Every view is the server's own, held back
        ``client.welcome.spectator_delay`` ticks; ``client.server_tick`` is the
        server's tick when the newest view was sent. The client never sends
        inputs (``send_input`` raises). A match the server does not run, or a
        player it does not have, raises :class:`ClientError` with the server's reason.
        ``transport``, ``http_port`` and ``connect_token`` are as for :meth:`connect`.
        """
        hello = Hello(
            version=PROTOCOL_VERSION, name=name, spectate=match_id, follow=follow, connect_token=connect_token
        )
        return cls._open(
            host,
            port,
            hello,
            cafile=cafile,
            timeout=timeout,
            world=None,
            options=options,
            transport=transport,
            http_port=http_port,
        )

    @classmethod
    @asynccontextmanager
    async def _open(
        cls,
        host: str,
        port: int,
        hello: Hello,
        *,
        cafile: Path | str | None,
        timeout: float,
        world: ClientWorld | None,
        options: ClientOptions,
        transport: Transport,
        http_port: int | None,
    ) -> AsyncIterator[GameClient]:
        opening: AbstractAsyncContextManager[_Wire]
        if transport == "quic":
            opening = _quic_wire(host, port, cafile=cafile, timeout=timeout, local_host=options.local_host)
        elif transport == "websocket":
            if http_port is None:
                raise ValueError("transport='websocket' needs http_port: the server's HTTP port (serve --metrics-port)")
            port = http_port
            opening = _websocket_wire(host, port, timeout=timeout, local_host=options.local_host)
        else:
            raise ValueError(f"transport must be 'quic' or 'websocket', not {transport!r}")
        async with opening as wire:
            client = cls(wire, hello.name, world)
            client.options = options
            fast = options.fast and client._quic is not None
            hello.caps = [DEFLATE, ACK_GRID] + (
                [fastpath.CAPABILITY, fastpath.KEEPALIVE_CAPABILITY, PACKED_INPUTS] if fast else []
            )
            client._send_stream(hello)
            try:
                async with asyncio.timeout(timeout):
                    client._welcomed(await client._welcome)
            except TimeoutError:
                raise ClientError(f"no welcome from {host}:{port} within {timeout:g} s") from None
            yield client
            if not client.closed.is_set():
                client._send_stream(Bye(reason="client done"))
                # Give the goodbye a moment to reach the server before the close
                # frame does, so the server knows we left rather than dropped.
                await asyncio.sleep(0.01)

    # ------------------------------------------------------------ playing

    @property
    def player_id(self) -> int:
        return self.welcome.player_id if self.welcome else 0

    @property
    def match_id(self) -> str:
        return self.welcome.match_id if self.welcome else ""

    @property
    def token(self) -> str:
        """The credentials that get this player back after a dropped connection."""
        return self.welcome.token if self.welcome else ""

    @property
    def spectating(self) -> bool:
        """Whether this client watches the match rather than plays in it."""
        return self.welcome is not None and self.welcome.player_id == 0

    @property
    def server_tick(self) -> int:
        """A spectator's: the server's tick when it sent the newest view (its deltas carry
        it where a player's carry the applied input's number); 0 for a player."""
        return self.world.server_seq if self.spectating else 0

    def _welcomed(self, welcome: Welcome) -> None:
        self.welcome = welcome
        try:
            rules = make_rules(welcome.game, welcome.config, version=welcome.game_version)
        except (UnknownGame, ValueError):
            rules = None  # a game this SDK does not know: no prediction, the server's word stands
        world = self.world
        world.rules, world.player_id, world.tick_rate = rules, welcome.player_id, welcome.tick_rate
        world.ack_every = welcome.ack_every
        # One datagram per input interval (by default the send interval) carries
        # that interval's inputs and the unconfirmed ones before them.
        per_s = welcome.tick_rate / self.options.input_ticks  # inputs made a second
        self.input_batch = max(1, int(per_s // (self.options.input_rate or welcome.send_rate)))

    def send_input(self, controls: dict[str, Any], flush: bool = False) -> int:
        """This tick's controls (call once per ``options.input_ticks`` ticks); returns
        the input's sequence number.

        Inputs go out ``input_batch`` at a time (or at once with ``flush``), each
        datagram repeating every input the server has not confirmed, and acking
        the newest tick we hold.
        """
        if self.spectating:
            raise ClientError("spectators cannot send inputs")
        seq = self.world.next_input(controls, self._loop.time(), self.options.input_ticks)
        self.stats.inputs_sent += 1
        self._unsent += 1
        if flush or self._unsent >= self.input_batch:
            self.flush_inputs()
        return seq

    def flush_inputs(self, always: bool = False) -> None:
        """Send the unconfirmed inputs now (``always``: even when there are none, to ack)."""
        if self.closed.is_set() or not (always or self.world.unconfirmed):
            return
        body = self.world.packed_input() if self._packed_inputs else encode(self.world.input_frame())
        now = self._sent_at = self._loop.time()
        if self._fast is not None and self._quic is not None and self._fast_usable(now):
            self._send_udp(self._fast[0].seal(fastpath.DATA, body))
        else:
            self._wire.send_datagram(body)
            self._quic_sent_at = now
        self.stats.bytes_up += len(body)
        self._unsent = 0

    @property
    def packed_inputs(self) -> bool:
        """True when our input datagrams go packed (the server said, with the fast path's keys,
        that it reads them): a few bytes smaller, and the server parses only the new inputs."""
        return self._packed_inputs

    @property
    def on_fastpath(self) -> bool:
        """True while inputs and deltas travel as fast-path packets."""
        return self.fast_state == "on"

    def _keepalive(self) -> None:
        """Every KEEPALIVE_SHARE of the idle timeout: end the connection if the server has gone
        silent, and send it something if we have not."""
        quic = self._quic
        if quic is None or self.closed.is_set():
            return
        now = self._loop.time()
        heard = quic.protocol.packets + (self._fast[1].newest if self._fast is not None else 0)
        if heard != self._heard_count:
            self._heard_count, self._heard_count_at = heard, now
        elif now - self._heard_count_at >= self._idle_s:
            self._keepalive_timer = None
            reason = f"idle timeout: nothing heard from the server for {self._idle_s:g} s"
            self.close_reason = reason
            self._wire.close(reason)
            self._on_closed(reason)
            return
        interval = self._idle_s * KEEPALIVE_SHARE
        if self._fast_keepalive and self._fast is not None and self._fast_usable(now):
            if now - self._sent_at >= interval:
                self.flush_inputs(always=True)  # (an ack: on the fast path, as it is usable)
        elif now - self._quic_sent_at >= interval:
            quic.ping()
            self.stats.quic_pings += 1
            self._sent_at = self._quic_sent_at = now
        self._keepalive_timer = self._loop.call_later(interval, self._keepalive)

    def _fast_usable(self, now: float) -> bool:
        if self.fast_state not in ("trying", "on"):
            return False
        if self._fast_heard_at == 0.0:
            self._fast_heard_at = now  # the first input this way starts the clock
        elif now - self._fast_heard_at > FALLBACK_S:
            # Nothing came back that way for a while: a network (or a server)
            # that drops it. QUIC datagrams from now on; the server follows.
            self.fast_state = "off"
            self.stats.fast_fallbacks += 1
            return False
        return True

    def _send_udp(self, packet: bytes, addr: Any = None) -> None:
        """One fast-path packet from our QUIC socket, to ``addr`` (default: the server's)."""
        if self._quic is not None:
            self._quic.send_udp(packet, addr)

    async def wait_update(self, timeout: float | None = None) -> bool:
        """Wait for the next applied delta; False on timeout or when the connection ends."""
        self._updated.clear()
        try:
            async with asyncio.timeout(timeout):
                await self._updated.wait()
        except TimeoutError:
            return False
        return not self.closed.is_set()

    async def rebind(self) -> None:
        """Carry on from a new local UDP port, as a device that changes networks does.

        QUIC moves the connection (with a fresh connection id), the fast path
        its route; the server validates the new address and the session goes on."""
        if self._quic is None:
            raise ClientError("rebind moves a QUIC connection to a new UDP port; this client is on a WebSocket")
        protocol = self._quic.protocol
        old = protocol.udp
        sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind(("::", 0, 0, 0))
        await self._loop.create_datagram_endpoint(lambda: protocol, sock=sock)
        if old is not None:
            old.close()
        protocol.change_connection_id()
        # Tell the server where we are now: on the fast path it answers with a
        # challenge to the new address, and moves our deltas once we reply.
        self.flush_inputs(always=True)

    def now(self) -> float:
        """The clock the world's interpolation runs on."""
        return self._loop.time()

    def silent_for(self) -> float:
        """Seconds since the server last sent anything we could use."""
        return self._loop.time() - self._heard_at

    def abandon(self) -> None:
        """Drop the connection without a goodbye, as a crash or a dead network
        would: the server keeps the player's place for its grace period."""
        if not self.closed.is_set():
            self._wire.close("client gone")
            self._on_closed("client gone")

    def close(self, reason: str = "client done") -> None:
        if not self.closed.is_set():
            self._send_stream(Bye(reason=reason))
            self._wire.close(reason)

    # ------------------------------------------------------------ from the connection

    def _send_stream(self, frame: Frame) -> None:
        data = encode_stream(frame)
        self.stats.bytes_up += len(data)
        self._wire.send_stream(data)
        self._sent_at = self._quic_sent_at = self._loop.time()

    def _on_stream(self, data: bytes) -> None:
        self.stats.bytes_down += len(data)
        try:
            frames = self._decoder.feed(data)
        except ProtocolError as exc:
            self._fail(f"bad frame from server: {exc}")
            return
        for frame in frames:
            if isinstance(frame, Welcome) and not self._welcome.done():
                self._welcome.set_result(frame)
            elif isinstance(frame, Delta):
                self._apply(frame)
            elif isinstance(frame, Event):
                self.events.append(frame)
            elif isinstance(frame, FastPath):
                self._take_keys(frame)
            elif isinstance(frame, Bye):
                # The server is done with us and says why: close our end.
                self.close_reason = frame.reason
                self._wire.close("bye")
                self._on_closed(frame.reason)

    def _take_keys(self, frame: FastPath) -> None:
        try:
            keys = fastpath.FastKeys.from_wire({"sid": frame.sid, "up": frame.up, "down": frame.down})
        except ValueError as exc:
            self._fail(f"bad frame from server: {exc}")
            return
        self._fast = fastpath.client_ends(keys)
        self._packed_inputs = frame.packed == 1
        self.fast_state = "trying"
        self._fast_heard_at = 0.0
        if frame.idle_ms > 0:  # the server counts fast-path packets: no QUIC PINGs needed there
            self._idle_s, self._fast_keepalive = frame.idle_ms / 1000, True
            if self._keepalive_timer is not None:
                self._keepalive_timer.cancel()
                self._keepalive_timer = self._loop.call_later(self._idle_s * KEEPALIVE_SHARE, self._keepalive)

    def _on_fast(self, packet: bytes, addr: Any) -> None:
        if self._fast is None or self._quic is None:
            return
        try:
            kind, payload = self._fast[1].open(packet)
        except fastpath.Dropped:
            self.stats.fast_dropped += 1
            return
        if kind == fastpath.CHALLENGE:
            # The server checks that we receive at this address before moving
            # our deltas here; answer from the socket the challenge reached.
            self._send_udp(self._fast[0].seal(fastpath.RESPONSE, payload), addr)
            return
        if kind != fastpath.DATA:
            return
        self.stats.fast_packets_down += 1
        if self.fast_state != "off":  # after a fallback the server follows us to QUIC
            self.fast_state = "on"
            self._fast_heard_at = self._loop.time()
        self._on_datagram(payload)

    def _on_datagram(self, data: bytes) -> None:
        self.stats.bytes_down += len(data)
        self.stats.datagrams_down += 1
        if data[:1] == PACKED_DELTA:
            # The diff is unpacked only if the delta applies (and, with shared
            # views, once for every bot of this process).
            try:
                tick, base, seq, packed = split_packed_delta(data)
                applied = self.world.on_packed_delta(tick, base, seq, packed, self._loop.time())
            except ProtocolError as exc:
                self._fail(f"bad datagram from server: {exc}")
                return
            except ValueError as exc:
                self._fail(f"delta does not apply: {exc}")
                return
            self._applied(applied)
            return
        try:
            frame = decode_datagram(data)
        except ProtocolError as exc:
            self._fail(f"bad datagram from server: {exc}")
            return
        if isinstance(frame, Delta):
            self._apply(frame)

    def _apply(self, frame: Delta) -> None:
        try:
            applied = self.world.on_delta(frame, self._loop.time())
        except ValueError as exc:
            self._fail(f"delta does not apply: {exc}")
            return
        self._applied(applied)

    def _applied(self, applied: bool) -> None:
        if applied:
            self._heard_at = self._loop.time()
            self.stats.deltas_applied += 1
            if self.spectating:
                self.flush_inputs(always=True)  # an ack alone: the next delta is against this view
            if self.on_view is not None:
                self.on_view(self.world.tick, self.world.view)
            self._updated.set()

    def _fail(self, reason: str) -> None:
        self.close_reason = reason
        self._wire.close(reason, error=True)

    def _on_closed(self, reason: str) -> None:
        if self._keepalive_timer is not None:
            self._keepalive_timer.cancel()
            self._keepalive_timer = None
        if not self.closed.is_set():
            self.close_reason = self.close_reason or reason
            self.closed.set()
            self._updated.set()
            if not self._welcome.done():
                self._welcome.set_exception(ClientError(f"server closed the connection: {reason}"))
