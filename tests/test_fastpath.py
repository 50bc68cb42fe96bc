"""The fast path: sealed UDP packets beside QUIC, what it refuses, and falling back.

The packet-protection tests are sans-I/O (shared/fastpath.py). The rest run a
real server and real clients on loopback: the attacker is a plain UDP socket
sending to the server's QUIC port.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support import until
from tickline.bots import client as client_module
from tickline.bots.client import FALLBACK_S, ClientOptions, GameClient
from tickline.bots.impair import Impairment, ImpairmentProxy
from tickline.bots.metrics import sample_sum, scrape
from tickline.bots.swarm import run_swarm
from tickline.replays.reader import LogReader
from tickline.replays.verify import verify_match
from tickline.server.fastpath import CHALLENGE_PACKET, FastPath
from tickline.server.session import Departure
from tickline.server.transport import IDLE_CHECK_GRID_S, IDLE_CHECKS, ServerConnection
from tickline.shared import fastpath, native
from tickline.shared.fastpath import (
    CHALLENGE,
    DATA,
    OVERHEAD,
    RESPONSE,
    Dropped,
    FastKeys,
    ReplayWindow,
    client_ends,
)
from tickline.shared.protocol import Input, encode

# ------------------------------------------------------------------ packet protection
# Each test here runs on both twins: the native sealer (OpenSSL's EVP) and the pure one.

SEAL = native.twins("tickline.shared", "seal")


@pytest.fixture(params=sorted(SEAL))
def twin(request: pytest.FixtureRequest) -> Any:
    return SEAL[request.param]


def _pair(twin: Any) -> tuple[FastKeys, Any, Any]:
    keys = FastKeys.generate()
    return keys, twin.Sealer(keys.up, keys.session_id), twin.Opener(keys.up, keys.session_id)


def _reason(opener: Any, packet: bytes) -> str:
    with pytest.raises(Dropped) as caught:
        opener.open(packet)
    return caught.value.reason


def test_a_sealed_packet_opens_once_and_never_looks_like_quic(twin: Any) -> None:
    _, sealer, opener = _pair(twin)
    packet = sealer.seal(DATA, b'{"t":"in"}')
    assert fastpath.is_fastpath(packet) and not packet[0] & 0x40
    assert len(packet) == len(b'{"t":"in"}') + OVERHEAD
    assert opener.open(packet) == (DATA, b'{"t":"in"}')
    assert _reason(opener, packet) == "replayed"


def test_forged_truncated_wrong_key_and_wrong_session_packets_are_dropped(twin: Any) -> None:
    keys, sealer, opener = _pair(twin)
    good = sealer.seal(DATA, b"x" * 40)
    assert _reason(opener, b"\x01" + os.urandom(60)) == "session"  # random bytes: not our session
    forged = good[:17] + os.urandom(len(good) - 17)  # right header, made-up ciphertext
    assert _reason(opener, forged) == "auth"
    assert _reason(opener, good[:-1]) == "auth"  # truncated
    assert _reason(opener, good[:20]) == "short"
    other_key = twin.Sealer(os.urandom(32), keys.session_id)
    assert _reason(opener, other_key.seal(DATA, b"x" * 40)) == "auth"
    other_session = twin.Sealer(keys.up, os.urandom(8))
    assert _reason(opener, other_session.seal(DATA, b"x" * 40)) == "session"
    assert _reason(opener, b"\x3f" + good[1:]) == "kind"
    # None of that moved the window: the genuine packet still opens.
    assert opener.open(good) == (DATA, b"x" * 40)


def test_reordered_replayed_and_too_old_packets_are_told_apart(twin: Any) -> None:
    _, sealer, opener = _pair(twin)
    packets = [sealer.seal(DATA, b"p%d" % i) for i in range(100)]
    opener.open(packets[80])
    assert _reason(opener, packets[79]) == "late"  # reordered: older than the newest
    assert _reason(opener, packets[80]) == "replayed"
    assert _reason(opener, packets[10]) == "too_old"  # more than 64 behind
    opener.open(packets[81])
    assert _reason(opener, packets[80]) == "replayed"
    assert opener.open(packets[99])[1] == b"p99"


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_any_change_to_a_packet_makes_it_fail(twin: Any, data: st.DataObject) -> None:
    _, sealer, opener = _pair(twin)
    packet = bytearray(sealer.seal(DATA, data.draw(st.binary(min_size=0, max_size=64))))
    index = data.draw(st.integers(0, len(packet) - 1))
    packet[index] ^= data.draw(st.integers(1, 255))
    with pytest.raises(Dropped):
        opener.open(bytes(packet))


@given(st.lists(st.integers(1, 300), max_size=200))
def test_the_replay_window_accepts_only_sequences_newer_than_any_accepted(seqs: list[int]) -> None:
    window, newest, accepted = ReplayWindow(), 0, set()
    for seq in seqs:
        if seq <= newest:
            why = "too_old" if newest - seq > ReplayWindow.SIZE else "replayed" if seq in accepted else "late"
            with pytest.raises(Dropped) as caught:
                window.check(seq)
            assert caught.value.reason == why
            continue
        window.check(seq)
        window.accept(seq)
        newest = seq
        accepted.add(seq)


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 70), st.binary(max_size=80), st.integers(-1, 100), st.integers(0, 255)), max_size=40
    )
)
def test_the_native_and_pure_sealers_make_the_same_packets_and_refuse_the_same_ones(
    sends: list[tuple[int, bytes, int, int]],
) -> None:
    """Packets sealed by either twin are byte-identical; each opener accepts, or refuses for
    the same reason, any packet: sent in any order, replayed, or with one byte changed."""
    if "native" not in SEAL:
        pytest.skip("the native module is not built here")
    keys = FastKeys.generate()
    sealers = [SEAL[kind].Sealer(keys.up, keys.session_id) for kind in ("native", "pure")]
    openers = [SEAL[kind].Opener(keys.up, keys.session_id) for kind in ("native", "pure")]
    sent: list[bytes] = []
    for skip, payload, flip, mask in sends:
        for sealer in sealers:
            sealer.seq += skip  # sequences jump: packets lost on the way
        native_packet, pure_packet = (sealer.seal(DATA, payload) for sealer in sealers)
        assert native_packet == pure_packet
        sent.append(native_packet)
        packet = bytearray(sent[flip % len(sent)])  # a new packet, an old one again, or one changed
        if flip >= 0 and mask:
            packet[flip % len(packet)] ^= mask
        outcomes = []
        for opener in openers:
            try:
                outcomes.append(opener.open(bytes(packet)))
            except Dropped as drop:
                outcomes.append(drop.reason)
        assert outcomes[0] == outcomes[1]
        assert openers[0].newest == openers[1].newest


def test_keys_travel_as_hex_and_bad_ones_are_refused() -> None:
    keys = FastKeys.generate()
    wire: dict[str, object] = dict(keys.to_wire())  # from_wire takes any values, to check them
    assert FastKeys.from_wire(wire) == keys
    bad_wires: list[dict[str, object]] = [{}, {"sid": "zz", "up": "00", "down": "00"}, {**wire, "up": "00" * 16}]
    for bad in bad_wires:
        with pytest.raises(ValueError, match="fast-path keys"):
            FastKeys.from_wire(bad)


# ------------------------------------------------------------------ the server's routes


class _Recorder(asyncio.DatagramTransport):
    """Stands in for the UDP socket (this test is about what the route decides to send)."""

    def __init__(self) -> None:
        super().__init__()
        self.sent: list[tuple[bytes, object]] = []

    def sendto(self, data: bytes | bytearray | memoryview, addr: Any = None) -> None:
        self.sent.append((bytes(data), addr))


async def test_a_new_address_is_challenged_with_no_more_bytes_than_it_sent() -> None:
    fast = FastPath()
    recorder = _Recorder()
    fast.transport = recorder
    delivered: list[bytes] = []
    route = fast.open_route(delivered.append, lambda: ("127.0.0.1", 1000))
    sealer, opener = client_ends(route.keys)

    fast.datagram_received(sealer.seal(DATA, b"i" * 30), ("127.0.0.1", 1000))  # QUIC's own address
    assert route.addr == ("127.0.0.1", 1000) and recorder.sent == []

    small = sealer.seal(DATA, b"")  # smaller than a challenge: applied, never answered
    fast.datagram_received(small, ("127.0.0.1", 2000))
    assert len(small) < CHALLENGE_PACKET and recorder.sent == []
    assert delivered == [b"i" * 30, b""]

    prompt = sealer.seal(DATA, b"i" * 30)
    fast.datagram_received(prompt, ("127.0.0.1", 2000))
    [(challenge, to)] = recorder.sent
    assert to == ("127.0.0.1", 2000) and len(challenge) <= len(prompt)
    assert route.addr == ("127.0.0.1", 1000)  # not moved until the new address answers
    kind, token = opener.open(challenge)
    assert kind == CHALLENGE

    fast.datagram_received(sealer.seal(RESPONSE, token), ("127.0.0.1", 3000))  # wrong address
    assert route.addr == ("127.0.0.1", 1000) and fast.dropped["challenge"] == 1
    fast.datagram_received(sealer.seal(RESPONSE, token), ("127.0.0.1", 2000))
    assert route.addr == ("127.0.0.1", 2000) and fast.migrations == 1


# ------------------------------------------------------------------ over the network


def _udp_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    return sock


async def _nothing_arrives(sock: socket.socket, seconds: float = 0.3) -> bool:
    loop = asyncio.get_running_loop()
    try:
        await asyncio.wait_for(loop.sock_recv(sock, 2048), seconds)
    except TimeoutError:
        return True
    return False


async def _play(client: GameClient, updates: int) -> None:
    for _ in range(updates):
        assert await client.wait_update(timeout=2), client.close_reason
        client.send_input({"mx": 1, "my": 0}, flush=True)


async def test_bad_packets_on_the_quic_port_are_dropped_counted_and_never_answered(start_server) -> None:
    srv = await start_server(game_config={"time_limit_s": 60}, metrics_port=0)
    sent: list[bytes] = []
    async with GameClient.connect("127.0.0.1", srv.port, "target", cafile=srv.cert) as client:
        send_udp = client._send_udp

        def capture(packet: bytes, addr: Any = None) -> None:
            sent.append(packet)
            send_udp(packet, addr)

        client._send_udp = capture  # type: ignore[method-assign]  # instruments the client: records what it sends
        await _play(client, 10)
        assert client.on_fastpath
        fast = srv.server.fastpath
        assert fast is not None and fast.packets_in >= 5
        keys = next(iter(fast.routes.values())).keys
        before = dict(fast.dropped)
        attacker = _udp_socket()
        target = ("127.0.0.1", srv.port)
        # Packets with sequences the server has not seen yet, sealed by the
        # client's own sealer, so that only what we break about them fails.
        assert client._fast is not None
        sealer = client._fast[0]
        empty = encode(Input(ack=0, inputs=[]))
        earlier, later, cut, garbled = (sealer.seal(DATA, empty) for _ in range(4))
        wrong_key = fastpath.Sealer(os.urandom(32), keys.session_id)
        wrong_key.seq = sealer.seq
        attacks = {
            "session": [b"\x01" + os.urandom(80)],  # forged: no such session
            "auth": [
                garbled[:17] + os.urandom(len(garbled) - 17),  # forged ciphertext
                cut[:-3],  # truncated
                wrong_key.seal(DATA, empty),
            ],
            "replayed": [sent[-1], later],
            "late": [earlier],  # reordered: sent after a newer one
            "short": [b"\x01\x02\x03"],
            "kind": [b"\x3f" + later[1:]],
        }
        accepted = fast.packets_in
        send_udp(later)  # from the client: accepted once, and it moves the window
        await until(lambda: fast.packets_in > accepted, timeout=5)
        for packets in attacks.values():
            for packet in packets:
                attacker.sendto(packet, target)
        assert await _nothing_arrives(attacker)
        attacker.close()
        for reason, packets in attacks.items():
            assert fast.dropped[reason] - before.get(reason, 0) >= len(packets), reason
        # The player never noticed.
        await _play(client, 10)
        assert client.on_fastpath
        assert not client.closed.is_set()

        samples = await scrape(f"http://127.0.0.1:{srv.server.metrics_port}/metrics")
        assert sample_sum(samples, "tickline_fastpath_dropped_total", reason="auth") >= 3
        assert sample_sum(samples, "tickline_fastpath_sessions") == 1
    await srv.stop()


async def test_a_session_on_the_fast_path_survives_an_address_change(start_server) -> None:
    srv = await start_server(game_config={"time_limit_s": 60})
    async with GameClient.connect("127.0.0.1", srv.port, "mover", cafile=srv.cert) as client:
        await _play(client, 10)
        assert client.on_fastpath
        route = next(iter(srv.server.fastpath.routes.values()))
        old = route.addr
        await client.rebind()
        await _play(client, 15)
        assert client.on_fastpath
        assert client.stats.fast_fallbacks == 0
        assert route.addr != old and srv.server.fastpath.migrations >= 1
    await srv.stop()


async def test_bots_play_a_whole_match_on_the_fast_path_and_it_verifies(start_server) -> None:
    srv = await start_server(game_config={"time_limit_s": 3})
    report = await run_swarm("127.0.0.1", srv.port, 4, duration=15, cafile=srv.cert)
    fast, udp = srv.server.fastpath, srv.server.udp
    await srv.stop()
    assert report["connected"] == 4 and report["errors"] == 0
    assert report["closed_by_server"] == {"match over": 4}
    # The match's ticks read the socket: four players' inputs came in batches, not a read each.
    assert udp is not None and udp.datagrams > 1.5 * udp.reads
    assert report["fastpath_share"] > 0.95 and report["fast_fallbacks"] == 0
    assert fast is not None and fast.packets_in > 4 * 60 and sum(fast.dropped.values()) == 0
    async with await LogReader.open(srv.db_url) as reader:
        result = await verify_match(reader, report["match_ids"][0])
    assert result.verified, result.reason
    assert result.ticks == 3 * 60


async def test_fast_path_and_quic_clients_share_a_match(start_server) -> None:
    srv = await start_server(game_config={"time_limit_s": 60})
    async with (
        GameClient.connect("127.0.0.1", srv.port, "fast", cafile=srv.cert) as fast_client,
        GameClient.connect(
            "127.0.0.1", srv.port, "quic", cafile=srv.cert, options=ClientOptions(fast=False)
        ) as quic_client,
    ):
        for _ in range(15):
            for c in (fast_client, quic_client):
                assert await c.wait_update(timeout=2), c.close_reason
                c.send_input({"mx": 1}, flush=True)
        assert fast_client.on_fastpath and fast_client.stats.fast_packets_down > 5
        assert quic_client.fast_state == "none" and quic_client.stats.fast_packets_down == 0
        assert quic_client.stats.datagrams_down > 5
        assert set(fast_client.world.view["players"]) == set(quic_client.world.view["players"]) == {"1", "2"}
        # The fast-path client's inputs go packed, the other's as in frames; both are applied.
        assert fast_client.packed_inputs and not quic_client.packed_inputs
        sessions = srv.server.matches[0].sessions
        for c in (fast_client, quic_client):
            assert sessions[c.player_id].applied_seq >= c.world.last_seq - 10
    await srv.stop()


async def test_a_client_falls_back_to_quic_when_the_network_drops_the_fast_path(start_server) -> None:
    srv = await start_server(game_config={"time_limit_s": 60})
    proxy = ImpairmentProxy(Impairment(latency_ms=5))
    port = await proxy.start(("127.0.0.1", 0), ("127.0.0.1", srv.port))
    try:
        async with GameClient.connect("127.0.0.1", port, "walker", cafile=srv.cert) as client:
            await _play(client, 10)
            assert client.on_fastpath
            proxy.block = fastpath.is_fastpath  # a middlebox starts dropping it, mid-match
            loop = asyncio.get_running_loop()
            until = loop.time() + FALLBACK_S + 3
            while client.fast_state != "off" and loop.time() < until:
                client.send_input({"mx": 1}, flush=True)
                await asyncio.sleep(1 / 30)
            assert client.fast_state == "off" and client.stats.fast_fallbacks == 1
            route = next(iter(srv.server.fastpath.routes.values()))
            await _play(client, 20)  # the deltas come by QUIC now
            assert not route.active and not client.closed.is_set()
            match = srv.server.matches[0]
            match_id = match.match_id
            assert match.sessions[client.player_id].applied_seq >= client.world.last_seq - 10
    finally:
        proxy.close()
    await srv.stop()
    async with await LogReader.open(srv.db_url) as reader:
        result = await verify_match(reader, match_id)
    assert result.verified, result.reason


async def test_a_server_without_the_fast_path_keeps_clients_on_quic(start_server) -> None:
    srv = await start_server(game_config={"time_limit_s": 60}, fastpath=False)
    async with GameClient.connect("127.0.0.1", srv.port, "plain", cafile=srv.cert) as client:
        await _play(client, 10)
        assert client.fast_state == "none" and client.stats.datagrams_down >= 10
    await srv.stop()


# ------------------------------------------------------------------ keepalives
# Each end judges liveness by every packet it gets, fast-path ones included; QUIC's own idle
# timer (a day long) is a backstop. These servers time out after 1 s.


async def test_on_the_fast_path_a_client_stays_connected_with_no_quic_packets_from_it(start_server) -> None:
    srv = await start_server(game_config={"time_limit_s": 60}, idle_timeout=1.0)
    async with GameClient.connect("127.0.0.1", srv.port, "quiet", cafile=srv.cert) as client:
        await _play(client, 5)
        assert client.on_fastpath
        channel = srv.server.matches[0].sessions[client.player_id].channel
        quic_in = channel.packets
        loop = asyncio.get_running_loop()
        end = loop.time() + 3.5  # more than three idle timeouts
        while loop.time() < end:
            await _play(client, 1)
        assert channel.packets == quic_in  # not a QUIC packet from the client all that while
        assert client.stats.quic_pings == 0
        assert client.fast_state == "on" and not client.closed.is_set()
    await srv.stop()


async def test_every_connections_idle_checks_fall_on_one_grid_so_they_share_wake_ups(start_server) -> None:
    srv = await start_server(game_config={"time_limit_s": 60}, idle_timeout=1.0)
    async with contextlib.AsyncExitStack() as stack:
        channels = []
        for name in ("first", "second"):
            client = await stack.enter_async_context(GameClient.connect("127.0.0.1", srv.port, name, cafile=srv.cert))
            await _play(client, 3)
            channel = srv.server.matches[0].sessions[client.player_id].channel
            assert isinstance(channel, ServerConnection)
            channels.append(channel)
        looks = [channel.idle_check_at for channel in channels]
        loop = asyncio.get_running_loop()
        for at in looks:
            assert at is not None and loop.time() <= at <= loop.time() + 1.0 / IDLE_CHECKS + IDLE_CHECK_GRID_S
            assert at / IDLE_CHECK_GRID_S == pytest.approx(round(at / IDLE_CHECK_GRID_S), abs=1e-6)
    await srv.stop()


async def test_a_client_the_network_loses_is_closed_by_both_ends_and_comes_back_to_its_place(start_server) -> None:
    srv = await start_server(game_config={"time_limit_s": 60}, idle_timeout=1.0)
    proxy = ImpairmentProxy(Impairment())
    port = await proxy.start(("127.0.0.1", 0), ("127.0.0.1", srv.port))
    try:
        async with GameClient.connect("127.0.0.1", port, "walker", cafile=srv.cert) as client:
            await _play(client, 10)
            assert client.on_fastpath and client.welcome is not None
            session = srv.server.matches[0].sessions[client.player_id]
            proxy.block = lambda data: True  # the network goes, both ways, and nobody says a word
            async with asyncio.timeout(10):
                await session.closed.wait()
                await client.closed.wait()
            assert session.close_reason == "idle timeout: nothing heard for 1 s"
            assert session.departure is Departure.LOST
            assert client.close_reason == "idle timeout: nothing heard from the server for 1 s"
            token, world, player_id = client.welcome.token, client.world, client.player_id
    finally:
        proxy.close()
    async with GameClient.connect("127.0.0.1", srv.port, "walker", cafile=srv.cert, token=token, world=world) as back:
        await _play(back, 5)
        assert back.player_id == player_id
    await srv.stop()


async def test_to_a_server_that_does_not_count_the_fast_path_a_client_sends_quic_pings(
    start_server, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An SDK from before the keepalive capability: the server tells it no idle timeout, so it
    # keeps QUIC alive with PINGs (here a third of a 1 s timeout apart) while on the fast path.
    monkeypatch.setattr(fastpath, "KEEPALIVE_CAPABILITY", "an-unknown-capability")
    monkeypatch.setattr(client_module, "IDLE_TIMEOUT_S", 1.0)
    srv = await start_server(game_config={"time_limit_s": 60})
    async with GameClient.connect("127.0.0.1", srv.port, "older", cafile=srv.cert) as client:
        await _play(client, 5)
        channel = srv.server.matches[0].sessions[client.player_id].channel
        quic_in = channel.packets
        # (each PING the client sent, the server heard: a QUIC packet from it)
        await until(lambda: client.stats.quic_pings >= 3 and channel.packets >= quic_in + 3)
        assert client.on_fastpath and not client.closed.is_set()
    await srv.stop()
