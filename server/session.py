"""One player's (or spectator's) connection as the match sees it, whatever carries its bytes.

A :class:`Session` is fed by a :class:`Channel` (native QUIC, or a browser's
WebTransport session, carrying the same frames) through three callbacks:
control-stream bytes, datagrams, and closure. It decodes and validates what arrives; it never
touches the game state. Inputs wait in the session until the match drains them
at the tick boundary; views go out as deltas against the newest tick this
client acknowledged.

Anything a peer sends that the protocol or the rules refuse closes that one
connection with a reason and one log line; the match plays on.

A spectator's session is the same but for two things: it has no player id
and its input datagrams may only acknowledge views (an input closes it), and
the match, not the session, decides which (delayed) views it is sent.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from tickline.server.link import ACK_TIMEOUT_S
from tickline.server.ratelimit import InputLimits
from tickline.shared import native
from tickline.shared.fastpath import CAPABILITY, KEEPALIVE_CAPABILITY, FastKeys
from tickline.shared.game import Controls, Rules
from tickline.shared.protocol import (
    DEFLATE,
    IDLE_TIMEOUT_S,
    MAX_CLIENT_FRAME,
    PACKED_INPUTS,
    PROTOCOL_VERSION,
    Bye,
    Event,
    FastPath,
    Frame,
    Hello,
    MalformedFrame,
    ProtocolError,
    StreamDecoder,
    UnsupportedVersion,
    Welcome,
    encode,
)
from tickline.shared.tokens import MAX_TOKEN

if TYPE_CHECKING:
    from tickline.server.match import Match

log = logging.getLogger(__name__)

# A player's input queue and its datagrams' decoder (server/intake.py): native where built.
if TYPE_CHECKING:  # (both twins have the pure one's interface)
    from tickline.server._intake_py import InputBudget, InputQueue
    from tickline.server._link_py import Link
else:
    _intake = native.load("tickline.server", "intake")
    InputBudget, InputQueue = _intake.InputBudget, _intake.InputQueue
    # Its datagrams in and deltas out (server/link.py): native where built too.
    Link = native.load("tickline.server", "link").Link
MAX_NAME = 32
# Capabilities a hello may name, at most, and their longest name.
MAX_CAPS = 16
MAX_CAP = 32
# A match id is 32 hex digits; a spectator may name a prefix of one.
MAX_MATCH_ID = 32


def valid_name(name: str) -> bool:
    """Whether ``name`` (already stripped) may be a player's: 1-MAX_NAME printable characters."""
    return 0 < len(name) <= MAX_NAME and name.isprintable()


class Channel(Protocol):
    """How a session's bytes travel; implemented by each transport."""

    peer: str

    def send_reliable(self, body: bytes) -> None:
        """Send one encoded frame on the reliable, ordered control stream."""

    def send_datagram(self, body: bytes) -> None:
        """Send one encoded frame as an unreliable datagram (at most MAX_DATAGRAM bytes)."""

    def close(self, reason: str, error: bool = False) -> None:
        """Close the connection, telling the peer ``reason``."""

    def offer_fastpath(self) -> FastKeys | None:
        """Keys for the fast path (shared/fastpath.py), or None where this channel has none."""

    def fast_sender(self) -> Callable[[bytes], bool] | None:
        """Once the fast path is offered: a call that sends one datagram's body on it, False when
        it cannot now (the client has not used it yet, or went back); None without one. The
        session sends its deltas through it directly, falling back to ``send_datagram``."""


class Receiver(Protocol):
    """What a transport feeds with one connection's traffic: a :class:`Session`, or (in a
    benchmark of the bare transport) anything else that takes the same calls."""

    def on_stream_data(self, data: bytes) -> None:
        """Bytes that arrived on the control stream."""

    def on_datagram(self, data: bytes) -> None:
        """One datagram (or fast-path packet) that arrived."""

    def on_closed(self, reason: str) -> None:
        """The connection ended without our asking."""

    def fail(self, reason: str) -> None:
        """The peer broke the protocol: close with ``reason``."""

    def close(self, reason: str) -> None:
        """Close the connection normally, telling the peer ``reason``."""


class Watched(Protocol):
    """What a session belongs to: a live match, or a recorded one streamed to a spectator."""

    tick: int
    rules: Rules

    def leave(self, session: Session) -> None:
        """The session's connection ended."""


class SessionClosed(Exception):
    pass


class Departure(enum.Enum):
    """How a connection ended, which decides whether its player keeps a place."""

    BYE = "bye"  # the client said goodbye
    KICKED = "kicked"  # the client broke the protocol or the rules
    CLOSED = "closed"  # the server closed it (match over, shutdown, replaced)
    LOST = "lost"  # the connection dropped: timeout, network change, client crash


class Session:
    """``clock`` is server time in seconds (the loop's); ``limits`` what the client may send
    as datagrams; ``ack_timeout_s`` how long it may leave every view unacknowledged;
    ``idle_timeout_s`` how long its channel waits for a packet from it (a fast-path client
    that asks is told, so that it keeps the connection alive on the fast path)."""

    def __init__(
        self,
        channel: Channel,
        clock: Callable[[], float] = time.monotonic,
        limits: InputLimits | None = None,
        ack_timeout_s: float = ACK_TIMEOUT_S,
        idle_timeout_s: float = IDLE_TIMEOUT_S,
    ) -> None:
        self.channel = channel
        self._budget = InputBudget(limits or InputLimits(), clock())
        self.player_id = 0
        self.spectating = False
        self.follow = 0  # the player a spectator watches; 0: the whole match
        self.name = ""
        self.caps: frozenset[str] = frozenset()
        self.match: Watched | None = None
        self._decoder = StreamDecoder(MAX_CLIENT_FRAME)
        self._frames: asyncio.Queue[Frame] = asyncio.Queue()
        self.closed = asyncio.Event()
        self.close_reason = ""
        self.departure = Departure.LOST
        self._ack_timeout_s = ack_timeout_s
        self._idle_timeout_s = idle_timeout_s
        # Datagrams in and deltas out, the routine of every tick (server/link.py). The
        # transports hand it the client's datagrams, and the match takes inputs through it,
        # with no Python frame of the session's in between.
        # Its input queue (server/intake.py) is swapped for one with the game's check when the
        # session joins a match.
        self.link = Link(InputQueue(None, self._budget), clock, self, channel.send_datagram, ack_timeout_s)
        # Inputs refused since the match last looked, by reason (the match writes them in
        # its log); a kick's reason is "kicked: why". The link's own counter, which the
        # match's take of every player's input looks at.
        self.refused: Counter[str] = self.link.refused
        self.on_datagram = self.link.deliver
        self.take_input = self.link.take
        # deltas too big for a datagram, sent on the control stream one at a time
        self.reliable_deltas = 0
        self.sends_skipped = 0
        # The tick of a state frame sent on the control stream and not yet acked.
        self._reliable_pending = 0

    # ------------------------------------------------------------ from the transport

    def on_stream_data(self, data: bytes) -> None:
        if self.closed.is_set():
            return
        self.link.bytes_up += len(data)
        try:
            for frame in self._decoder.feed(data):
                self._frames.put_nowait(frame)
        except ProtocolError as exc:
            self.fail(str(exc))

    # (the link's own method, set per session: budgeted, read, queued and its ack taken)
    on_datagram: Callable[[bytes], None]

    # ------------------------------------------------------------ what the link leaves to us

    def input_refused(self, reason: str) -> None:
        self.refused[reason] += 1
        if self._budget.exhausted:
            self.fail(self._budget.exhausted)

    def inputs_overflowed(self, dropped: int) -> None:
        self.refused["buffer"] += dropped

    def acks_stopped(self) -> None:
        # It sends, so it is there, but it takes none of the views: whatever queues up for
        # it in the transport is wasted. As a lost connection (it may come back).
        reason = f"acknowledged none of the views sent for {self._ack_timeout_s:g} s"
        log.warning("closing %s (%s): %s", self.channel.peer, self._who(), reason)
        self.close(reason, error=True, departure=Departure.LOST)

    def on_closed(self, reason: str) -> None:
        """The transport lost the connection (not closed by us)."""
        if not self.closed.is_set():
            if self.departure is not Departure.CLOSED:  # a goodbye we said is not a loss
                self.close_reason = reason or "connection closed"
                self.departure = Departure.LOST
            self.closed.set()
            self.link.closed = True

    def say_goodbye(self, reason: str) -> None:
        """Tell the client on the control stream why we are done; it closes the connection.

        A QUIC close frame that is lost is never resent, but stream data is: the
        reason gets through on a lossy network, and the caller closes whatever is
        still open after a grace period."""
        if self.closed.is_set():
            return
        self.departure = Departure.CLOSED
        self.close_reason = reason
        self.send_frame(Bye(reason=reason))

    # ------------------------------------------------------------ lifecycle

    def fail(self, reason: str) -> None:
        """Close this connection because of what the peer sent; log one line."""
        if self.closed.is_set():
            return
        log.warning("closing %s (%s): %s", self.channel.peer, self._who(), reason)
        self.refused[f"kicked: {reason}"] += 1
        self.close(reason, error=True, departure=Departure.KICKED)

    def _who(self) -> str:
        return f"player {self.player_id}" if self.player_id else "spectator" if self.spectating else "before joining"

    def close(self, reason: str, error: bool = False, departure: Departure = Departure.CLOSED) -> None:
        if self.closed.is_set():
            return
        self.close_reason = reason
        self.departure = departure
        self.closed.set()
        self.link.closed = True
        self.channel.close(reason, error)

    async def next_frame(self) -> Frame:
        """The next control-stream frame; raises SessionClosed once the connection is gone."""
        if self._frames.empty() and self.closed.is_set():
            raise SessionClosed(self.close_reason)
        get = asyncio.ensure_future(self._frames.get())
        closed = asyncio.ensure_future(self.closed.wait())
        try:
            await asyncio.wait((get, closed), return_when=asyncio.FIRST_COMPLETED)
        finally:
            closed.cancel()
            if not get.done():
                get.cancel()
        if get.done() and not get.cancelled():
            return get.result()
        raise SessionClosed(self.close_reason)

    async def hello(self) -> Hello:
        """Wait for the client's hello and check it; fail the session if it is wrong."""
        frame = await self.next_frame()
        if not isinstance(frame, Hello):
            self.fail(f"expected hello, got {frame.TAG}")
            raise SessionClosed(self.close_reason)
        try:
            if frame.version != PROTOCOL_VERSION:
                raise UnsupportedVersion(
                    f"protocol version {frame.version} is not supported; this server speaks {PROTOCOL_VERSION}"
                )
            name = frame.name.strip()
            if not valid_name(name):
                raise MalformedFrame(f"player name must be 1-{MAX_NAME} printable characters")
            if len(frame.caps) > MAX_CAPS or not all(isinstance(c, str) and len(c) <= MAX_CAP for c in frame.caps):
                raise MalformedFrame(f"caps must be at most {MAX_CAPS} strings of up to {MAX_CAP} characters")
            spectate = frame.spectate
            if spectate and not (len(spectate) <= MAX_MATCH_ID and spectate.isascii() and spectate.isalnum()):
                raise MalformedFrame(
                    f"spectate takes a match id or a prefix of one: 1-{MAX_MATCH_ID} letters and digits"
                )
            if frame.follow < 0 or (frame.follow and not frame.spectate):
                raise MalformedFrame("follow names a player id (0: the whole match) and goes with spectate")
            if frame.spectate and frame.token:
                raise MalformedFrame("a hello either spectates or comes back with a token, not both")
            if len(frame.connect_token) > MAX_TOKEN:
                raise MalformedFrame(f"connect_token is longer than {MAX_TOKEN} characters")
        except ProtocolError as exc:
            self.fail(str(exc))
            raise SessionClosed(self.close_reason) from None
        self.name = name
        self.caps = frozenset(frame.caps)  # ones this server does not know are ignored
        self.link.packed = DEFLATE in self.caps
        return frame

    def join(self, match: Match, player_id: int) -> None:
        self._enter(match, spectating=False)
        self.player_id = player_id

    def watch(self, match: Watched, follow: int) -> None:
        """Join ``match`` (live or recorded) as a spectator of ``follow`` (0: the whole match)."""
        self._enter(match, spectating=True)
        self.spectating = True
        self.follow = follow

    def _enter(self, match: Watched, spectating: bool) -> None:
        self.match = self.link.match = match
        self.link.queue = InputQueue(match.rules.input_check(), self._budget, spectating)

    @property
    def inputs(self) -> InputQueue:
        """The input queue (server/intake.py), the link's."""
        queue: InputQueue = self.link.queue  # (either twin's)
        return queue

    async def run(self) -> None:
        """The session task, owned by its match: serve control frames until the connection ends."""
        try:
            while True:
                frame = await self.next_frame()
                if isinstance(frame, Bye):
                    self.close(f"client left: {frame.reason[:64]}", departure=Departure.BYE)
                    return
                self.fail(f"unexpected {frame.TAG} frame after hello")
                return
        except SessionClosed:
            return
        finally:
            if self.match is not None:
                self.match.leave(self)

    # ------------------------------------------------------------ inputs

    # The next input in sequence order for a tick, or None (the player keeps its controls):
    # server/intake.py's jitter buffer, through the link (set per session, as on_datagram).
    take_input: Callable[[int], tuple[int, Controls] | None]

    @property
    def applied_seq(self) -> int:
        """The newest input applied (deltas carry it, so the client knows what to predict)."""
        return self.inputs.applied_seq

    @property
    def inputs_dropped(self) -> int:
        return self.inputs.inputs_dropped

    @property
    def input_underruns(self) -> int:
        return self.inputs.input_underruns

    @property
    def inputs_merged(self) -> int:
        return self.inputs.inputs_merged

    @property
    def bytes_up(self) -> int:
        return int(self.link.bytes_up)

    @property
    def bytes_down(self) -> int:
        return int(self.link.bytes_down)

    @property
    def deltas_sent(self) -> int:
        return int(self.link.deltas_sent)

    @property
    def diffs_encoded(self) -> int:
        return int(self.link.diffs_encoded)

    @property
    def acked(self) -> int:
        """The newest tick whose view the client acknowledged (the next delta's baseline)."""
        return int(self.link.acked)

    def send_frame(self, frame: Frame) -> None:
        body = encode(frame)
        self.link.bytes_down += len(body)
        self.channel.send_reliable(body)

    def send_welcome(self, welcome: Welcome) -> None:
        """The welcome, then the fast path's keys if the client asked and the channel has one."""
        self.send_frame(welcome)
        if CAPABILITY in self.caps:
            keys = self.channel.offer_fastpath()
            if keys is not None:
                self.link.fast_send = self.channel.fast_sender()
                idle_ms = round(self._idle_timeout_s * 1000) if KEEPALIVE_CAPABILITY in self.caps else 0
                packed = int(PACKED_INPUTS in self.caps)  # (we read them from anyone: this says so)
                self.send_frame(FastPath(**keys.to_wire(), idle_ms=idle_ms, packed=packed))

    def send_event(self, tick: int, kind: str, data: dict[str, Any]) -> None:
        self.send_frame(Event(tick=tick, kind=kind, data=data))

    def send_view(
        self,
        tick: int,
        view: dict[str, Any],
        encoded: dict[Any, bytes] | None = None,
        full: bool = False,
        seq: int | None = None,
    ) -> None:
        """Send ``view`` as a delta against the newest view this client acknowledged.

        ``encoded`` is the tick's cache of encoded diffs, shared by the match's
        sessions: clients with the same view and the same baseline share one
        diff, encoded (and packed) once. ``full`` sends a full snapshot whatever
        was acked (the baseline that benchmarks compare deltas against). ``seq``
        replaces the applied input's sequence number (a spectator's deltas carry
        the server's tick there).
        """
        body = self.link.send_view(tick, view, encoded if encoded is not None else {}, full, seq)
        if body is not None:
            self.send_oversized(tick, view, body)

    def send_oversized(self, tick: int, view: dict[str, Any], body: bytes) -> None:
        """A delta the link found too big for a datagram: on the control stream, one state
        frame at a time."""
        # Queuing more behind it (a client falling behind gets bigger deltas, then full
        # snapshots) only delays the one that would let it catch up.
        if self._reliable_pending and self.link.acked < self._reliable_pending:
            self.sends_skipped += 1
            return
        self._reliable_pending = tick
        self.reliable_deltas += 1
        self.channel.send_reliable(body)
        self.link.sent(tick, view, len(body))
