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

from tickline.server.fastpath import Address, FastPath, Route
from tickline.server.session import Channel, Receiver
from tickline.server.webtransport import WebTransportConnection
from tickline.shared.fastpath import FastKeys, is_fastpath
from tickline.shared.protocol import ALPN, H3_ALPN, MAX_DATAGRAM, QUIC_PACKET_SIZE, frame_for_stream

log = logging.getLogger(__name__)

# QUIC application error codes sent with a close.
CLOSE_NORMAL = 0
CLOSE_PROTOCOL_ERROR = 1


def server_configuration(cert: Path, key: Path, idle_timeout: float) -> QuicConfiguration:
    config = QuicConfiguration(
        is_client=False,
        alpn_protocols=[ALPN, H3_ALPN],
        # Without this on both ends, aioquic drops datagrams silently.
        max_datagram_frame_size=65536,
        max_datagram_size=QUIC_PACKET_SIZE,
        idle_timeout=idle_timeout,
    )
    config.load_cert_chain(cert, key)
    return config


Accept = Callable[[Channel], Receiver]


def quic_peer(quic: QuicConnection) -> tuple[Address | None, bool]:
    """The address a QUIC connection sends to, and whether QUIC validated it. aioquic keeps
    both only in ``QuicConnection._network_paths`` (the current path first) and offers no
    public accessor: this is the one place the server reads them."""
    paths = quic._network_paths
    return (paths[0].addr, paths[0].is_validated) if paths else (None, False)


class ServerConnection(QuicConnectionProtocol):
    """One QUIC connection; a Channel for its Receiver once the handshake completes."""

    def __init__(self, *args: Any, accept: Accept, fast: FastPath | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._accept = accept
        self._session: Receiver | None = None
        self._control_stream: int | None = None
        self._fast = fast
        self._route: Route | None = None
        # Set when the client negotiated h3: from then on its events are the WebTransport side's.
        self._web: WebTransportConnection | None = None
        self.peer = "?"

    # Channel ------------------------------------------------------------------

    def send_reliable(self, body: bytes) -> None:
        if self._control_stream is None:
            return
        self._quic.send_stream_data(self._control_stream, frame_for_stream(body))
        self._transmit_soon()

    def send_datagram(self, body: bytes) -> None:
        if len(body) > MAX_DATAGRAM:
            raise ValueError(f"datagram of {len(body)} bytes exceeds {MAX_DATAGRAM}")
        route = self._route
        if route is not None and self._fast is not None and self._fast.send(route, body):
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
        return self._route.keys

    def _validated_addr(self) -> Address | None:
        addr, validated = quic_peer(self._quic)
        return addr if validated else None

    def _drop_route(self) -> None:
        if self._route is not None and self._fast is not None:
            self._fast.close_route(self._route)
        self._route = None

    # A Channel's close(reason, error) in place of aioquic's close(error_code, reason_phrase): the
    # only caller that passes nothing, aioquic's server at shutdown, gets a normal close either way.
    def close(self, reason: str = "", error: bool = False) -> None:  # type: ignore[override]
        if self._web is not None:
            self._web.close_now(reason, error)  # (only aioquic's server calls this one: shutting down)
            return
        self._drop_route()
        super().close(
            error_code=CLOSE_PROTOCOL_ERROR if error else CLOSE_NORMAL,
            reason_phrase=reason[:200],
        )

    # aioquic ------------------------------------------------------------------

    def quic_event_received(self, event: QuicEvent) -> None:
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
    """aioquic's server socket, with fast-path packets taken out before QUIC parses them."""

    def __init__(self, *, fast: FastPath | None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._fast = fast

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
            self._fast.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes | str, addr: Address) -> None:
        if self._fast is not None and isinstance(data, bytes) and is_fastpath(data):
            self._fast.datagram_received(data, addr)
            return
        super().datagram_received(data, addr)


async def start_endpoint(
    host: str,
    port: int,
    configuration: QuicConfiguration,
    accept: Accept,
    fast: FastPath | None = None,
) -> tuple[Endpoint, int]:
    """Listen on ``host:port`` (port 0 picks a free one); return the endpoint and its port.

    With ``fast``, clients that ask for it are offered the fast path on the same port."""

    def create(*args: Any, **kwargs: Any) -> ServerConnection:
        return ServerConnection(*args, accept=accept, fast=fast, **kwargs)

    loop = asyncio.get_running_loop()
    transport, endpoint = await loop.create_datagram_endpoint(
        lambda: Endpoint(fast=fast, configuration=configuration, create_protocol=create),
        local_addr=(host, port),
    )
    bound: int = transport.get_extra_info("sockname")[1]
    return endpoint, bound
