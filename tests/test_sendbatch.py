"""Batched UDP sends (server/_sendbatch_c.pyx and its pure-Python twin), and the fast path's
outbox that uses them: every test runs on each twin, over real sockets on loopback."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tickline.server.fastpath import FastPath
from tickline.shared import native
from tickline.shared.fastpath import DATA, client_ends

TWINS = native.twins("tickline.server", "sendbatch")


@pytest.fixture(params=sorted(TWINS))
def twin(request: pytest.FixtureRequest) -> Any:
    return TWINS[request.param]


def _pair(family: int, host: str) -> tuple[socket.socket, socket.socket]:
    sender, receiver = socket.socket(family, socket.SOCK_DGRAM), socket.socket(family, socket.SOCK_DGRAM)
    sender.bind((host, 0))
    receiver.bind((host, 0))
    sender.setblocking(False)
    receiver.settimeout(2)
    return sender, receiver


@pytest.fixture
def v4() -> Iterator[tuple[socket.socket, socket.socket]]:
    sender, receiver = _pair(socket.AF_INET, "127.0.0.1")
    yield sender, receiver
    sender.close()
    receiver.close()


def _received(receiver: socket.socket, n: int) -> list[bytes]:
    return [receiver.recv(65536) for _ in range(n)]


@pytest.mark.parametrize("count", [1, 7, 200])
def test_a_batch_arrives_whole_and_in_order(twin, v4, count: int) -> None:
    sender, receiver = v4
    to = receiver.getsockname()
    packets = [(b"%d:" % i + b"x" * (i % 100), to) for i in range(count)]
    assert twin.Sender(sender.fileno(), socket.AF_INET).send(packets) == count
    assert _received(receiver, count) == [p for p, _ in packets]


def test_the_native_sender_needs_far_fewer_system_calls(v4) -> None:
    if "native" not in TWINS:
        pytest.skip("the native module is not built here")
    sender, receiver = v4
    to = receiver.getsockname()
    native_sender = TWINS["native"].Sender(sender.fileno(), socket.AF_INET)
    assert native_sender.send([(b"p%d" % i, to) for i in range(50)]) == 50
    assert native_sender.calls == 1
    assert _received(receiver, 50) == [b"p%d" % i for i in range(50)]
    # More than one call takes (1024): two calls, every packet taken.
    assert native_sender.send([(b"q", to)] * 1500) == 1500 and native_sender.calls == 3


def test_ipv6_with_and_without_flow_and_scope(twin) -> None:
    try:
        sender, receiver = _pair(socket.AF_INET6, "::1")
    except OSError:
        pytest.skip("no IPv6 loopback here")
    with sender, receiver:
        host, port = receiver.getsockname()[:2]
        batch = [(b"a", (host, port)), (b"b", (host, port, 0)), (b"c", (host, port, 0, 0))]
        assert twin.Sender(sender.fileno(), socket.AF_INET6).send(batch) == 3
        assert _received(receiver, 3) == [b"a", b"b", b"c"]


BAD = [
    ("localhost", 9),  # a name, not a number: inet_pton's business is numbers
    ("127.0.0.1", 70000),
    ("127.0.0.1", "9"),
    ("::1", 9),  # of the other family
    ("127.0.0.1", 9, 0, 0),  # an IPv6 tuple on an IPv4 socket
    ("fe80::1%lo", 9),
    "127.0.0.1:9",
    None,
]


@pytest.mark.parametrize("bad", BAD, ids=[repr(b) for b in BAD])
def test_a_send_stops_at_what_it_cannot_read_and_says_how_far_it_got(twin, v4, bad: Any) -> None:
    sender, receiver = v4
    to = receiver.getsockname()
    batch: list[Any] = [(b"one", to), (b"two", bad), (b"three", to)]
    assert twin.Sender(sender.fileno(), socket.AF_INET).send(batch) == 1
    assert twin.Sender(sender.fileno(), socket.AF_INET).send([("text", to)]) == 0  # not bytes
    assert twin.Sender(sender.fileno(), socket.AF_INET).send([]) == 0
    assert _received(receiver, 1) == [b"one"]


@settings(max_examples=60, deadline=None)
@given(
    sizes=st.lists(st.integers(min_value=0, max_value=1400), min_size=1, max_size=40),
    bad_at=st.none() | st.integers(min_value=0, max_value=39),
)
def test_the_twins_send_the_same_and_stop_at_the_same_place(sizes: list[int], bad_at: int | None) -> None:
    if len(TWINS) < 2:
        pytest.skip("the native module is not built here")
    results = []
    for twin in (TWINS["native"], TWINS["pure"]):
        sender, receiver = _pair(socket.AF_INET, "127.0.0.1")
        with sender, receiver:
            to = receiver.getsockname()
            batch: list[Any] = [(bytes([i % 256]) * size, to) for i, size in enumerate(sizes)]
            if bad_at is not None and bad_at < len(batch):
                batch[bad_at] = (b"bad", ("not an address", 1))
            sent = twin.Sender(sender.fileno(), socket.AF_INET).send(batch)
            results.append((sent, _received(receiver, sent)))
    assert results[0] == results[1]


async def test_the_fast_path_sends_a_turns_packets_together_after_it() -> None:
    loop = asyncio.get_running_loop()
    received: list[bytes] = []
    arrived = asyncio.Event()

    class Sink(asyncio.DatagramProtocol):
        def datagram_received(self, data: bytes, addr: Any) -> None:
            received.append(data)
            if len(received) == 20:
                arrived.set()

    sink, _ = await loop.create_datagram_endpoint(Sink, local_addr=("127.0.0.1", 0))
    out, _ = await loop.create_datagram_endpoint(asyncio.DatagramProtocol, local_addr=("127.0.0.1", 0))
    try:
        fast = FastPath()
        fast.attach(out)
        to = sink.get_extra_info("sockname")
        routes = []
        for _ in range(20):
            route = fast.open_route(lambda _body: None, lambda: to)
            route.addr, route.active = to, True
            routes.append(route)
        for i, route in enumerate(routes):
            assert fast.send(route, b"delta %d" % i)
        assert fast.batches == 0 and fast.packets_out == 20  # sealed and counted, not yet sent
        await asyncio.wait_for(arrived.wait(), 5)
        assert fast.batches == 1
        opened = sorted(client_ends(route.keys)[1].open(p) for route, p in zip(routes, received, strict=True))
        assert opened == sorted((DATA, b"delta %d" % i) for i in range(20))
    finally:
        sink.close()
        out.close()
