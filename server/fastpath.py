"""The server's end of the fast path: routes, address validation, and the counters.

QUIC and fast-path packets share one UDP socket; each read of it goes through
:meth:`FastPath.read`, which takes every packet whose first byte has the QUIC
fixed bit clear and leaves the rest to the QUIC endpoint in ``server.transport``.
A :class:`Route` is one connection's fast path: its keys, its replay window, the
address deltas go to. The per-packet work both ways is
``_udpbatch``'s ``Inbox`` and ``Outbox``, native where built.

What an attacker gets from this port: nothing. A packet is checked for length,
kind and a known session id, then authenticated, before any route is touched;
whatever fails is counted (``dropped``, by reason) and never answered. An
authentic packet from an address the route has not seen is applied (only the
key holder could have sealed it, and the replay window stops copies) but moves
nothing: deltas keep going to the old address until the new one answers a
challenge sent there, and that challenge is never larger than the packet that
prompted it, so the port cannot amplify a forged source address.

Which path a route's deltas take follows the client: the fast path while its
inputs come that way, QUIC datagrams from the moment an input arrives over
QUIC (the client SDK falls back when fast-path packets stop reaching it).
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from tickline.shared import native
from tickline.shared.fastpath import (
    CHALLENGE,
    CHALLENGE_SIZE,
    DATA,
    OVERHEAD,
    RESPONSE,
    FastKeys,
)

log = logging.getLogger(__name__)
_udpbatch = native.load("tickline.server", "udpbatch")

Address = Any  # (host, port) or the 4-tuple of an IPv6 socket
# A new address is challenged at most this often (seconds) per route.
CHALLENGE_INTERVAL = 0.25
CHALLENGE_PACKET = OVERHEAD + CHALLENGE_SIZE


# One connection's fast path (its keys, address, and the challenge of a new address): a class
# of ``_udpbatch``'s, native where built, so that the per-packet work reads it in C.
if TYPE_CHECKING:  # (both twins have the pure one's interface)
    from tickline.server._udpbatch_py import Route as Route
else:
    Route = _udpbatch.Route


class FastPath:
    """Every route of one server, and what the fast path did (for /metrics).

    Deltas are sealed as they are sent, into the turn's :class:`Outbox` (native where built:
    a session's :meth:`sender` reaches the seal without a Python frame), and leave together
    at the end of their match's tick (or of the loop turn): one ``sendmmsg`` for a whole
    tick's where the native sender was built (``_udpbatch_c``), one ``sendto`` each on its
    twin. Whatever the kernel will not take at once goes through the transport, which
    buffers it."""

    def __init__(self) -> None:
        self.transport: asyncio.DatagramTransport | None = None
        self._sender: Any = None  # a _udpbatch Sender on the transport's socket
        self._loop = asyncio.get_running_loop()
        self._outbox = _udpbatch.Outbox(self._flush_soon)
        self.batches = 0  # flushes of the outbox
        self.routes: dict[bytes, Route] = {}
        self.dropped: Counter[str] = Counter()
        self._inbox = _udpbatch.Inbox(self.routes, self.dropped, self._other)
        self._control_packets = 0  # challenges, sent apart from the outbox
        self._control_bytes = 0
        self.challenges = 0
        self.migrations = 0
        self._clock = self._loop.time

    @property
    def packets_in(self) -> int:
        return int(self._inbox.packets_in)

    @property
    def bytes_in(self) -> int:
        return int(self._inbox.bytes_in)

    @property
    def packets_out(self) -> int:
        return int(self._outbox.packets_out) + self._control_packets

    @property
    def bytes_out(self) -> int:
        return int(self._outbox.bytes_out) + self._control_bytes

    def attach(self, transport: asyncio.DatagramTransport) -> None:
        """Send and challenge through ``transport`` (the QUIC endpoint's socket)."""
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            self._sender = _udpbatch.Sender(sock.fileno(), sock.family)

    def open_route(self, deliver: Callable[[bytes], None], quic_addr: Callable[[], Address | None]) -> Route:
        keys = FastKeys.generate()
        while keys.session_id in self.routes:  # 64 random bits: in practice never
            keys = FastKeys.generate()
        route = Route(keys, deliver, quic_addr)
        self.routes[keys.session_id] = route
        return route

    def close_route(self, route: Route) -> None:
        if self.routes.get(route.keys.session_id) is route:
            del self.routes[route.keys.session_id]

    def active_routes(self) -> int:
        return sum(1 for r in self.routes.values() if r.active and r.addr is not None)

    # ------------------------------------------------------------ in

    def datagram_received(self, data: bytes, addr: Address) -> None:
        """One fast-path packet (the socket's reads go through :meth:`read`)."""
        self._inbox.receive(data, addr)

    def read(self, receiver: Any, limit: int, on_error: Callable[[Exception], object]) -> tuple[list[Any], int]:
        """Read up to ``limit`` datagrams from ``receiver`` (a ``_udpbatch`` Receiver) and take
        the fast path's, in native code where built: each is opened in the receiver's buffer
        and its input handed to its session with no Python frame before. Returns the rest
        (QUIC's) in order, and how many datagrams were read; a packet whose handling raised
        goes to ``on_error``."""
        result: tuple[list[Any], int] = self._inbox.drain(receiver, limit, on_error)
        return result

    def _other(self, route: Route, kind: int, payload: bytes, data: bytes, addr: Address) -> bool:
        """What the inbox leaves to Python: an authentic packet that is not data from the route's
        address. True when its payload is an input to deliver."""
        if kind == DATA:
            # Authentic, so the input is the player's and is applied; deltas
            # go to a new address only once it has answered a challenge.
            self._check_address(route, addr, len(data))
            return True
        if kind == RESPONSE:
            if addr == route.challenge_addr and payload == route.challenge:
                self._inbox.packets_in += 1
                self._inbox.bytes_in += len(data)
                route.move_to(addr)
                route.challenge, route.challenge_addr = b"", None
                self.migrations += 1
            else:
                self.dropped["challenge"] += 1
        else:
            self.dropped["kind"] += 1  # challenges only go server -> client
        return False

    def _check_address(self, route: Route, addr: Address, size: int) -> None:
        """Take ``addr`` for the route's deltas if QUIC validated it, else challenge it."""
        if addr == route.quic_addr():
            # QUIC validated this address already (at the handshake, or when
            # the connection migrated).
            self.migrations += route.addr is not None
            route.move_to(addr)
            return
        now = self._clock()
        if size >= CHALLENGE_PACKET and now - route.challenged_at >= CHALLENGE_INTERVAL:
            route.challenge, route.challenge_addr, route.challenged_at = os.urandom(CHALLENGE_SIZE), addr, now
            self._send(route.sealer.seal(CHALLENGE, route.challenge), addr)
            self.challenges += 1

    # ------------------------------------------------------------ out

    def sender(self, route: Route) -> Callable[[bytes], bool]:
        """What sends a body on ``route``: sealed to the route's address, to leave at the end of
        this loop turn; False when the route cannot carry it now. One native call where the
        outbox is native (a session sends its deltas through it, every tick), and none from a
        native link, which hands the port a delta's header and body (``_udpbatch_c.Port``)."""
        port: Callable[[bytes], bool] = _udpbatch.Port(self._outbox, route)
        return port

    def _flush_soon(self) -> None:
        self._loop.call_soon(self.flush)

    def flush(self) -> None:
        """Send every packet queued since the last flush: a tick's, as it ends (through the
        socket's ``flush``), so that a match's deltas do not wait for the others that tick at the
        same instant; otherwise, at the end of the loop turn that queued them."""
        transport = self.transport
        if not self._outbox or transport is None or transport.is_closing():
            self._outbox.take()  # (the endpoint closed within this turn: its connections are gone)
            return
        self.batches += 1
        for packet, addr in self._outbox.send_all(self._sender):
            transport.sendto(packet, addr)

    def _send(self, packet: bytes, addr: Address) -> None:
        assert self.transport is not None
        self.transport.sendto(packet, addr)
        self._control_packets += 1
        self._control_bytes += len(packet)
