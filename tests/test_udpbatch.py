"""Batched UDP sends and reads (server/_udpbatch_c.pyx and its pure-Python twin), the fast
path's outbox that uses them, and the server's socket read at tick boundaries (server/udp.py):
every test of a twin runs on each, over real sockets on loopback."""

from __future__ import annotations

import asyncio
import socket
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tickline.server.fastpath import FastPath
from tickline.server.udp import UdpTransport, open_udp
from tickline.shared import native
from tickline.shared.fastpath import (
    CHALLENGE,
    DATA,
    OVERHEAD,
    RESPONSE,
    FastKeys,
    Opener,
    Sealer,
    client_ends,
)

TWINS = native.twins("tickline.server", "udpbatch")
SEAL = native.twins("tickline.shared", "seal")


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
            assert fast.sender(route)(b"delta %d" % i)
        assert fast.batches == 0 and fast.packets_out == 20  # sealed and counted, not yet sent
        await asyncio.wait_for(arrived.wait(), 5)
        assert fast.batches == 1
        opened = sorted(client_ends(route.keys)[1].open(p) for route, p in zip(routes, received, strict=True))
        assert opened == sorted((DATA, b"delta %d" % i) for i in range(20))
    finally:
        sink.close()
        out.close()


def _out_route(twin: Any, keys: FastKeys, addr: Any, active: bool = True) -> Any:
    """A twin's route, as an outbox reads it: its sealer, address and whether it is active."""
    route = twin.Route(keys, lambda payload: None, lambda: None)
    route.addr, route.active = addr, active
    return route


def test_an_outbox_seals_each_body_for_its_route_in_order_and_gives_them_up_at_once(twin) -> None:
    firsts: list[int] = []
    outbox = twin.Outbox(lambda: firsts.append(1))
    keys = FastKeys.generate()
    route, opener = _out_route(twin, keys, ("127.0.0.1", 9)), client_ends(keys)[1]
    assert outbox.send(route, b"a") and outbox.send(route, b"bc")
    assert firsts == [1]  # the flush is scheduled once a turn
    assert (outbox.packets_out, outbox.bytes_out) == (2, 2 * OVERHEAD + 3)
    packets = outbox.take()
    assert [addr for _, addr in packets] == [route.addr] * 2
    assert [opener.open(packet) for packet, _ in packets] == [(DATA, b"a"), (DATA, b"bc")]
    assert outbox.take() == []
    assert outbox.send(route, b"d") and firsts == [1, 1]  # the next turn's first


def test_an_outbox_refuses_a_route_that_cannot_carry_and_seals_nothing(twin) -> None:
    outbox = twin.Outbox(lambda: None)
    keys = FastKeys.generate()
    unaddressed, inactive = _out_route(twin, keys, None), _out_route(twin, keys, ("127.0.0.1", 9), active=False)
    assert not outbox.send(unaddressed, b"no address validated yet")
    assert not outbox.send(inactive, b"the client went back to QUIC")
    assert unaddressed.sealer.seq == inactive.sealer.seq == 0  # (no sequence number spent)
    assert outbox.take() == [] and outbox.packets_out == 0


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(0, 2), st.binary(max_size=60), st.booleans(), st.booleans(), st.booleans(), st.booleans()
        ),
        max_size=30,
    )
)
def test_the_twins_outboxes_queue_the_same_packets(steps: list[tuple[int, bytes, bool, bool, bool, bool]]) -> None:
    if len(TWINS) < 2:
        pytest.skip("the native module is not built here")
    keys = [FastKeys.generate() for _ in range(3)]
    results = []
    for twin in (TWINS["native"], TWINS["pure"]):
        routes = [_out_route(twin, k, ("127.0.0.1", 9 + i)) for i, k in enumerate(keys)]
        firsts: list[int] = []
        outbox, outcomes = twin.Outbox(lambda firsts=firsts: firsts.append(1)), []
        for at, body, active, addressed, take, ported in steps:
            route = routes[at]
            route.active, route.addr = active, ("127.0.0.1", 9 + at) if addressed else None
            # (a route's port sends as the outbox does)
            outcomes.append(twin.Port(outbox, route)(body) if ported else outbox.send(route, body))
            if take:
                outcomes.append(outbox.take())
        results.append((outcomes, outbox.take(), len(firsts), outbox.packets_out, outbox.bytes_out))
    assert results[0] == results[1]


def test_an_outbox_sends_each_packet_to_its_routes_address_when_queued(twin) -> None:
    sender, first, second = (socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(3))
    with sender, first, second:
        for sock in (sender, first, second):
            sock.bind(("127.0.0.1", 0))
            sock.settimeout(2)
        sender.setblocking(False)
        keys = [FastKeys.generate() for _ in range(2)]
        routes = [_out_route(twin, k, first.getsockname()) for k in keys]
        openers = [client_ends(k)[1] for k in keys]
        out = twin.Sender(sender.fileno(), socket.AF_INET)
        outbox = twin.Outbox(lambda: None)
        assert outbox.send(routes[0], b"a") and outbox.send(routes[1], b"b")
        routes[0].move_to(second.getsockname())  # (what was queued before goes where it was sent)
        assert outbox.send(routes[0], b"c") and len(outbox) == 3
        assert outbox.send_all(out) == [] and len(outbox) == 0
        assert [openers[i].open(first.recv(2048)) for i in (0, 1)] == [(DATA, b"a"), (DATA, b"b")]
        assert openers[0].open(second.recv(2048)) == (DATA, b"c")
        # The next turn's packets: the moved address, written once, serves again.
        assert outbox.send(routes[0], b"d") and outbox.send_all(out) == []
        assert openers[0].open(second.recv(2048)) == (DATA, b"d")


@pytest.mark.parametrize("bad", BAD[:5], ids=[repr(b) for b in BAD[:5]])
def test_an_outbox_leaves_the_transport_what_its_sender_cannot_send(twin, v4, bad: Any) -> None:
    sender, receiver = v4
    keys = [FastKeys.generate() for _ in range(2)]
    good, odd = _out_route(twin, keys[0], receiver.getsockname()), _out_route(twin, keys[1], bad)
    outbox = twin.Outbox(lambda: None)
    for route, body in ((good, b"one"), (odd, b"two"), (good, b"three")):
        assert outbox.send(route, body)
    rest = outbox.send_all(twin.Sender(sender.fileno(), socket.AF_INET))
    assert [(client_ends(k)[1].open(p), addr) for k, (p, addr) in zip(keys[::-1], rest, strict=True)] == [
        ((DATA, b"two"), bad),
        ((DATA, b"three"), receiver.getsockname()),
    ]
    assert client_ends(keys[0])[1].open(receiver.recv(2048)) == (DATA, b"one")
    # Without a sender (the transport had no socket to give), everything is left to it.
    assert outbox.send(good, b"four") and [addr for _, addr in outbox.send_all(None)] == [good.addr]


def test_an_address_key_tells_addresses_apart_and_is_empty_for_what_is_not_one() -> None:
    key = TWINS["pure"].address_key
    assert all(twin.address_key is key for twin in TWINS.values())  # one function for both
    assert key(("127.0.0.1", 9)) == key(("127.0.0.1", 9)) != key(("127.0.0.1", 10))
    assert key(("127.0.0.1", 9)) != key(("127.0.0.2", 9))
    assert key(("::1", 9, 0, 0)) != key(("::1", 9, 0, 1)) != key(("::1", 9, 1, 1))
    assert key(("fe80::1%lo", 9, 0, 1)) == key(("fe80::1", 9, 0, 1))  # (the scope is the 4th field)
    for junk in (None, ("no-such-host", 9), ("127.0.0.1",), ("127.0.0.1", -1), (1, 2), ("::1", 9, 0)):
        assert key(junk) == b""


class _InRoute:
    """A twin's route (``route``) at ``addr`` for an inbox, and what it delivered (``got``)."""

    def __init__(self, twin: Any, keys: FastKeys, addr: Any, opener: Opener | None = None) -> None:
        self.got: list[bytes] = []
        self.route = twin.Route(keys, self._deliver, lambda: None)
        if opener is not None:
            self.route.opener = opener
        self.route.move_to(addr)

    @property
    def addr(self) -> Any:
        return self.route.addr

    @property
    def active(self) -> bool:
        return bool(self.route.active)

    def _deliver(self, payload: bytes) -> None:
        if payload == b"raise":
            raise RuntimeError("a session's handler failed")
        self.got.append(payload)


def _index(routes: list[_InRoute], route: Any) -> int:
    return [r.route for r in routes].index(route)


def _inbox(twin: Any, n: int = 2) -> tuple[Any, list[_InRoute], list[Sealer], list[Any], Counter[str]]:
    """An inbox over ``n`` routes, their clients' sealers, and what its ``other`` was asked."""
    keys = [FastKeys.generate() for _ in range(n)]
    routes = [_InRoute(twin, k, ("127.0.0.1", 9000 + i)) for i, k in enumerate(keys)]
    asked: list[Any] = []
    dropped: Counter[str] = Counter()

    def other(route: Any, kind: int, payload: bytes, packet: bytes, addr: Any) -> bool:
        asked.append((_index(routes, route), kind, payload, len(packet), addr))
        return kind == DATA and payload != b"refuse"

    inbox = twin.Inbox({k.session_id: r.route for k, r in zip(keys, routes, strict=True)}, dropped, other)
    return inbox, routes, [client_ends(k)[0] for k in keys], asked, dropped


def test_an_inbox_delivers_each_routes_inputs_in_order_and_returns_quics_packets(twin) -> None:
    inbox, routes, sealers, asked, dropped = _inbox(twin)
    quic = [(b"\xc0 a long header", ("127.0.0.1", 1)), (b"\x40 a short one", ("127.0.0.1", 1)), (b"", None)]
    batch = [
        quic[0],
        (sealers[0].seal(DATA, b"a1"), routes[0].addr),
        (sealers[1].seal(DATA, b"b1"), routes[1].addr),
        quic[1],
        (sealers[0].seal(DATA, b"a2"), routes[0].addr),
        quic[2],
    ]
    errors: list[Exception] = []
    assert inbox.receive_batch(batch, errors.append) == quic
    assert routes[0].got == [b"a1", b"a2"] and routes[1].got == [b"b1"]
    assert routes[0].active and routes[1].active
    assert (inbox.packets_in, inbox.bytes_in) == (3, 3 * (OVERHEAD + 2))
    assert not asked and not dropped and not errors


def test_an_inbox_counts_what_it_drops_by_reason_and_delivers_none_of_it(twin) -> None:
    inbox, routes, sealers, asked, dropped = _inbox(twin)
    packet = sealers[0].seal(DATA, b"once")
    forged = bytearray(sealers[0].seal(DATA, b"forged"))
    forged[-1] ^= 1
    stranger = client_ends(FastKeys.generate())[0].seal(DATA, b"who")
    at = routes[0].addr
    batch = [
        (packet, at),
        (packet, at),
        (bytes(forged), at),
        (stranger, at),
        (packet[:20], at),
        (b"\x07" + packet[1:], at),
    ]
    assert inbox.receive_batch(batch, lambda exc: None) == []
    assert routes[0].got == [b"once"] and inbox.packets_in == 1
    assert dropped == Counter({"replayed": 1, "auth": 1, "session": 1, "short": 1, "kind": 1})
    assert not asked


def test_an_inbox_asks_about_a_new_address_or_another_kind_and_does_as_told(twin) -> None:
    inbox, routes, sealers, asked, _ = _inbox(twin)
    elsewhere = ("127.0.0.1", 1234)
    batch = [
        (sealers[0].seal(DATA, b"moved"), elsewhere),  # other says deliver
        (sealers[0].seal(DATA, b"refuse"), elsewhere),  # other says no
        (sealers[1].seal(RESPONSE, b"12345678"), routes[1].addr),
        (sealers[1].seal(CHALLENGE, b"12345678"), routes[1].addr),
    ]
    inbox.receive_batch(batch, lambda exc: None)
    size = OVERHEAD + 5
    assert asked == [
        (0, DATA, b"moved", size, elsewhere),
        (0, DATA, b"refuse", OVERHEAD + 6, elsewhere),
        (1, RESPONSE, b"12345678", OVERHEAD + 8, routes[1].addr),
        (1, CHALLENGE, b"12345678", OVERHEAD + 8, routes[1].addr),
    ]
    assert routes[0].got == [b"moved"] and routes[1].got == [] and inbox.packets_in == 1


def test_a_failing_session_does_not_lose_the_rest_of_the_read(twin) -> None:
    inbox, routes, sealers, _, _ = _inbox(twin)
    batch = [(sealers[0].seal(DATA, p), routes[0].addr) for p in (b"1", b"raise", b"2")]
    errors: list[Exception] = []
    assert inbox.receive_batch(batch, errors.append) == []
    assert routes[0].got == [b"1", b"2"]
    assert [str(e) for e in errors] == ["a session's handler failed"]


_packet_step = st.tuples(
    st.sampled_from(["data", "replay", "flip", "quic", "junk", "response", "raise"]),
    st.integers(0, 2),
    st.booleans(),
    st.binary(max_size=12),
)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.lists(_packet_step, max_size=12), max_size=6))
def test_the_twins_inboxes_take_deliver_and_drop_the_same(reads: list[list[tuple[str, int, bool, bytes]]]) -> None:
    if len(TWINS) < 2:
        pytest.skip("the native module is not built here")
    keys = [FastKeys.generate() for _ in range(3)]
    # The same packets for both: sealed once, from the same keys.
    sealers = [client_ends(k)[0] for k in keys]
    batches, last = [], b""
    for read in reads:
        batch: list[Any] = []
        for what, at, moved, body in read:
            addr = ("127.0.0.1", 7000 + at + (100 if moved else 0))
            if what == "data":
                last = sealers[at].seal(DATA, body)
                batch.append((last, addr))
            elif what == "raise":
                batch.append((sealers[at].seal(DATA, b"raise"), addr))
            elif what == "replay" and last:
                batch.append((last, addr))
            elif what == "flip" and last:
                batch.append((bytes([last[0]]) + last[1:-1] + bytes([last[-1] ^ 1]), addr))
            elif what == "quic":
                batch.append((b"\xc0" + body, addr))
            elif what == "response":
                batch.append((sealers[at].seal(RESPONSE, body), addr))
            else:
                batch.append((body, addr))
        batches.append(batch)
    results = []
    for twin in (TWINS["native"], TWINS["pure"]):
        routes = [_InRoute(twin, k, ("127.0.0.1", 7000 + i)) for i, k in enumerate(keys)]
        asked: list[Any] = []
        dropped: Counter[str] = Counter()

        def other(route: Any, kind: int, payload: bytes, packet: bytes, addr: Any) -> bool:
            asked.append((_index(routes, route), kind, payload, packet, addr))  # noqa: B023 (one twin at a time)
            return kind == DATA

        inbox = twin.Inbox({k.session_id: r.route for k, r in zip(keys, routes, strict=True)}, dropped, other)
        errors: list[str] = []
        rests = [inbox.receive_batch(batch, lambda exc: errors.append(str(exc))) for batch in batches]  # noqa: B023
        results.append(
            (
                rests,
                [r.got for r in routes],
                [r.active for r in routes],
                asked,
                dropped,
                errors,
                inbox.packets_in,
                inbox.bytes_in,
            )
        )
    assert results[0] == results[1]


class _Wire:
    """A server socket to drain, and client sockets: ``home[i]`` is route i's address, and
    ``away`` another one (a client seen from a new address)."""

    def __init__(self, n: int, host: str = "127.0.0.1") -> None:
        self.family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.server = socket.socket(self.family, socket.SOCK_DGRAM)
        self.server.bind((host, 0))
        self.server.setblocking(False)
        self.home = [socket.socket(self.family, socket.SOCK_DGRAM) for _ in range(n)]
        self.away = socket.socket(self.family, socket.SOCK_DGRAM)
        for sock in (*self.home, self.away):
            sock.bind((host, 0))

    def send(self, sock: socket.socket, data: bytes) -> None:
        sock.sendto(data, self.server.getsockname())  # (queued at the server when it returns)

    def close(self) -> None:
        for sock in (self.server, *self.home, self.away):
            sock.close()


def _wired_inbox(twin: Any, wire: _Wire, keys: list[FastKeys], opener: Any) -> tuple[Any, list[_InRoute], list[Any]]:
    routes = [_InRoute(twin, k, wire.home[i].getsockname(), opener(k.up, k.session_id)) for i, k in enumerate(keys)]
    asked: list[Any] = []
    dropped: Counter[str] = Counter()

    def other(route: Any, kind: int, payload: bytes, packet: bytes, addr: Any) -> bool:
        asked.append((_index(routes, route), kind, payload, packet, addr))
        return kind == DATA and payload != b"refuse"

    inbox = twin.Inbox({k.session_id: r.route for k, r in zip(keys, routes, strict=True)}, dropped, other)
    return inbox, routes, asked


@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
@pytest.mark.parametrize("opener", sorted(SEAL))
def test_a_drain_reads_the_socket_and_takes_its_packets_as_a_read_and_a_batch_would(
    twin, opener: str, host: str
) -> None:
    wire = _Wire(2, host)
    try:
        keys = [FastKeys.generate() for _ in range(2)]
        inbox, routes, asked = _wired_inbox(twin, wire, keys, SEAL[opener].Opener)
        sealers = [client_ends(k)[0] for k in keys]
        once, b1 = sealers[0].seal(DATA, b"a1"), sealers[1].seal(DATA, b"b1")
        forged = bytearray(sealers[1].seal(DATA, b"forged"))
        forged[-1] ^= 1
        sent = [
            (wire.home[0], b"\xc0 a long header"),
            (wire.home[0], once),
            (wire.home[1], b1),
            (wire.home[0], once),  # replayed
            (wire.home[1], bytes(forged)),
            (wire.home[1], client_ends(FastKeys.generate())[0].seal(DATA, b"who")),
            (wire.home[1], once[:20]),
            (wire.home[1], b"\x07" + once[1:]),
            (wire.away, sealers[0].seal(DATA, b"moved")),  # other says deliver
            (wire.away, sealers[0].seal(DATA, b"refuse")),  # other says no
            (wire.home[1], sealers[1].seal(RESPONSE, b"12345678")),
            (wire.home[0], sealers[0].seal(DATA, b"raise")),
            (wire.home[1], b"\x40 a short one"),
            (wire.home[0], sealers[0].seal(DATA, b"a2")),
        ]
        for sock, data in sent:
            wire.send(sock, data)
        receiver = twin.Receiver(wire.server.fileno(), wire.family)
        errors: list[Exception] = []
        rest, read = inbox.drain(receiver, 4096, errors.append)
        home0, home1, away = wire.home[0].getsockname(), wire.home[1].getsockname(), wire.away.getsockname()
        assert read == len(sent)
        assert rest == [(b"\xc0 a long header", home0), (b"\x40 a short one", home1)]
        assert routes[0].got == [b"a1", b"moved", b"a2"] and routes[1].got == [b"b1"]
        assert asked == [
            (0, DATA, b"moved", sent[8][1], away),
            (0, DATA, b"refuse", sent[9][1], away),
            (1, RESPONSE, b"12345678", sent[10][1], home1),
        ]
        assert inbox.dropped == Counter({"replayed": 1, "auth": 1, "session": 1, "short": 1, "kind": 1})
        assert [str(e) for e in errors] == ["a session's handler failed"]
        assert (inbox.packets_in, inbox.bytes_in) == (5, sum(len(sent[i][1]) for i in (1, 2, 8, 11, 13)))
        assert inbox.drain(receiver, 4096, errors.append) == ([], 0)
    finally:
        wire.close()


def test_a_drain_reads_no_more_than_its_limit_and_leaves_the_rest_queued(twin) -> None:
    wire = _Wire(1)
    try:
        keys = [FastKeys.generate()]
        inbox, routes, _ = _wired_inbox(twin, wire, keys, SEAL["pure"].Opener)
        sealer = client_ends(keys[0])[0]
        for i in range(100):
            wire.send(wire.home[0], sealer.seal(DATA, b"%d" % i))
        receiver = twin.Receiver(wire.server.fileno(), socket.AF_INET)
        assert inbox.drain(receiver, 70, print) == ([], 70)
        assert routes[0].got == [b"%d" % i for i in range(70)]
        assert inbox.drain(receiver, 70, print) == ([], 30)
        assert routes[0].got == [b"%d" % i for i in range(100)]
    finally:
        wire.close()


@settings(max_examples=60, deadline=None)
@given(st.lists(_packet_step, max_size=40), st.sampled_from(sorted(SEAL)), st.integers(1, 50))
def test_the_twins_drains_take_deliver_and_drop_the_same(
    steps: list[tuple[str, int, bool, bytes]], opener: str, limit: int
) -> None:
    if len(TWINS) < 2:
        pytest.skip("the native module is not built here")
    keys = [FastKeys.generate() for _ in range(3)]
    sealers = [client_ends(k)[0] for k in keys]
    packets, last = [], b""  # (which socket: a route's home, or -1 for away; the datagram)
    for what, at, moved, body in steps:
        where = -1 if moved else at
        if what == "data":
            last = sealers[at].seal(DATA, body)
            packets.append((where, last))
        elif what == "raise":
            packets.append((where, sealers[at].seal(DATA, b"raise")))
        elif what in ("replay", "flip") and last:
            packets.append((where, last if what == "replay" else last[:-1] + bytes([last[-1] ^ 1])))
        elif what == "quic":
            packets.append((where, b"\xc0" + body))
        elif what == "response":
            packets.append((where, sealers[at].seal(RESPONSE, body)))
        elif body:  # (an empty datagram is the same for both, and ends nothing)
            packets.append((where, body))
    results = []
    for twin in (TWINS["native"], TWINS["pure"]):
        wire = _Wire(3)
        try:
            inbox, routes, asked = _wired_inbox(twin, wire, keys, SEAL[opener].Opener)
            for where, data in packets:
                wire.send(wire.away if where < 0 else wire.home[where], data)
            receiver = twin.Receiver(wire.server.fileno(), socket.AF_INET)
            errors: list[str] = []
            reads = []
            while True:
                rest, read = inbox.drain(receiver, limit, lambda exc: errors.append(str(exc)))  # noqa: B023
                if not read:
                    break
                reads.append(([data for data, _ in rest], read))
            names = {s.getsockname(): i for i, s in enumerate(wire.home)} | {wire.away.getsockname(): -1}
            results.append(
                (
                    reads,
                    [r.got for r in routes],
                    [r.active for r in routes],
                    [(i, kind, payload, packet, names[addr]) for i, kind, payload, packet, addr in asked],
                    inbox.dropped,
                    errors,
                    inbox.packets_in,
                    inbox.bytes_in,
                )
            )
        finally:
            wire.close()
    assert results[0] == results[1]
    assert sum(read for _, read in results[0][0]) == len(packets)


# ------------------------------------------------------------------ reading


def test_a_read_takes_every_queued_datagram_in_order_with_its_address(twin, v4) -> None:
    sender, receiver = v4
    receiver.setblocking(False)
    reader = twin.Receiver(receiver.fileno(), socket.AF_INET)
    assert reader.receive() == []  # nothing queued: an empty batch, not an error
    to = receiver.getsockname()
    for i in range(150):  # (a loopback send is queued at the receiver when it returns)
        sender.sendto(b"in %d" % i + b"." * i, to)
    got = reader.receive(100)
    assert [data for data, _ in got] == [b"in %d" % i + b"." * i for i in range(100)]
    assert {addr for _, addr in got} == {sender.getsockname()}
    assert [data for data, _ in reader.receive()] == [b"in %d" % i + b"." * i for i in range(100, 150)]
    assert reader.receive() == []


def test_reading_ipv6_gives_the_socket_modules_address(twin) -> None:
    try:
        sender, receiver = _pair(socket.AF_INET6, "::1")
    except OSError:
        pytest.skip("no IPv6 loopback here")
    with sender, receiver:
        receiver.setblocking(False)
        sender.sendto(b"six", receiver.getsockname())
        assert twin.Receiver(receiver.fileno(), socket.AF_INET6).receive() == [(b"six", sender.getsockname())]


def test_the_native_reader_takes_a_batch_in_one_system_call(v4) -> None:
    if "native" not in TWINS:
        pytest.skip("the native module is not built here")
    sender, receiver = v4
    reader = TWINS["native"].Receiver(receiver.fileno(), socket.AF_INET)
    for i in range(40):
        sender.sendto(b"%d" % i, receiver.getsockname())
    assert len(reader.receive()) == 40 and reader.calls == 1


class _Recorder(asyncio.DatagramProtocol):
    """Keeps what arrives; ``wanted`` is set once ``want`` datagrams are in."""

    def __init__(self, want: int = 1, fail_first: bool = False) -> None:
        self.got: list[bytes] = []
        self.want = want
        self.wanted = asyncio.Event()
        self.fail_first = fail_first

    def datagram_received(self, data: bytes, addr: Any) -> None:
        if self.fail_first:
            self.fail_first = False
            raise RuntimeError("a handler that fails")
        self.got.append(data)
        if len(self.got) >= self.want:
            self.wanted.set()


async def _udp(protocol: _Recorder, max_delay_s: float) -> UdpTransport:
    transport, _ = await open_udp(lambda: protocol, "127.0.0.1", 0, max_delay_s)
    return transport


async def test_while_a_match_ticks_the_socket_is_read_at_its_ticks_in_one_batch(v4) -> None:
    sender, _ = v4
    protocol = _Recorder()
    transport = await _udp(protocol, max_delay_s=3600)  # (no timer read within the test)
    try:
        with transport.ticking():
            for i in range(30):
                sender.sendto(b"input %d" % i, transport.get_extra_info("sockname"))
            for _ in range(5):
                await asyncio.sleep(0)  # loop turns: nobody watches the socket now
            assert protocol.got == [] and transport.reads == 0
            transport.drain()  # a tick begins
            assert protocol.got == [b"input %d" % i for i in range(30)]
            assert (transport.reads, transport.datagrams) == (1, 30)
        # No match ticks: the event loop reads again, as datagrams come.
        protocol.want, protocol.wanted = 31, asyncio.Event()
        sender.sendto(b"after", transport.get_extra_info("sockname"))
        await asyncio.wait_for(protocol.wanted.wait(), 5)
        assert protocol.got[-1] == b"after"
    finally:
        transport.close()


async def test_while_no_match_ticks_each_wake_of_the_loop_reads_a_bounded_batch(v4) -> None:
    sender, _ = v4
    protocol = _Recorder(want=5)
    transport = await _udp(protocol, max_delay_s=3600)
    transport.per_wake = 2  # (so that timers run between batches however much is queued)
    try:
        for i in range(5):
            sender.sendto(b"%d" % i, transport.get_extra_info("sockname"))
        await asyncio.wait_for(protocol.wanted.wait(), 5)
        assert protocol.got == [b"%d" % i for i in range(5)] and transport.reads >= 3
    finally:
        transport.close()


async def test_a_slow_tick_leaves_nothing_waiting_longer_than_the_read_timer(v4) -> None:
    sender, _ = v4
    protocol = _Recorder()
    transport = await _udp(protocol, max_delay_s=0.05)
    try:
        with transport.ticking():  # a match that never ticks within the test
            sender.sendto(b"a handshake", transport.get_extra_info("sockname"))
            await asyncio.wait_for(protocol.wanted.wait(), 5)
            assert protocol.got == [b"a handshake"] and transport.reads == 1
    finally:
        transport.close()


async def test_ticks_that_read_often_keep_the_read_timer_from_waking_the_loop(v4) -> None:
    sender, _ = v4
    protocol = _Recorder()
    transport = await _udp(protocol, max_delay_s=0.4)
    loop = asyncio.get_running_loop()
    try:
        with transport.ticking():
            began = loop.time()
            while loop.time() - began < 0.6:  # ticks 5 ms apart, for longer than max_delay_s
                sender.sendto(b"input", transport.get_extra_info("sockname"))
                await asyncio.sleep(0.005)
                transport.drain()
            assert transport.overdue == 0  # pushed back by every read: it never fired
            assert protocol.got and set(protocol.got) == {b"input"}
        sender.sendto(b"late", transport.get_extra_info("sockname"))
        with transport.ticking():  # and with no tick at all, it reads by itself
            protocol.want, protocol.wanted = len(protocol.got) + 1, asyncio.Event()
            await asyncio.wait_for(protocol.wanted.wait(), 5)
            assert transport.overdue == 1 and protocol.got[-1] == b"late"
    finally:
        transport.close()


async def test_a_failing_handler_is_reported_and_the_rest_of_the_batch_still_arrives(v4) -> None:
    sender, _ = v4
    loop = asyncio.get_running_loop()
    reported: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _loop, context: reported.append(context))
    protocol = _Recorder(fail_first=True)
    transport = await _udp(protocol, max_delay_s=3600)
    try:
        with transport.ticking():
            for i in range(3):
                sender.sendto(b"%d" % i, transport.get_extra_info("sockname"))
            transport.drain()
        assert protocol.got == [b"1", b"2"]
        assert len(reported) == 1 and isinstance(reported[0]["exception"], RuntimeError)
    finally:
        loop.set_exception_handler(None)
        transport.close()


async def test_a_closed_transport_closes_its_socket_and_tells_its_protocol() -> None:
    lost = asyncio.get_running_loop().create_future()

    class Closing(_Recorder):
        def connection_lost(self, exc: Exception | None) -> None:
            lost.set_result(exc)

    transport = await _udp(Closing(), max_delay_s=0.05)
    sock = transport.get_extra_info("socket")
    transport.sendto(b"to nobody", ("127.0.0.1", 9))
    transport.close()
    assert transport.is_closing()
    assert await asyncio.wait_for(lost, 5) is None
    assert sock.fileno() == -1
