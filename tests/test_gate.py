"""Who may start a QUIC handshake (server/gate.py): the gate's decisions and Retry tokens with
fake clocks, then a real server on loopback sent what a hostile sender sends: Initials that
do not decrypt, short packets of unknown versions, genuine ClientHellos from an address that
never answers (capped, timed out, freed without a whole-heap collection, never amplified past
three times what they sent), and a real client through a Retry."""

from __future__ import annotations

import gc
import os
import socket
import time
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection

from tests.support import until
from tickline.bots.client import GameClient
from tickline.server.gate import Gate, GateSettings, RetryTokens, Verdict

KEY = bytes(range(32))
ADDR = ("127.0.0.1", 50000)


# ---------------------------------------------------------------------- sans-I/O


def test_an_unvalidated_address_gets_a_retry_once_half_the_places_or_the_budget_are_taken() -> None:
    gate = Gate(GateSettings(max_half_open=6, max_half_open_per_address=3, new_per_s=10, new_per_s_per_address=10))
    for host in ("a", "b", "c"):
        assert gate.admit(host, False, 0.0) is Verdict.ADMIT
        gate.opened(host)
    assert gate.admit("d", False, 0.0) is Verdict.RETRY  # half of the six places taken: prove your address
    assert gate.admit("c", True, 0.0) is Verdict.ADMIT  # ...which a validated one has
    gate.opened("c")
    gate.opened("c")
    assert gate.admit("c", True, 0.0) is Verdict.DROP and gate.refused["half_open_per_address"] == 1
    gate.opened("d")
    assert gate.admit("e", True, 0.0) is Verdict.DROP and gate.refused["half_open_total"] == 1
    for host in ("a", "b", "c", "c", "c", "d"):
        gate.closed(host)
    assert gate.half_open_total == 0 and not gate.half_open and gate.retries == 1


def test_spoofed_addresses_cannot_spend_the_budget_that_validated_ones_need() -> None:
    gate = Gate(GateSettings(new_per_s=10, new_per_s_per_address=100))  # a burst of 20 in total
    admitted = sum(gate.admit(f"spoofed-{i}", False, 0.0) is Verdict.ADMIT for i in range(100))
    assert admitted == 10  # half the burst; the other 90 were sent Retries
    assert gate.retries == 90
    assert sum(gate.admit(f"real-{i}", True, 0.0) is Verdict.ADMIT for i in range(10)) == 10
    assert gate.admit("real-late", True, 0.0) is Verdict.DROP and gate.refused["budget_total"] == 1
    assert gate.admit("real-later", True, 0.1) is Verdict.ADMIT  # a tenth of a second refills one


def test_retry_always_or_never() -> None:
    always = Gate(GateSettings(retry="always"))
    assert always.admit("a", False, 0.0) is Verdict.RETRY and always.admit("a", True, 0.0) is Verdict.ADMIT
    never = Gate(GateSettings(retry="never", new_per_s=1, new_per_s_per_address=1))
    assert never.admit("a", False, 0.0) is Verdict.ADMIT and never.admit("a", False, 0.0) is Verdict.ADMIT
    assert never.admit("a", False, 0.0) is Verdict.DROP and never.refused["budget_per_address"] == 1


def test_a_retry_token_validates_on_any_server_with_the_key_for_its_address_and_connection_only() -> None:
    now = [1_700_000_000.0]
    mine, fleet, stranger = (RetryTokens(k, lambda: now[0]) for k in (KEY, KEY, bytes(32)))
    token = mine.create_token(
        address=ADDR, original_destination_connection_id=b"odcid123", retry_source_connection_id=b"rscid456", now=0
    )
    assert fleet.validate_token(address=ADDR, destination_cid=b"rscid456", token=token, now=0) == b"odcid123"
    for server, address, cid, why in [
        (stranger, ADDR, b"rscid456", "forged"),
        (fleet, ("127.0.0.1", 50001), b"rscid456", "another address"),
        (fleet, ADDR, b"other-cid", "another address or connection"),
    ]:
        with pytest.raises(ValueError, match=why):
            server.validate_token(address=address, destination_cid=cid, token=token, now=0)
    with pytest.raises(ValueError, match="too short"):
        fleet.validate_token(address=ADDR, destination_cid=b"rscid456", token=token[:10], now=0)
    now[0] += 11
    with pytest.raises(ValueError, match=r"expired 11\.0 s after its issue"):
        fleet.validate_token(address=ADDR, destination_cid=b"rscid456", token=token, now=0)


def test_bad_gate_settings_say_what_to_change() -> None:
    for settings, words in [
        (GateSettings(retry="sometimes"), "--retry sometimes is unknown"),
        (GateSettings(max_half_open=0), "--max-half-open"),
        (GateSettings(new_per_s=0), "--new-connections-per-s"),
        (GateSettings(handshake_timeout_s=0), "--handshake-timeout 0 is out of range"),
    ]:
        with pytest.raises(ValueError, match=words):
            settings.validate()


# ---------------------------------------------------------------------- a real server


def _client_initials(port: int, n: int, alpn: str = "tickline/1") -> list[bytes]:
    """The first datagram of ``n`` genuine clients (a ClientHello each, padded to 1200 bytes)."""
    out = []
    for _ in range(n):
        quic = QuicConnection(configuration=QuicConfiguration(is_client=True, alpn_protocols=[alpn]))
        quic.connect(("127.0.0.1", port), now=time.monotonic())
        out.append(quic.datagrams_to_send(now=time.monotonic())[0][0])
    return out


@contextmanager
def _silent_socket() -> Iterator[socket.socket]:
    """A sender that never answers: what a spoofed source address looks like to the server."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    try:
        yield sock
    finally:
        sock.close()


def _drain(sock: socket.socket) -> tuple[int, int]:
    """(datagrams, bytes) waiting on ``sock``."""
    count = size = 0
    while True:
        try:
            size += len(sock.recv(65536))
        except BlockingIOError:
            return count, size
        count += 1


async def _gate_server(start_server: Any, **gate: Any) -> Any:
    return await start_server(game_config={"time_limit_s": 60}, gate=GateSettings(**gate))


async def test_initials_that_do_not_decrypt_and_short_unknown_versions_allocate_nothing(start_server) -> None:
    srv = await _gate_server(start_server)
    gate, endpoint = srv.server.gate, srv.server._endpoint
    with _silent_socket() as sock:
        for _ in range(50):  # (fewer than the server socket's receive buffer holds at once)
            # A long-header Initial (version 1): a fresh destination id, no source id, no token,
            # and 1190 bytes of "protected" payload that are random.
            dcid = os.urandom(8)
            packet = (
                bytes([0xC0, 0, 0, 0, 1, 8]) + dcid + bytes([0, 0]) + (0x4000 | 1190).to_bytes(2) + os.urandom(1190)
            )
            sock.sendto(packet, ("127.0.0.1", srv.port))
        sock.sendto(bytes([0xC0, 0xBA, 0xBA, 0xBA, 0xBA, 0, 0, 0]), ("127.0.0.1", srv.port))  # 8 bytes, version unknown
        await until(lambda: sum(gate.refused.values()) == 51)
        assert gate.refused["undecryptable"] == 50  # the 8-byte one does not even parse
        assert len(endpoint._protocols) == 0 and gate.half_open_total == 0
        # A whole datagram of an unknown version is what a client could send first: it is answered.
        sock.sendto(bytes([0xC0, 0xBA, 0xBA, 0xBA, 0xBA, 0, 0]) + bytes(1193), ("127.0.0.1", srv.port))
        await until(lambda: _peek(sock) > 0)
        assert _drain(sock)[0] == 1  # one version negotiation packet, for the 1200-byte one only


def _peek(sock: socket.socket) -> int:
    try:
        return len(sock.recv(65536, socket.MSG_PEEK))
    except BlockingIOError:
        return 0


@pytest.mark.parametrize("alpn", ["tickline/1", "h3"])  # a native client's hello, and a browser's
async def test_hellos_never_answered_are_capped_timed_out_freed_and_never_amplified(alpn: str, start_server) -> None:
    srv = await _gate_server(start_server, retry="never", max_half_open_per_address=5, handshake_timeout_s=0.5)
    gate, endpoint = srv.server.gate, srv.server._endpoint
    with _silent_socket() as sock:
        initials = _client_initials(srv.port, 20, alpn)
        for packet in initials:
            sock.sendto(packet, ("127.0.0.1", srv.port))
        await until(lambda: gate.refused["half_open_per_address"] == 15)
        connections = [weakref.ref(p._quic) for p in set(endpoint._protocols.values())]
        assert len(connections) == 5 and gate.half_open_total == 5
        gc.disable()  # what frees them must not be a collection
        try:
            await until(lambda: gate.refused["handshake_timeout"] == 5, timeout=5)
            assert gate.half_open_total == 0
            await until(lambda: not endpoint._protocols, timeout=10)  # closed, drained, forgotten
            await until(lambda: all(ref() is None for ref in connections), timeout=5)
        finally:
            gc.enable()
        received, sent_back = sum(len(p) for p in initials[:5]), _drain(sock)[1]
    # Everything the server sent that address, against what the five admitted hellos brought.
    assert 0 < sent_back <= 3 * received, (sent_back, received)


async def test_with_retry_always_a_spoofed_hello_gets_less_than_it_sent_and_a_real_client_plays(start_server) -> None:
    srv = await _gate_server(start_server, retry="always")
    gate = srv.server.gate
    with _silent_socket() as sock:
        [initial] = _client_initials(srv.port, 1)
        sock.sendto(initial, ("127.0.0.1", srv.port))
        await until(lambda: gate.retries == 1)
        await until(lambda: _peek(sock) > 0)
        count, size = _drain(sock)
    assert count == 1 and size < len(initial) and gate.half_open_total == 0
    async with GameClient.connect("127.0.0.1", srv.port, "real", cafile=srv.cert) as client:
        assert await client.wait_update(timeout=2)
    assert gate.retries == 2 and not gate.refused  # the real one came back with its token
