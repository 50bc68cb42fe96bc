"""The WebSocket fallback: ``/ws`` on the HTTP side, each WebSocket a
:class:`~tickline.server.session.Channel` for a new Session.

For browsers without WebTransport and networks that let no UDP through. One
WebSocket is one reliable, ordered pipe, so the control stream and the
datagrams share it: each binary message is one kind byte and then its bytes
(``shared/protocol.py`` names the kinds),

- ``0x00`` and a chunk of the control stream, exactly as a native control
  stream carries it (frames with their 4-byte length prefix), so the session's
  StreamDecoder reads it unchanged, however a client chunks it; the server
  sends one frame per message;
- ``0x01`` and one datagram frame: inputs up; deltas, packed or not, down.

A datagram that waits behind others is worse than a lost one (the next delta
is against the newest view the client acknowledged, so a lost one costs a
little bandwidth; a queued one costs latency), and a WebSocket never drops: so
this module does. While more than ``DATAGRAM_BUFFER_LIMIT`` bytes wait in this
process for a peer, datagram messages are dropped and counted; control
messages are always sent (the session keeps at most one state frame in flight
there). The kernel is asked to hold little unsent, so that a peer that stops
reading shows here soon rather than after megabytes of stale deltas.

A close carries the session's reason: code 1000, or 1008 for a peer that broke
the protocol. Whatever cannot be delivered within ``CLOSE_TIMEOUT_S`` of a
close, and anything left for a peer that is gone (no pong to a ping), is
dropped with the connection.

This module knows aiohttp's WebSocket and nothing of matches: like the QUIC
endpoint, it hands each connection to ``accept``, which returns the
:class:`~tickline.server.session.Receiver` its traffic goes to.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from collections import Counter, deque
from collections.abc import Callable

from aiohttp import WSCloseCode, WSMsgType, web
from aiohttp.http_websocket import WebSocketError

from tickline.server.gate import Connections
from tickline.server.session import Channel, Receiver
from tickline.shared.fastpath import FastKeys
from tickline.shared.protocol import (
    MAX_CLIENT_FRAME,
    MAX_DATAGRAM,
    WEBSOCKET_PATH,
    WS_CONTROL,
    WS_DATAGRAM,
    frame_for_stream,
)

TRANSPORT = "websocket"
# Bytes waiting in this process for one peer (our queue and the socket's buffer)
# above which datagram messages are dropped. The kernel's send buffer already
# absorbs a burst; what waits beyond it is latency no game can use.
DATAGRAM_BUFFER_LIMIT = 16 * 1024
# Bytes the kernel may hold unsent for one peer (TCP_NOTSENT_LOWAT; Linux, macOS). Without it
# the kernel's send buffer grows to megabytes for a peer that stopped reading, all of it
# stale deltas; with it the backlog shows here, where datagram messages are dropped.
KERNEL_UNSENT_LIMIT = 16 * 1024
# Once a close begins, the time the rest (queued frames, the close frame) may
# take; then the connection is dropped: a peer that stopped reading never
# takes them.
CLOSE_TIMEOUT_S = 2.0
# RFC 6455 5.5: a close frame's payload is at most 125 bytes, 2 of them the code.
MAX_REASON_BYTES = 123
# What a client may send in one message: a datagram, or a chunk of its control stream
# (which carries only small frames up; the session's decoder caps them again).
MAX_MESSAGE = 1 + max(MAX_DATAGRAM, 4 * (4 + MAX_CLIENT_FRAME))

Accept = Callable[[Channel], Receiver]


def close_reason(reason: str) -> bytes:
    """``reason`` as a close frame carries it: UTF-8, cut to 123 bytes between characters."""
    return reason.encode()[:MAX_REASON_BYTES].decode(errors="ignore").encode()


class WebSocketChannel:
    """One WebSocket as a session's Channel.

    The Channel's sends are calls that return at once; this channel's writer
    task sends what they queued, in order, and waits while the peer is slow.
    """

    transport = TRANSPORT

    def __init__(
        self,
        ws: web.WebSocketResponse,
        transport: asyncio.Transport | None,
        peer: str,
        limit: int = DATAGRAM_BUFFER_LIMIT,
    ) -> None:
        self.peer = peer
        self.datagrams_dropped = 0  # datagram messages not sent because the peer is behind
        self._ws = ws
        self._transport = transport
        self._limit = limit
        self._out: deque[bytes] = deque()
        self._out_bytes = 0
        self._wake = asyncio.Event()
        self._close: tuple[int, bytes] | None = None  # (code, reason) once we close
        self._ended = False  # the read side is done: the peer closed, or the connection is gone
        self._peer_gone = False  # ...gone: lost, or no pong to a ping
        self._loop = asyncio.get_running_loop()
        self._close_by: float | None = None
        self._deadline: asyncio.Timeout | None = None
        self.done = asyncio.Event()  # set when the connection is over and its tasks have ended

    # Channel ------------------------------------------------------------------

    def send_reliable(self, body: bytes) -> None:
        self._queue(WS_CONTROL + frame_for_stream(body))

    def send_datagram(self, body: bytes) -> None:
        if len(body) > MAX_DATAGRAM:
            raise ValueError(f"datagram of {len(body)} bytes exceeds {MAX_DATAGRAM}")
        if self.buffered() > self._limit:
            self.datagrams_dropped += 1  # as UDP would: the session's next delta covers it
            return
        self._queue(WS_DATAGRAM + body)

    def close(self, reason: str, error: bool = False) -> None:
        if self._close is not None or self._ended:
            return
        code = WSCloseCode.POLICY_VIOLATION if error else WSCloseCode.OK
        self._close = (code, close_reason(reason))
        self._begin_closing()
        self._wake.set()

    def offer_fastpath(self) -> FastKeys | None:
        return None  # the fast path is UDP; a client on a WebSocket has none

    def fast_sender(self) -> None:
        return None

    # --------------------------------------------------------------------------

    def buffered(self) -> int:
        """Bytes waiting in this process for the peer: queued, and in the socket's buffer."""
        transport = self._transport
        return self._out_bytes + (transport.get_write_buffer_size() if transport is not None else 0)

    def _queue(self, message: bytes) -> None:
        if self._close is not None or self._ended:
            return  # nothing goes after the close
        self._out.append(message)
        self._out_bytes += len(message)
        self._wake.set()

    def _begin_closing(self) -> None:
        if self._close_by is None:
            self._close_by = self._loop.time() + CLOSE_TIMEOUT_S
            if self._deadline is not None:
                self._deadline.reschedule(self._close_by)

    async def run(self, receiver: Receiver) -> None:
        """Serve the WebSocket until it is closed, by either end; the handler's body."""
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._write(), name=f"websocket-writer {self.peer}")
                reason = "connection lost"
                try:
                    reason = await self._read(receiver)
                finally:
                    self._ended = True
                    self._begin_closing()
                    self._wake.set()
                    receiver.on_closed(reason)
        finally:
            self.done.set()
            # What the socket still holds (a close frame, a backlog) goes out by the close
            # deadline, or the connection is dropped with it; at once for a peer that is gone.
            transport = self._transport
            if transport is not None and transport.get_write_buffer_size():
                if self._peer_gone:
                    _drop(transport)
                elif self._close_by is not None:
                    self._loop.call_at(self._close_by, _drop, transport)

    async def _read(self, receiver: Receiver) -> str:
        """Feed ``receiver`` until the WebSocket closes; why it closed."""
        ws = self._ws
        while True:
            msg = await ws.receive()
            if msg.type is WSMsgType.BINARY:
                data: bytes = msg.data
                kind = data[:1]
                if kind == WS_CONTROL:
                    receiver.on_stream_data(data[1:])
                elif kind == WS_DATAGRAM:
                    receiver.on_datagram(data[1:])
                else:
                    receiver.fail(
                        f"unknown message kind {data[:1].hex() or 'in an empty message'}: each binary message "
                        "starts with 00 (control stream) or 01 (datagram)"
                    )
            elif msg.type is WSMsgType.TEXT:
                receiver.fail("text message: this WebSocket carries binary messages, a kind byte and a frame each")
            elif msg.type is WSMsgType.CLOSE:
                return f"client closed the WebSocket ({msg.data}{': ' + msg.extra if msg.extra else ''})"
            elif msg.type is WSMsgType.ERROR:
                if isinstance(msg.data, WebSocketError):  # aiohttp closed it (a message too big, a bad frame)
                    receiver.fail(f"WebSocket error: {msg.data}")
                    return str(msg.data)
                self._peer_gone = True
                return f"connection lost ({msg.data or 'no reason'})"
            else:  # CLOSING (we closed it), CLOSED
                return "connection closed"

    async def _write(self) -> None:
        """Send what the session queued, then the close; drop the connection if the close overruns."""
        try:
            async with asyncio.timeout(None) as self._deadline:
                if self._close_by is not None:
                    self._deadline.reschedule(self._close_by)
                await self._send_queued()
        except TimeoutError:
            if self._transport is not None:
                _drop(self._transport)
        except ConnectionResetError:
            pass  # the peer went away mid-send; the read side reports it

    async def _send_queued(self) -> None:
        ws = self._ws
        while True:
            self._wake.clear()
            if self._ended and self._close is None:
                return  # the peer closed or is gone: nothing more reaches it
            while self._out:
                message = self._out.popleft()
                self._out_bytes -= len(message)
                # aiohttp writes the frame to the socket before its first await; the
                # await is for the peer to take it (aiohttp's flow control).
                await ws.send_bytes(message)
            if self._close is not None:
                code, reason = self._close
                await ws.close(code=code, message=reason)
                return
            await self._wake.wait()


class WebSockets:
    """The ``/ws`` route of the HTTP app and the WebSockets it has open."""

    def __init__(
        self,
        accept: Accept,
        heartbeat_s: float,
        limit: int = DATAGRAM_BUFFER_LIMIT,
        connections: Connections | None = None,
    ) -> None:
        self.channels: set[WebSocketChannel] = set()
        self._connections = connections  # the caps QUIC connections count against too
        self.refused: Counter[str] = Counter()
        self._accept = accept
        self._heartbeat_s = heartbeat_s
        self._limit = limit
        self._dropped_before = 0  # by channels since closed

    @property
    def datagrams_dropped(self) -> int:
        """Datagram messages dropped for peers that were behind, ever."""
        return self._dropped_before + sum(c.datagrams_dropped for c in self.channels)

    def add_to(self, app: web.Application) -> None:
        app.router.add_get(WEBSOCKET_PATH, self.handle)
        app.on_shutdown.append(self._shutdown)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(
            max_msg_size=MAX_MESSAGE,
            # Packed deltas are deflated already, and a client that wants the rest smaller asks for them.
            compress=False,
            # A peer that answers no ping is gone: the WebSocket's idle timeout, as QUIC has its own.
            heartbeat=self._heartbeat_s,
        )
        if not ws.can_prepare(request):
            raise web.HTTPBadRequest(
                text=f"{WEBSOCKET_PATH} is tickline's WebSocket fallback: open it with a WebSocket (docs/browsers.md)\n"
            )
        host = request.remote or "?"
        connections = self._connections
        if connections is not None:
            crowd = connections.full(host)
            if crowd:
                self.refused[crowd] += 1
                raise web.HTTPServiceUnavailable(
                    text=f"too many connections ({crowd.replace('_', ' ')}); try again later\n"
                )
            connections.opened(host)
        try:
            return await self._serve(ws, request)
        finally:
            if connections is not None:
                connections.closed(host)

    async def _serve(self, ws: web.WebSocketResponse, request: web.Request) -> web.WebSocketResponse:
        await ws.prepare(request)
        transport = request.transport
        _limit_unsent(transport)
        addr = transport.get_extra_info("peername") if transport is not None else None
        peer = f"websocket {addr[0]}:{addr[1]}" if addr else "websocket ?"
        channel = WebSocketChannel(ws, transport, peer, self._limit)
        self.channels.add(channel)
        try:
            await channel.run(self._accept(channel))
        finally:
            self.channels.discard(channel)
            self._dropped_before += channel.datagrams_dropped
        return ws

    async def _shutdown(self, _app: web.Application) -> None:
        """Close the WebSockets still open (the matches closed their players' first) and wait
        for their handlers, so that the HTTP side stops without cancelling any."""
        channels = list(self.channels)
        for channel in channels:
            channel.close("server shutting down")
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(CLOSE_TIMEOUT_S + 1):
                for channel in channels:
                    await channel.done.wait()


def _limit_unsent(transport: asyncio.Transport | None) -> None:
    """Keep at most ``KERNEL_UNSENT_LIMIT`` bytes unsent in the kernel for this connection,
    where the system can (a best effort: elsewhere, the kernel's own buffer sizes hold)."""
    sock = transport.get_extra_info("socket") if transport is not None else None
    option = getattr(socket, "TCP_NOTSENT_LOWAT", None)
    if sock is None or option is None:
        return
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.IPPROTO_TCP, option, KERNEL_UNSENT_LIMIT)


def _drop(transport: asyncio.Transport) -> None:
    """Drop the connection and what it holds unsent, here and in the kernel (a reset, not a
    close that would keep trying to deliver to a peer that does not read)."""
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()
