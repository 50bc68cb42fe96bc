"""A UDP relay that makes loopback behave like a bad network: latency, jitter, loss,
duplication and reordering, each way, from a seeded random generator.

Clients talk to the proxy's port; each client gets its own upstream socket to
the server, so the server still sees one address per client. With the same
seed and the same packets in the same order, the same packets are dropped,
duplicated and delayed: a failure seen once can be replayed.

    proxy = ImpairmentProxy(Impairment(latency_ms=50, loss=0.05, seed=7))
    port = await proxy.start(("127.0.0.1", 0), ("127.0.0.1", server_port))
    ...
    proxy.close()
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

Address = tuple[str, int]
log = logging.getLogger(__name__)


@dataclass(slots=True)
class Impairment:
    latency_ms: float = 0.0  # added one-way delay, each direction
    jitter_ms: float = 0.0  # each packet's delay varies uniformly by +- this much
    loss: float = 0.0  # probability a packet is dropped, each direction
    duplicate: float = 0.0  # probability a packet is delivered twice
    reorder: float = 0.0  # probability a packet is held back one more latency
    seed: int = 1

    def validate(self) -> None:
        for name in ("loss", "duplicate", "reorder"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be a probability between 0 and 1")
        if self.latency_ms < 0 or self.jitter_ms < 0:
            raise ValueError("latency and jitter cannot be negative")


@dataclass(slots=True)
class DirectionStats:
    packets: int = 0
    dropped: int = 0
    duplicated: int = 0
    reordered: int = 0


@dataclass(slots=True)
class ProxyStats:
    up: DirectionStats = field(default_factory=DirectionStats)  # client -> server
    down: DirectionStats = field(default_factory=DirectionStats)  # server -> client


class _Front(asyncio.DatagramProtocol):
    def __init__(self, proxy: ImpairmentProxy) -> None:
        self.proxy = proxy

    def datagram_received(self, data: bytes, addr: Address) -> None:
        self.proxy._from_client(data, addr)


class _Upstream(asyncio.DatagramProtocol):
    def __init__(self, proxy: ImpairmentProxy, client: Address) -> None:
        self.proxy = proxy
        self.client = client
        self.transport: asyncio.DatagramTransport | None = None
        self.waiting: list[bytes] = []  # packets that arrived before the socket was ready

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # (asyncio's own UDP transport does not subclass DatagramTransport; it has its methods)
        udp = self.transport = cast(asyncio.DatagramTransport, transport)
        for data in self.waiting:
            self.proxy.schedule(self.proxy.stats.up, data, udp.sendto, ())
        self.waiting.clear()

    def datagram_received(self, data: bytes, addr: Address) -> None:
        front = self.proxy._front
        if front is not None:
            self.proxy.schedule(self.proxy.stats.down, data, front.sendto, (self.client,))


class ImpairmentProxy:
    def __init__(self, impairment: Impairment) -> None:
        impairment.validate()
        self.impairment = impairment
        self.stats = ProxyStats()
        self._rng = random.Random(impairment.seed)
        self._front: asyncio.DatagramTransport | None = None
        self._target: Address = ("127.0.0.1", 0)
        self._upstreams: dict[Address, _Upstream] = {}
        self._timers: set[asyncio.TimerHandle] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._opening: set[asyncio.Task[None]] = set()
        self.errors: list[BaseException] = []
        # Packets this says yes to are dropped, both ways: a network that drops
        # one kind of traffic (say, anything that is not QUIC). Settable mid-run.
        self.block: Callable[[bytes], bool] | None = None

    async def start(self, listen: Address, target: Address) -> int:
        """Relay ``listen`` (port 0 picks one) to ``target``; returns the port clients use."""
        self._loop = asyncio.get_running_loop()
        self._target = target
        transport, _ = await self._loop.create_datagram_endpoint(lambda: _Front(self), local_addr=listen)
        self._front = transport
        port: int = transport.get_extra_info("sockname")[1]
        return port

    def close(self) -> None:
        for task in self._opening:
            task.cancel()
        for timer in self._timers:
            timer.cancel()
        self._timers.clear()
        for upstream in self._upstreams.values():
            if upstream.transport is not None:
                upstream.transport.close()
        self._upstreams.clear()
        if self._front is not None:
            self._front.close()
            self._front = None

    def _from_client(self, data: bytes, client: Address) -> None:
        upstream = self._upstreams.get(client)
        if upstream is None:
            upstream = self._upstreams[client] = _Upstream(self, client)
            assert self._loop is not None
            task = self._loop.create_task(self._open_upstream(upstream))
            self._opening.add(task)
            task.add_done_callback(self._opened)
        if upstream.transport is None:
            upstream.waiting.append(data)
        else:
            self.schedule(self.stats.up, data, upstream.transport.sendto, ())

    def _opened(self, task: asyncio.Task[None]) -> None:
        self._opening.discard(task)
        if not task.cancelled() and task.exception() is not None:
            exc = task.exception()
            assert exc is not None
            self.errors.append(exc)
            log.error("impairment proxy: cannot open an upstream socket: %s", exc)

    async def _open_upstream(self, upstream: _Upstream) -> None:
        assert self._loop is not None
        # Each client its own socket, so the server sees one address per client.
        await self._loop.create_datagram_endpoint(lambda: upstream, remote_addr=self._target)

    @property
    def in_flight(self) -> int:
        """Packets delayed on their way, not yet sent on."""
        return len(self._timers)

    def schedule(self, stats: DirectionStats, data: bytes, send: Any, args: tuple[Any, ...] = ()) -> None:
        """Carry ``data`` over the impaired link: ``send(data, *args)`` later, maybe twice, or never
        (``stats`` is the direction's, ``self.stats.up`` or ``.down``)."""
        imp, rng = self.impairment, self._rng
        stats.packets += 1
        if self.block is not None and self.block(data):
            stats.dropped += 1
            return
        if rng.random() < imp.loss:
            stats.dropped += 1
            return
        copies = 1
        if rng.random() < imp.duplicate:
            copies = 2
            stats.duplicated += 1
        for _ in range(copies):
            delay = imp.latency_ms + (rng.uniform(-imp.jitter_ms, imp.jitter_ms) if imp.jitter_ms else 0.0)
            if rng.random() < imp.reorder:
                delay += imp.latency_ms or 5.0
                stats.reordered += 1
            self._later(max(0.0, delay) / 1000, send, data, *args)

    def _later(self, delay: float, send: Any, data: bytes, *args: Any) -> None:
        if self._loop is None:
            self._loop = asyncio.get_running_loop()

        def fire() -> None:
            self._timers.discard(handle)
            with contextlib.suppress(OSError):  # a socket closed under a late packet: the network lost it
                send(data, *args)

        handle = self._loop.call_later(delay, fire)
        self._timers.add(handle)
