"""The server's UDP socket, read in batches at tick boundaries rather than woken per packet.

QUIC, WebTransport and the fast path share one UDP port. An input that arrives mid-tick is
applied at the next tick whenever it is read, so while a match ticks the socket is not
watched by the event loop at all: each tick begins by reading everything queued, in batches
(``recvmmsg`` where the native ``udpbatch`` module was built) through the fast path's
``reader`` (which takes its own packets as they are read) and handing the rest to the QUIC
endpoint. That takes the per-packet wake-ups and loop callbacks off the server, the largest
per-player cost after the sends.

While no match ticks (a lobby, a server between matches) the event loop watches the socket
as usual. While one does, a timer makes sure nothing waits more than ``max_delay_s`` to be
read, whatever the tick rates: handshakes and the control stream do not wait for a slow
match's ticks. The ticks' reads push that timer back, so while they come more often than
every ``max_delay_s`` it never wakes the loop (``overdue`` counts the times it read).

:class:`UdpTransport` is an ``asyncio.DatagramTransport``: aioquic's server drives it as it
would the loop's own. Sends go straight to the socket; what it will not take now is kept and
sent when it becomes writable, as the loop's transports do.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import socket
from collections.abc import Callable, Iterator
from typing import Any

from tickline.shared import native

_udpbatch = native.load("tickline.server", "udpbatch")

Address = Any
# The longest a datagram waits to be read while matches tick (seconds).
MAX_DELAY_S = 0.02
# Datagrams one read takes at most before the loop gets a turn (a flood cannot hold it).
READ_LIMIT = 4096
# ...and one wake of the event loop, while no match ticks (as libuv reads at most 32 a
# wake): timers and other callbacks run between the batches.
WAKE_LIMIT = 32
RECEIVE_BUFFER = 4 << 20  # asked of the kernel; it may grant less


class UdpTransport(asyncio.DatagramTransport):
    """A bound UDP socket driving ``protocol``; :meth:`drain` reads what is queued."""

    def __init__(
        self, sock: socket.socket, protocol: asyncio.DatagramProtocol, max_delay_s: float = MAX_DELAY_S
    ) -> None:
        super().__init__()
        self._loop = asyncio.get_running_loop()
        self._sock = sock
        self._protocol = protocol
        self._receiver = _udpbatch.Receiver(sock.fileno(), sock.family)
        self._max_delay_s = max_delay_s
        self._backlog: collections.deque[tuple[bytes, Address]] = collections.deque()
        self._closing = False
        self._ticking = 0  # matches ticking now: while any does, ticks read the socket
        self._timer: asyncio.TimerHandle | None = None
        self._due = 0.0  # when the timer reads, if no tick does first
        self._extra = {"socket": sock, "sockname": sock.getsockname()}
        # What reading did (for /metrics): reads that found datagrams, and those datagrams.
        self.reads = 0
        self.datagrams = 0
        self.overdue = 0  # reads the timer made while matches ticked: no tick came for max_delay_s
        self.per_wake = WAKE_LIMIT  # datagrams one event-loop wake reads, while no match ticks
        # Reads the socket (through the receiver, up to a limit), takes its own datagrams and
        # returns the rest for the protocol, with how many were read: the fast path's
        # (FastPath.read), whose inputs then reach their sessions without a Python loop here.
        self.reader: Callable[[Any, int, Callable[[Exception], object]], tuple[list[Any], int]] | None = None
        # Sends what the fast path queued for this socket (FastPath.flush), at the end of a tick.
        self.flusher: Callable[[], None] | None = None
        self._loop.add_reader(sock.fileno(), self._readable)

    # ------------------------------------------------------------ reading

    def drain(self, limit: int = READ_LIMIT) -> None:
        """Read every queued datagram (up to ``limit``) and hand each to the protocol."""
        if self._closing:
            return
        now = self._loop.time()
        if self._timer is not None and self._due - now < self._max_delay_s / 2:
            # Pushed back by the ticks' reads rather than woken to find one just made: while
            # ticks come more often than max_delay_s, the timer never wakes the loop. (Only
            # once it is near: one tick in several moves it, not every match's every tick.)
            self._arm(now + self._max_delay_s)
        try:
            if self.reader is not None:
                batch, read = self.reader(self._receiver, limit, self._handler_failed)
            else:
                batch = self._receiver.receive(limit)
                read = len(batch)
        except OSError as exc:
            self._protocol.error_received(exc)  # an ICMP error for something we sent
            return
        if not read:
            return
        self.reads += 1
        self.datagrams += read
        received = self._protocol.datagram_received
        for data, addr in batch:
            try:
                received(data, addr)
            except Exception as exc:  # noqa: BLE001 (one datagram's failure must not lose the rest of the batch)
                self._handler_failed(exc)

    def flush(self) -> None:
        """Send what the tick that just ended queued (its deltas), now rather than at the end of
        the loop turn: the next match of its tick slot runs first otherwise."""
        if self.flusher is not None:
            self.flusher()

    def _handler_failed(self, exc: Exception) -> None:
        self._loop.call_exception_handler(
            {"message": "UDP datagram handler failed", "exception": exc, "transport": self}
        )

    def _readable(self) -> None:
        self.drain(self.per_wake)

    @contextlib.contextmanager
    def ticking(self) -> Iterator[None]:
        """While inside, the caller's ticks read the socket (calling :meth:`drain`), and the
        event loop does not; a timer reads it should the ticks leave it for ``max_delay_s``."""
        self._ticking += 1
        if self._ticking == 1 and not self._closing:
            self._loop.remove_reader(self._sock.fileno())
            self._arm(self._loop.time() + self._max_delay_s)
        try:
            yield
        finally:
            self._ticking -= 1
            if self._ticking == 0 and not self._closing:
                self._stop_timer()
                self._loop.add_reader(self._sock.fileno(), self._readable)
                self.drain()  # what came since the last tick

    def _arm(self, due: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._due = due
        self._timer = self._loop.call_at(due, self._overdue)

    def _overdue(self) -> None:
        self._timer = None
        self.overdue += 1
        self.drain()
        if not self._closing:
            self._arm(self._loop.time() + self._max_delay_s)

    def _stop_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    # ------------------------------------------------------------ writing

    def sendto(self, data: bytes | bytearray | memoryview, addr: Address = None) -> None:
        if self._closing:
            return
        if not self._backlog:
            try:
                self._sock.sendto(data, addr)
                return
            except (BlockingIOError, InterruptedError):
                self._loop.add_writer(self._sock.fileno(), self._write_ready)
            except OSError as exc:
                self._protocol.error_received(exc)
                return
        self._backlog.append((bytes(data), addr))

    def _write_ready(self) -> None:
        while self._backlog:
            data, addr = self._backlog[0]
            try:
                self._sock.sendto(data, addr)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                self._protocol.error_received(exc)
            self._backlog.popleft()
        self._loop.remove_writer(self._sock.fileno())
        if self._closing:
            self._finish()

    def get_write_buffer_size(self) -> int:
        return sum(len(data) for data, _ in self._backlog)

    # ------------------------------------------------------------ the rest of a transport

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._extra.get(name, default)

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._protocol

    def is_closing(self) -> bool:
        return self._closing

    def close(self) -> None:
        """Stop reading; send what is kept, then close the socket and tell the protocol."""
        if self._closing:
            return
        self._closing = True
        self._stop_timer()
        self._loop.remove_reader(self._sock.fileno())
        if not self._backlog:
            self._finish()

    def abort(self) -> None:
        self._backlog.clear()
        self._loop.remove_writer(self._sock.fileno())
        self.close()
        self._finish()

    def _finish(self) -> None:
        if self._sock.fileno() < 0:
            return
        self._loop.remove_writer(self._sock.fileno())
        self._sock.close()
        self._loop.call_soon(self._protocol.connection_lost, None)


async def open_udp(
    factory: Callable[[], asyncio.DatagramProtocol], host: str, port: int, max_delay_s: float = MAX_DELAY_S
) -> tuple[UdpTransport, asyncio.DatagramProtocol]:
    """Bind ``host:port`` (0: a free port) and run the protocol ``factory`` makes on it."""
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_DGRAM, flags=socket.AI_PASSIVE)
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setblocking(False)
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)
        sock.bind(address)
        protocol = factory()
        transport = UdpTransport(sock, protocol, max_delay_s)
    except BaseException:
        sock.close()
        raise
    protocol.connection_made(transport)
    return transport, protocol
