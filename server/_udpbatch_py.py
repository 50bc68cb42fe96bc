"""Many UDP datagrams sent or read at once on one socket, in pure Python: the twin of the
native ``_udpbatch_c.pyx`` (``sendmmsg`` and ``recvmmsg``), taken where that was not built.

On a non-blocking UDP socket's file descriptor:

- a :class:`Sender`: ``send(packets)`` sends each ``(payload, address)`` in order and returns
  how many went, stopping at the first the kernel would not take now, or whose address it
  cannot read; the caller hands the rest to its transport, which buffers and reports as usual.
- a :class:`Receiver`: ``receive(limit)`` returns up to ``limit`` queued datagrams as
  ``(payload, address)``, one ``recvfrom`` each; an empty list when none is queued, OSError
  for an error the socket reported with nothing read before it.
- an :class:`Outbox`: the fast path's packets of one loop turn, each sealed as it is queued
  (``send(route, body)``, or by calling a route's :class:`Port` with the body), sent together
  (``send_all(sender)``) or taken (``take()``).
- an :class:`Inbox`: the fast path's packets of a read, each opened (its replay window
  checked) and handed to its route (``receive_batch(batch, on_error)``, which returns the
  rest, QUIC's, in order; ``drain(receiver, limit, on_error)`` reads the batch first).
"""

from __future__ import annotations

import ipaddress
import socket
import struct
from collections.abc import Callable
from typing import Any

from tickline.shared.fastpath import DATA, QUIC_FIXED_BIT, Dropped, FastKeys, server_ends, session_of

_V4_KEY = struct.Struct("!cH4s")
_V6_KEY = struct.Struct("!cHI16sI")


def address_key(addr: Any) -> bytes:
    """A socket address ((host, port), or IPv6's 4-tuple) as the bytes the native inbox makes of
    a packet's source to compare with its route's: family, port, (flow info,) address, (scope
    id); b"" for what is not one. Both twins export this one function."""
    try:
        if len(addr) == 2:
            return _V4_KEY.pack(b"4", addr[1], socket.inet_pton(socket.AF_INET, addr[0]))
        if len(addr) == 4:
            host = socket.inet_pton(socket.AF_INET6, addr[0].partition("%")[0])
            return _V6_KEY.pack(b"6", addr[1], addr[2], host, addr[3])
    except (TypeError, ValueError, OSError, struct.error, AttributeError):
        pass
    return b""


class Sender:
    """Sends batches of datagrams from the socket ``fd`` of address family ``family``."""

    def __init__(self, fd: int, family: int) -> None:
        # A socket object over the same descriptor, never closed here (the transport owns it).
        self._sock = socket.socket(family, socket.SOCK_DGRAM, fileno=fd)
        self._version = 4 if family == socket.AF_INET else 6 if family == socket.AF_INET6 else 0
        self.calls = 0  # system calls made

    def __del__(self) -> None:
        sock = getattr(self, "_sock", None)
        if sock is not None:
            sock.detach()

    def send(self, packets: list[Any]) -> int:
        """Send ``packets`` ([(payload, address)], payloads bytes) in order; how many were sent."""
        done = 0
        for item in packets:
            if not (type(item) is tuple and len(item) == 2 and type(item[0]) is bytes and self._readable(item[1])):
                break  # one it cannot send: the caller's transport takes it from here
            self.calls += 1
            try:
                self._sock.sendto(item[0], socket.MSG_DONTWAIT, item[1])
            except OSError:
                break  # would block, or an error: the transport buffers, or reports it
            done += 1
        return done

    def _readable(self, address: Any) -> bool:
        """What the native twin reads: a numeric host of the socket's family (no zone), a port,
        and for IPv6 perhaps a flow label and a scope id."""
        if not (type(address) is tuple and (len(address) == 2 or (self._version == 6 and len(address) <= 4))):
            return False
        host, port, *rest = address
        if type(host) is not str or "%" in host or not (type(port) is int and 0 <= port <= 65535):
            return False
        limits = (2**20, 2**32)  # flow label, scope id
        if not all(type(v) is int and 0 <= v < limit for v, limit in zip(rest, limits, strict=False)):
            return False
        try:
            return ipaddress.ip_address(host).version == self._version
        except ValueError:
            return False


RECEIVE_BATCH = 64
SLOT = 65536  # bytes a datagram may have (UDP's largest payload fits)


class Receiver:
    """Reads batches of datagrams from the socket ``fd`` of address family ``family``."""

    def __init__(self, fd: int, family: int) -> None:
        self._sock = socket.socket(family, socket.SOCK_DGRAM, fileno=fd)  # (detached, as above)
        self.calls = 0  # system calls made

    def __del__(self) -> None:
        sock = getattr(self, "_sock", None)
        if sock is not None:
            sock.detach()

    def receive(self, limit: int = RECEIVE_BATCH) -> list[tuple[bytes, Any]]:
        """Up to ``limit`` queued datagrams, [(payload, address)], in arrival order."""
        out: list[tuple[bytes, Any]] = []
        while len(out) < limit:
            self.calls += 1
            try:
                out.append(self._sock.recvfrom(SLOT, socket.MSG_DONTWAIT))
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                if out:
                    break  # (reported by the next call)
                raise
        return out


class Route:
    """One connection's fast path: its ``keys`` and their ``sealer`` and ``opener``; ``addr``,
    where its deltas go (validated), and ``addr_key``, that address as :func:`address_key`
    makes it (:meth:`move_to` sets both); ``active``, whether its client's newest input came
    this way; ``deliver``, its session's datagram handler; ``quic_addr()``, the QUIC
    connection's validated address; and the challenge sent to a new address (``challenge``,
    ``challenge_addr``, ``challenged_at``). ``server/fastpath.py`` decides what moves it."""

    __slots__ = (
        "active",
        "addr",
        "addr_key",
        "challenge",
        "challenge_addr",
        "challenged_at",
        "deliver",
        "keys",
        "opener",
        "quic_addr",
        "sealer",
    )

    def __init__(self, keys: FastKeys, deliver: Callable[[bytes], None], quic_addr: Callable[[], Any]) -> None:
        self.keys = keys
        self.sealer, self.opener = server_ends(keys)
        self.addr: Any = None
        self.addr_key = b""
        self.active = False
        self.deliver = deliver
        self.quic_addr = quic_addr
        self.challenge = b""
        self.challenge_addr: Any = None
        self.challenged_at = -1e9

    def move_to(self, addr: Any) -> None:
        """Send deltas to ``addr`` from now on (validated: by QUIC or by a challenge)."""
        self.addr, self.addr_key = addr, address_key(addr)


class Outbox:
    """The fast path's packets of one loop turn, sealed as they are queued; ``on_first`` is
    called when the first goes in (to schedule the flush that takes them)."""

    __slots__ = ("_on_first", "_packets", "bytes_out", "packets_out")

    def __init__(self, on_first: Callable[[], object]) -> None:
        self._on_first = on_first
        self._packets: list[tuple[bytes, Any]] = []
        self.packets_out = 0
        self.bytes_out = 0

    def __len__(self) -> int:
        return len(self._packets)

    def send(self, route: Route, body: bytes) -> bool:
        """Seal ``body`` as a data packet under ``route``'s sealer, to its address; False, with
        nothing sealed, when the route cannot carry it now (not active, or no address yet)."""
        addr = route.addr
        if not route.active or addr is None:
            return False
        packet = route.sealer.seal(DATA, body)
        if not self._packets:
            self._on_first()
        self._packets.append((packet, addr))
        self.packets_out += 1
        self.bytes_out += len(packet)
        return True

    def take(self) -> list[tuple[bytes, Any]]:
        """Every packet queued since the last take, in order, as (packet, address)."""
        packets, self._packets = self._packets, []
        return packets

    def send_all(self, sender: Any) -> list[tuple[bytes, Any]]:
        """Send every packet queued since the last take with ``sender`` (this module's Sender,
        or None), in order; what it did not take now, as ``take`` gives it, for the transport.
        (The native twin writes each route's address as a sockaddr once, not per packet.)"""
        packets = self.take()
        sent = sender.send(packets) if sender is not None and packets else 0
        return packets[sent:]


class Port:
    """What sends a body on ``route`` through ``outbox``: called with the body, the outbox's
    ``send(route, body)``. (The native twin also takes a header and a body from a native link,
    sealed as one payload without joining them first.)"""

    __slots__ = ("outbox", "route")

    def __init__(self, outbox: Outbox, route: Route) -> None:
        self.outbox, self.route = outbox, route

    def __call__(self, body: bytes) -> bool:
        return self.outbox.send(self.route, body)


class Inbox:
    """The fast path's packets as they are read: each authentic data packet from its route's
    address is counted and delivered to the route; ``other(route, kind, payload, packet,
    address)`` decides about the rest (True: deliver the payload as data); ``dropped``
    counts what fails, by reason. ``routes`` maps session ids to this module's Routes."""

    __slots__ = ("_other", "bytes_in", "dropped", "packets_in", "routes")

    def __init__(self, routes: dict[bytes, Any], dropped: Any, other: Callable[..., bool]) -> None:
        self.routes = routes  # session id -> route
        self.dropped = dropped
        self._other = other
        self.packets_in = 0
        self.bytes_in = 0

    def receive_batch(self, batch: list[tuple[bytes, Any]], on_error: Callable[[Exception], object]) -> list[Any]:
        """Take the fast-path packets of ``batch`` and return the others, in order; a packet whose
        handling raises goes to ``on_error``, and the batch goes on."""
        rest = []
        for item in batch:
            data = item[0]
            if type(data) is not bytes or not data or data[0] & QUIC_FIXED_BIT:
                rest.append(item)
                continue
            try:
                self.receive(data, item[1])
            except Exception as exc:  # noqa: BLE001 (one packet's failure must not lose the rest)
                on_error(exc)
        return rest

    def drain(self, receiver: Receiver, limit: int, on_error: Callable[[Exception], object]) -> tuple[list[Any], int]:
        """Read up to ``limit`` datagrams from ``receiver`` and take them as ``receive_batch``
        does: (the rest, in order; how many datagrams were read)."""
        batch = receiver.receive(limit)
        return self.receive_batch(batch, on_error), len(batch)

    def receive(self, data: bytes, addr: Any) -> None:
        """One fast-path packet."""
        route = self.routes.get(data[1:9])
        try:
            if route is None:
                session_of(data)  # (a short packet or an unknown kind is counted as such)
                raise Dropped("session")
            kind, payload = route.opener.open(data)
        except Dropped as drop:
            self.dropped[drop.reason] += 1
            return
        if (kind != DATA or addr != route.addr) and not self._other(route, kind, payload, data, addr):
            return
        self.packets_in += 1
        self.bytes_in += len(data)
        route.active = True
        route.deliver(payload)
