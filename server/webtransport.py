"""WebTransport on the QUIC port: a browser's connection as a :class:`~tickline.server.session.Channel`.

The endpoint (server/transport.py) hands over each QUIC connection that
negotiated ALPN ``h3``. This module speaks just enough HTTP/3 (aioquic's
``H3Connection`` with WebTransport, the draft-02 dialect Chromium speaks) for
one WebTransport session: an extended CONNECT (``:protocol webtransport``) to
``WEBTRANSPORT_PATH`` is answered 200; any other request is answered 404 and the
connection closed with the reason. In the session, the first client-opened
bidirectional stream is the control stream, with exactly the length-prefixed
frames of a native client's, and WebTransport datagrams carry exactly the
datagram frames of native QUIC datagrams (inputs up; deltas, packed or not,
down). The Receiver behind it (a Session) cannot tell the two apart.

It knows HTTP/3 and WebTransport and nothing of matches; it has no fast path
(a page cannot send raw UDP).

Datagram size: an HTTP/3 datagram is the session's quarter stream id (a QUIC
varint, 1 byte for the first 64 sessions' streams, at most 8) before the
payload. A DATAGRAM frame of ``MAX_DATAGRAM`` plus that prefix still fits one
``QUIC_PACKET_SIZE`` packet whatever the connection-id length (checked below),
so WebTransport channels keep native clients' ``MAX_DATAGRAM`` and the session's
rule (bigger deltas go on the control stream) holds unchanged.
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Callable

from aioquic.buffer import encode_uint_var
from aioquic.h3.connection import ErrorCode, FrameUnexpected, H3Connection
from aioquic.h3.events import DatagramReceived, DataReceived, H3Event, HeadersReceived, WebTransportStreamDataReceived
from aioquic.quic.connection import QuicConnection
from aioquic.quic.events import ConnectionTerminated, HandshakeCompleted, QuicEvent, StreamReset

from tickline.server.session import Channel, Receiver
from tickline.shared.fastpath import FastKeys
from tickline.shared.protocol import MAX_DATAGRAM, QUIC_PACKET_SIZE, WEBTRANSPORT_PATH, frame_for_stream

# The worst case around one datagram in a 1-RTT packet: short header (1 byte of flags,
# a connection id of up to 20, a packet number of up to 4), the AEAD tag (16), the
# DATAGRAM frame's type and length (1 + 2), and the quarter stream id (up to 8).
_PACKET_OVERHEAD = 1 + 20 + 4 + 16 + 1 + 2 + 8
assert MAX_DATAGRAM + _PACKET_OVERHEAD <= QUIC_PACKET_SIZE, "a full-size WebTransport datagram would not fit"

# A session's end, with a reason the page reads from ``WebTransport.closed``: the
# CLOSE_WEBTRANSPORT_SESSION capsule (a 32-bit code, then at most 1024 bytes of UTF-8)
# on the CONNECT stream. Codes: tickline's native QUIC close codes, 0 normal, 1 protocol error.
_CLOSE_SESSION_CAPSULE = 0x2843
_MAX_CLOSE_REASON = 1024
# The QUIC connection is closed this long after the capsule unless the peer closes it
# first: Firefox drops the capsule, reason and all, when the connection's close follows
# right behind it (Chromium does not).
CLOSE_GRACE_S = 1.0

# Response headers that accept a session: Chromium speaks draft-02 and wants it said.
_ACCEPT = [(b":status", b"200"), (b"sec-webtransport-http3-draft", b"draft02")]
_NOT_FOUND = [(b":status", b"404")]


class WebTransportConnection:
    """One HTTP/3 connection with at most one WebTransport session; its Channel.

    ``accept`` is called once the handshake completes, as for a native
    connection (the Receiver's hello timeout then covers a client that never
    opens a session). ``transmit`` sends what is queued at the end of the loop
    turn; ``flush`` sends it now.
    """

    transport = "webtransport"  # what the HTTP side's metrics count this connection as

    def __init__(
        self,
        quic: QuicConnection,
        accept: Callable[[Channel], Receiver],
        transmit: Callable[[], None],
        flush: Callable[[], None],
        peer: str = "?",
    ) -> None:
        self.peer = peer
        self._quic = quic
        self._http = H3Connection(quic, enable_webtransport=True)
        self._accept = accept
        self._transmit = transmit
        self._flush = flush
        self._receiver: Receiver | None = None
        self._session_id: int | None = None  # the CONNECT stream's id
        self._control_stream: int | None = None
        self._closing = False  # the session's close capsule is sent
        self._close_reason = ("", False)
        self._close_timer: asyncio.TimerHandle | None = None

    # Channel ------------------------------------------------------------------

    def send_reliable(self, body: bytes) -> None:
        if self._control_stream is None:
            return
        # A WebTransport stream's bytes after its header are the application's: written raw.
        self._quic.send_stream_data(self._control_stream, frame_for_stream(body))
        self._transmit()

    def send_datagram(self, body: bytes) -> None:
        if len(body) > MAX_DATAGRAM:
            raise ValueError(f"datagram of {len(body)} bytes exceeds {MAX_DATAGRAM}")
        if self._session_id is None:
            return
        self._http.send_datagram(self._session_id, body)
        self._transmit()

    def close(self, reason: str, error: bool = False) -> None:
        """End the session with ``reason`` (which the page can read), then the connection."""
        if self._session_id is None:
            self.close_now(reason, error)
            return
        if self._closing:
            return
        self._closing, self._close_reason = True, (reason, error)
        message = reason.encode()[:_MAX_CLOSE_REASON].decode(errors="ignore").encode()  # cut between characters
        payload = struct.pack("!I", 1 if error else 0) + message
        capsule = encode_uint_var(_CLOSE_SESSION_CAPSULE) + encode_uint_var(len(payload)) + payload
        try:
            self._http.send_data(self._session_id, capsule, end_stream=True)
        except (FrameUnexpected, ValueError):  # the CONNECT stream cannot take it (the client ended it)
            self.close_now(reason, error)
            return
        self._flush()
        self._close_timer = asyncio.get_running_loop().call_later(CLOSE_GRACE_S, self.close_now, reason, error)

    def close_now(self, reason: str, error: bool = False) -> None:
        """Close the QUIC connection with ``reason`` at once (the server's shutdown does)."""
        if self._close_timer is not None:
            self._close_timer.cancel()
            self._close_timer = None
        code = ErrorCode.H3_GENERAL_PROTOCOL_ERROR if error else ErrorCode.H3_NO_ERROR
        self._quic.close(error_code=code, reason_phrase=reason[:200])
        self._flush()

    def offer_fastpath(self) -> FastKeys | None:
        return None  # the fast path is raw UDP, which a page cannot send

    def fast_sender(self) -> None:
        return None

    # aioquic ------------------------------------------------------------------

    def quic_event_received(self, event: QuicEvent) -> None:
        receiver = self._receiver
        if isinstance(event, HandshakeCompleted):
            self._receiver = self._accept(self)
            return
        if isinstance(event, ConnectionTerminated):
            if self._close_timer is not None:
                self._close_timer.cancel()
                self._close_timer = None
            if receiver is not None:
                receiver.on_closed(event.reason_phrase or f"connection closed (code {event.error_code})")
            return
        if isinstance(event, StreamReset) and receiver is not None:
            # (H3Connection turns a reset into no event of its own)
            if event.stream_id == self._control_stream:
                receiver.close("client reset its control stream")
            elif event.stream_id == self._session_id:
                self._session_ended(receiver, "client reset its WebTransport session")
        for h3_event in self._http.handle_event(event):
            self._h3_event_received(h3_event)

    def _h3_event_received(self, event: H3Event) -> None:
        receiver = self._receiver
        if receiver is None:
            return  # before the handshake completed: nothing can be for a session yet
        if isinstance(event, DatagramReceived):
            if event.stream_id == self._session_id:
                receiver.on_datagram(event.data)
            # else: for no session of ours; datagrams are unreliable, so dropping it is allowed
        elif isinstance(event, WebTransportStreamDataReceived):
            self._stream_data(receiver, event)
        elif isinstance(event, HeadersReceived):
            self._request(receiver, event)
        elif isinstance(event, DataReceived) and event.stream_id == self._session_id and event.stream_ended:
            self._session_ended(receiver, "client closed its WebTransport session")

    def _session_ended(self, receiver: Receiver, reason: str) -> None:
        """A page's session ended without a goodbye: what a closed or reloaded tab does. As a
        dropped connection (the player keeps its place for the grace period), not as a close."""
        if self._closing:
            # The page's answer to our close capsule. Its browser closes the connection
            # itself, or the grace timer does: Chromium under load reports "Connection
            # lost" instead of our reason when our close lands right behind its answer.
            return
        receiver.on_closed(reason)
        self.close_now(reason)  # the page knows: nothing to tell it

    def _request(self, receiver: Receiver, event: HeadersReceived) -> None:
        if event.stream_id == self._session_id:
            return  # trailers on the session's stream: nothing to do
        headers = dict(event.headers)
        method, protocol = headers.get(b":method"), headers.get(b":protocol")
        path = headers.get(b":path", b"").decode(errors="replace")
        if method == b"CONNECT" and protocol == b"webtransport" and path == WEBTRANSPORT_PATH:
            if self._session_id is not None:
                receiver.fail("one WebTransport session per connection")
                return
            self._session_id = event.stream_id
            self._http.send_headers(event.stream_id, _ACCEPT)
            self._transmit()
            return
        shown = (method or b"?").decode(errors="replace")[:16]
        what = f"WebTransport CONNECT to {path[:64]}" if method == b"CONNECT" else f"{shown} {path[:64]}"
        self._http.send_headers(event.stream_id, _NOT_FOUND, end_stream=True)
        self._flush()  # the 404 leaves before the close, which discards what is still queued
        receiver.fail(f"no {what} here: open a WebTransport session to {WEBTRANSPORT_PATH}")

    def _stream_data(self, receiver: Receiver, event: WebTransportStreamDataReceived) -> None:
        if self._session_id is None or event.session_id != self._session_id:
            receiver.fail("WebTransport stream for a session that is not open")
            return
        if self._control_stream is None and event.stream_id % 4 == 0:  # client-initiated, bidirectional
            self._control_stream = event.stream_id
        if event.stream_id != self._control_stream:
            receiver.fail("only one control stream is allowed")
            return
        if event.data:
            receiver.on_stream_data(event.data)
        if event.stream_ended:
            receiver.close("client closed its control stream")
