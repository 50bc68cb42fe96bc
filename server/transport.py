"""The QUIC endpoint: aioquic connections turned into :class:`~tickline.server.session.Channel` s.

Native clients negotiate the ``tickline/1`` ALPN. The first client-initiated
bidirectional stream is the control stream (length-prefixed frames); DATAGRAM
frames (RFC 9221) carry inputs and deltas. Browsers negotiate ``h3`` on the same
port and speak WebTransport, which server/webtransport.py turns into a Channel
of its own. This module knows QUIC and nothing of matches: on each completed
handshake it hands the connection, as a Channel, to ``accept``, which returns
the :class:`~tickline.server.session.Receiver` (for the server, a new Session)
that the connection's traffic goes to from then on.

The endpoint's configuration (its certificate) can be replaced while it runs:
connections made from then on get the new one, those open keep theirs.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.asyncio.server import QuicServer
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection
from aioquic.quic.events import (
    ConnectionTerminated,
    DatagramFrameReceived,
    HandshakeCompleted,
    ProtocolNegotiated,
    QuicEvent,
    StreamDataReceived,
    StreamReset,
)
from aioquic.quic.packet import QuicHeader, QuicPacketType, encode_quic_retry

from tickline.server.fastpath import Address, FastPath, Route
from tickline.server.gate import (
    SMALLEST_INITIAL,
    Gate,
    RetryTokens,
    Verdict,
    initial_decrypts,
    is_initial,
    payload_offset,
)
from tickline.server.session import Channel, Receiver
from tickline.server.udp import UdpTransport, open_udp
from tickline.server.webtransport import WebTransportConnection
from tickline.shared.fastpath import QUIC_FIXED_BIT, FastKeys
from tickline.shared.protocol import (
    ALPN,
    H3_ALPN,
    IDLE_TIMEOUT_S,
    MAX_DATAGRAM,
    QUIC_IDLE_S,
    QUIC_PACKET_SIZE,
    frame_for_stream,
)

log = logging.getLogger(__name__)

# QUIC application error codes sent with a close.
CLOSE_NORMAL = 0
CLOSE_PROTOCOL_ERROR = 1
# A connection's silence is looked at this many times per idle timeout: one that goes silent
# is closed between one and 1 + 1/IDLE_CHECKS idle timeouts after its last packet (and up to
# IDLE_CHECK_GRID_S more).
IDLE_CHECKS = 3
# The looks fall on this grid of the loop's clock, so that the connections' looks of one
# instant share one wake-up of the loop (200 connections' own times woke it 40 times a
# second), and that instant is a tick's too at the usual rates (0.5 s is 30 ticks at 60 Hz).
IDLE_CHECK_GRID_S = 0.5
# A client sends little on its streams (a hello, a goodbye; a browser's HTTP/3 requests), so a
# window far below aioquic's 1 MiB default caps what one connection can make us hold.
RECEIVE_WINDOW = 128 * 1024


def server_configuration(cert: Path, key: Path, receive_window: int = RECEIVE_WINDOW) -> QuicConfiguration:
    """``receive_window``: the bytes a client may have in flight to us on its streams, in all and
    on each (QUIC's flow control; aioquic holds out-of-order stream data up to it).

    QUIC's idle timeout is only a backstop (``QUIC_IDLE_S``); each connection's idle timeout
    is the endpoint's (:func:`start_endpoint`), which counts fast-path packets too."""
    config = QuicConfiguration(
        is_client=False,
        alpn_protocols=[ALPN, H3_ALPN],
        # Without this on both ends, aioquic drops datagrams silently.
        max_datagram_frame_size=65536,
        max_datagram_size=QUIC_PACKET_SIZE,
        idle_timeout=QUIC_IDLE_S,
        max_data=receive_window,
        max_stream_data=receive_window,
    )
    config.load_cert_chain(cert, key)
    return config


Accept = Callable[[Channel], Receiver]


def _ignore_cid(_cid: bytes) -> None:
    pass


def _nothing() -> None:
    pass


def quic_peer(quic: QuicConnection) -> tuple[Address | None, bool]:
    """The address a QUIC connection sends to, and whether QUIC validated it. aioquic keeps
    both only in ``QuicConnection._network_paths`` (the current path first) and offers no
    public accessor: this is the one place the server reads them."""
    paths = quic._network_paths
    return (paths[0].addr, paths[0].is_validated) if paths else (None, False)


class ServerConnection(QuicConnectionProtocol):
    """One QUIC connection; a Channel for its Receiver once the handshake completes.

    It is closed once its peer has sent nothing for ``idle_timeout_s``: no QUIC packet (of any
    kind, ACKs too) and no authentic fast-path packet."""

    def __init__(
        self,
        *args: Any,
        accept: Accept,
        fast: FastPath | None = None,
        idle_timeout_s: float = IDLE_TIMEOUT_S,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self._accept = accept
        self._session: Receiver | None = None
        self._control_stream: int | None = None
        self._fast = fast
        self._route: Route | None = None
        self._fast_send: Callable[[bytes], bool] | None = None  # the route's FastPath.sender
        # Set when the client negotiated h3: from then on its events are the WebTransport side's.
        self._web: WebTransportConnection | None = None
        self.peer = "?"
        # While the handshake runs: the gate that admitted it and the source host it counts
        # against (server/gate.py), and the timer that closes it if it takes too long.
        self._half_open: tuple[Gate, str] | None = None
        self._counted: tuple[Gate, str] | None = None  # in the gate's open connections until terminated
        self._handshake_done = False
        self._handshake_timer: asyncio.TimerHandle | None = None
        # Liveness: QUIC packets counted as they come, the fast path's by its replay window's
        # newest sequence, both looked at by a timer (nothing is timed per packet).
        self.idle_timeout_s = idle_timeout_s
        self.packets = 0  # QUIC packets received from the peer
        self._heard = 0
        self._heard_at = self._loop.time()
        self._idle_timer: asyncio.TimerHandle | None = self._next_idle_check()

    def half_open(self, gate: Gate, host: str, timeout_s: float) -> None:
        """Count this connection against ``gate``'s half-open places until its handshake ends,
        and close it if that has not happened within ``timeout_s``."""
        gate.opened(host)
        self._half_open = self._counted = (gate, host)
        self._handshake_timer = self._loop.call_later(timeout_s, self._handshake_timed_out)

    def _handshake_over(self) -> None:
        if self._handshake_timer is not None:
            self._handshake_timer.cancel()
            self._handshake_timer = None
        if self._half_open is not None:
            gate, host = self._half_open
            self._half_open = None
            gate.closed(host)

    def _free(self) -> None:
        """Break the reference cycles of a connection that never finished its handshake.
        aioquic's connection refers to itself through its frame handlers, TLS callbacks and
        key-update hooks, so without this its ~180 KiB would wait for the next whole-heap
        collection, and a flood of half-open connections makes that collection long enough
        to freeze every match. Nothing calls into it after its ConnectionTerminated."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._stop_idle_timer()
        vars(self._quic).clear()
        self._web = None  # (a browser's: its HTTP/3 layer holds our transmit callbacks)
        self._connection_id_issued_handler = self._connection_id_retired_handler = _ignore_cid
        self._connection_terminated_handler = _nothing

    def _check_idle(self) -> None:
        route = self._route
        heard = self.packets + (route.opener.newest if route is not None else 0)
        now = self._loop.time()
        if heard != self._heard:
            self._heard, self._heard_at = heard, now
        elif now - self._heard_at >= self.idle_timeout_s:
            self._idle_timer = None
            # A lost connection to its session (ConnectionTerminated brings it this reason).
            self.close(f"idle timeout: nothing heard for {self.idle_timeout_s:g} s")
            return
        self._idle_timer = self._next_idle_check()

    @property
    def idle_check_at(self) -> float | None:
        """When this connection's silence is next looked at (the loop's clock), if it will be."""
        return self._idle_timer.when() if self._idle_timer is not None else None

    def _next_idle_check(self) -> asyncio.TimerHandle:
        due = self._loop.time() + self.idle_timeout_s / IDLE_CHECKS
        return self._loop.call_at(math.ceil(due / IDLE_CHECK_GRID_S) * IDLE_CHECK_GRID_S, self._check_idle)

    def _stop_idle_timer(self) -> None:
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None

    def _handshake_timed_out(self) -> None:
        self._handshake_timer = None
        if self._half_open is not None:
            self._half_open[0].refused["handshake_timeout"] += 1
            self._handshake_over()
            super().close(error_code=CLOSE_PROTOCOL_ERROR, reason_phrase="handshake timed out")

    # Channel ------------------------------------------------------------------

    def send_reliable(self, body: bytes) -> None:
        if self._control_stream is None:
            return
        self._quic.send_stream_data(self._control_stream, frame_for_stream(body))
        self._transmit_soon()

    def send_datagram(self, body: bytes) -> None:
        if len(body) > MAX_DATAGRAM:
            raise ValueError(f"datagram of {len(body)} bytes exceeds {MAX_DATAGRAM}")
        if self._fast_send is not None and self._fast_send(body):
            return
        self._quic.send_datagram_frame(body)
        # Deferred to the end of this loop turn, so that everything queued for this
        # connection in one tick shares packets and one transmit.
        self._transmit_soon()

    def offer_fastpath(self) -> FastKeys | None:
        if self._fast is None or self._session is None:
            return None
        if self._route is None:
            self._route = self._fast.open_route(self._session.on_datagram, self._validated_addr)
            self._fast_send = self._fast.sender(self._route)
        return self._route.keys

    def fast_sender(self) -> Callable[[bytes], bool] | None:
        return self._fast_send

    def _validated_addr(self) -> Address | None:
        addr, validated = quic_peer(self._quic)
        return addr if validated else None

    def _drop_route(self) -> None:
        if self._route is not None and self._fast is not None:
            self._route.active = False  # (the session may hold its sender: it carries nothing now)
            self._fast.close_route(self._route)
        self._route = None
        self._fast_send = None

    # A Channel's close(reason, error) in place of aioquic's close(error_code, reason_phrase): the
    # only caller that passes nothing, aioquic's server at shutdown, gets a normal close either way.
    def close(self, reason: str = "", error: bool = False) -> None:  # type: ignore[override]
        self._stop_idle_timer()
        if self._web is not None:
            self._web.close_now(reason, error)  # (only aioquic's server calls this one: shutting down)
            return
        self._drop_route()
        super().close(
            error_code=CLOSE_PROTOCOL_ERROR if error else CLOSE_NORMAL,
            reason_phrase=reason[:200],
        )

    # aioquic ------------------------------------------------------------------

    def datagram_received(self, data: bytes | str, addr: Address) -> None:
        self.packets += 1
        super().datagram_received(data, addr)

    def quic_event_received(self, event: QuicEvent) -> None:
        if isinstance(event, ConnectionTerminated):
            self._stop_idle_timer()
        if isinstance(event, HandshakeCompleted):
            self._handshake_done = True
        elif isinstance(event, ConnectionTerminated) and not self._handshake_done:
            # Never a player: once aioquic has finished with it (this turn), free it at once.
            self._loop.call_soon(self._free)
        if isinstance(event, (HandshakeCompleted, ConnectionTerminated)):
            self._handshake_over()  # its half-open place is free, whichever way it went
        if isinstance(event, ConnectionTerminated) and self._counted is not None:
            gate, host = self._counted
            self._counted = None
            gate.disconnected(host)
        if self._web is not None:
            self._web.quic_event_received(event)
            return
        if isinstance(event, ProtocolNegotiated) and event.alpn_protocol == H3_ALPN:
            # Made as soon as the ALPN is known, as aioquic's own HTTP/3 server does: its SETTINGS go out early.
            addr, _ = quic_peer(self._quic)
            self.peer = f"{addr[0]}:{addr[1]}" if addr else "?"
            self._web = WebTransportConnection(
                self._quic, self._accept, transmit=self._transmit_soon, flush=self.transmit, peer=self.peer
            )
            return
        session = self._session
        if isinstance(event, HandshakeCompleted):
            addr, _ = quic_peer(self._quic)
            self.peer = f"{addr[0]}:{addr[1]}" if addr else "?"
            self._session = self._accept(self)
        elif isinstance(event, StreamDataReceived) and session is not None:
            if self._control_stream is None and event.stream_id % 4 == 0:
                self._control_stream = event.stream_id
            if event.stream_id != self._control_stream:
                session.fail("only one control stream is allowed")
                return
            if event.data:
                session.on_stream_data(event.data)
            if event.end_stream:
                session.close("client closed its control stream")
        elif isinstance(event, DatagramFrameReceived) and session is not None:
            if self._route is not None:
                self._route.active = False  # the client came back to QUIC: answer there
            session.on_datagram(event.data)
        elif isinstance(event, StreamReset) and session is not None:
            session.close("client reset its control stream")
        elif isinstance(event, ConnectionTerminated) and session is not None:
            self._drop_route()
            session.on_closed(event.reason_phrase or f"connection closed (code {event.error_code})")


class Endpoint(QuicServer):
    """aioquic's server socket, with fast-path packets taken out before QUIC parses them, and
    every datagram that would open a connection put to the gate first (server/gate.py)."""

    def __init__(
        self,
        *,
        fast: FastPath | None,
        gate: Gate | None = None,
        retry_tokens: RetryTokens | None = None,
        clock: Callable[[], float] | None = None,
        **kwargs: Any,
    ) -> None:
        create = kwargs.pop("create_protocol")

        def create_protocol(*args: Any, **kw: Any) -> QuicConnectionProtocol:
            protocol: QuicConnectionProtocol = create(*args, **kw)
            if self.gate is not None and self._opening is not None and isinstance(protocol, ServerConnection):
                protocol.half_open(self.gate, self._opening[0], self.gate.settings.handshake_timeout_s)
            return protocol

        super().__init__(create_protocol=create_protocol, **kwargs)
        self._fast = fast
        self.gate = gate
        self._retry_tokens = retry_tokens
        self._clock = clock or self._loop.time
        self._opening: Address | None = None  # whose connection aioquic is making, while it does

    @property
    def intake(self) -> UdpTransport:
        """The socket's transport: matches read it at their ticks (server/udp.py)."""
        return cast(UdpTransport, self._transport)

    @property
    def configuration(self) -> QuicConfiguration:
        return self._configuration

    def reconfigure(self, configuration: QuicConfiguration) -> None:
        """Connections made from now on get ``configuration`` (a new certificate); open ones
        keep the one they were made with. aioquic's server keeps the configuration that it
        gives each new QuicConnection in ``_configuration``, and has no setter."""
        self._configuration = configuration

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        if self._fast is not None:
            # (asyncio's own UDP transport does not subclass DatagramTransport; it has its methods)
            self._fast.attach(cast(asyncio.DatagramTransport, transport))
            if isinstance(transport, UdpTransport):
                transport.reader = self._fast.read  # (its packets of each read, natively)
                transport.flusher = self._fast.flush  # (a tick's deltas, as it ends)

    def datagram_received(self, data: bytes | str, addr: Address) -> None:
        if not data or not isinstance(data, bytes):
            return
        if not data[0] & QUIC_FIXED_BIT and self._fast is not None:  # (is_fastpath, inline: every input)
            self._fast.datagram_received(data, addr)
            return
        cid_length = self._configuration.connection_id_length
        if self.gate is None or (not data[0] & 0x80 and data[1 : 1 + cid_length] in self._protocols):
            # (A short header: an established connection's packet, the hot path. Its destination
            # connection id is the bytes after the first; aioquic parses the header itself.)
            super().datagram_received(data, addr)
            return
        parsed = payload_offset(data, cid_length)
        if parsed is None:
            self.gate.refuse("unparseable")
            return
        header, offset = parsed
        if header.destination_cid in self._protocols:
            super().datagram_received(data, addr)  # a connection we have
            return
        self._new_connection(data, addr, header, offset, self.gate)

    def _new_connection(self, data: bytes, addr: Address, header: QuicHeader, offset: int, gate: Gate) -> None:
        if header.version is not None and header.version not in self._configuration.supported_versions:
            # Version negotiation only for what could be a client's first datagram (RFC 9000
            # section 5.2.2): a short one is dropped, so the reply never outweighs it.
            if len(data) < SMALLEST_INITIAL or header.packet_type == QuicPacketType.VERSION_NEGOTIATION:
                gate.refuse("version_short")
                return
            super().datagram_received(data, addr)  # aioquic answers with version negotiation
            return
        if not is_initial(header):
            gate.refuse("unknown_connection")
            return
        if len(data) < SMALLEST_INITIAL:
            gate.refuse("initial_short")
            return
        if not initial_decrypts(data, header, offset):
            gate.refuse("undecryptable")  # nothing allocated for it
            return
        validated = False
        if header.token and self._retry_tokens is not None:
            try:
                self._retry_tokens.validate_token(
                    address=addr, destination_cid=header.destination_cid, token=header.token, now=0.0
                )
            except ValueError:
                gate.refuse("invalid_token")
                return
            validated = True
        verdict = gate.admit(addr[0], validated, self._clock())
        if verdict is Verdict.RETRY:
            self._send_retry(header, addr)
        elif verdict is Verdict.ADMIT:
            # aioquic makes the connection; with a validated token it checks it again and
            # records the Retry's connection ids for the transport parameters.
            self._opening = addr
            self._retry = cast(Any, self._retry_tokens if validated else None)  # (aioquic types it as always set)
            try:
                super().datagram_received(data, addr)
            finally:
                self._opening, self._retry = None, cast(Any, None)

    def _send_retry(self, header: QuicHeader, addr: Address) -> None:
        assert self._retry_tokens is not None and self._transport is not None and header.version is not None
        source_cid = os.urandom(8)
        token = self._retry_tokens.create_token(
            address=addr,
            original_destination_connection_id=header.destination_cid,
            retry_source_connection_id=source_cid,
            now=0.0,
        )
        packet = encode_quic_retry(
            version=header.version,
            source_cid=source_cid,
            destination_cid=header.source_cid,
            original_destination_cid=header.destination_cid,
            retry_token=token,
        )
        self._transport.sendto(packet, addr)


async def start_endpoint(
    host: str,
    port: int,
    configuration: QuicConfiguration,
    accept: Accept,
    fast: FastPath | None = None,
    gate: Gate | None = None,
    retry_tokens: RetryTokens | None = None,
    idle_timeout_s: float = IDLE_TIMEOUT_S,
) -> tuple[Endpoint, int]:
    """Listen on ``host:port`` (port 0 picks a free one); return the endpoint and its port.

    With ``fast``, clients that ask for it are offered the fast path on the same port; with
    ``gate``, new connections are admitted as it says (``retry_tokens`` signs its Retries).
    A connection whose peer sends nothing for ``idle_timeout_s`` is closed."""

    def create(*args: Any, **kwargs: Any) -> ServerConnection:
        return ServerConnection(*args, accept=accept, fast=fast, idle_timeout_s=idle_timeout_s, **kwargs)

    transport, endpoint = await open_udp(
        lambda: Endpoint(
            fast=fast, gate=gate, retry_tokens=retry_tokens, configuration=configuration, create_protocol=create
        ),
        host,
        port,
    )
    bound: int = transport.get_extra_info("sockname")[1]
    return cast(Endpoint, endpoint), bound
