"""Connect tokens: issue/verify and the replay guard with fake clocks, then a real server that
requires them, over QUIC on loopback: a good token seats its bearer; a missing, reused,
expired, forged or misdirected one is refused with the reason while the match plays on."""

from __future__ import annotations

import base64
import re
import time
from typing import Any

import aiohttp
import pytest

from tests.support import until
from tickline.bots.client import ClientError, GameClient
from tickline.bots.lobby import fetch_connect_token
from tickline.bots.swarm import run_swarm
from tickline.server.app import ConfigurationError, ServerConfig
from tickline.shared import tokens
from tickline.shared.protocol import PROTOCOL_VERSION, Hello, decode, encode
from tickline.shared.tokens import Claims, TokenRefused, UsedTokens, issue, verify

KEY = bytes(range(32))
ADDR = "127.0.0.1:4433"
NOW = 1_700_000_000.0


def _flip_a_mac_bit(token: str) -> str:
    body, _, tag = token.partition(".")
    mac = bytearray(base64.urlsafe_b64decode(tag + "=" * (-len(tag) % 4)))
    mac[5] ^= 0x10
    return body + "." + base64.urlsafe_b64encode(bytes(mac)).rstrip(b"=").decode()


# ---------------------------------------------------------------------- sans-I/O


def test_a_token_verifies_to_what_it_was_issued_for() -> None:
    token = issue(KEY, "ab" * 16, "alice", ADDR, NOW, ttl_s=30)
    claims = verify(KEY, token, NOW + 29, ADDR)
    assert (claims.match, claims.name, claims.expires, claims.addr) == ("ab" * 16, "alice", int(NOW) + 30, ADDR)
    assert len(claims.nonce) == tokens.NONCE_BYTES
    assert issue(KEY, "", "alice", ADDR, NOW) != issue(KEY, "", "alice", ADDR, NOW)  # a fresh nonce each


def test_an_expired_token_is_refused() -> None:
    token = issue(KEY, "", "alice", ADDR, NOW, ttl_s=30)
    with pytest.raises(TokenRefused, match="expired 5 s ago"):
        verify(KEY, token, NOW + 35, ADDR)


def test_a_token_with_one_bit_flipped_or_another_key_is_forged() -> None:
    token = issue(KEY, "", "alice", ADDR, NOW)
    with pytest.raises(TokenRefused, match="forged"):
        verify(KEY, _flip_a_mac_bit(token), NOW, ADDR)
    with pytest.raises(TokenRefused, match="forged"):
        verify(bytes(32), token, NOW, ADDR)
    # A payload changed (the name) under the old signature.
    body, _, tag = token.partition(".")
    raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)).replace(b"alice", b"admin")
    with pytest.raises(TokenRefused, match="forged"):
        verify(KEY, base64.urlsafe_b64encode(raw).rstrip(b"=").decode() + "." + tag, NOW, ADDR)


def test_a_token_for_another_server_is_refused() -> None:
    token = issue(KEY, "", "alice", "10.0.0.2:4433", NOW)
    with pytest.raises(TokenRefused, match=re.escape("for server 10.0.0.2:4433, not this one")):
        verify(KEY, token, NOW, ADDR)


@pytest.mark.parametrize("token", ["", "abc", "a.b.c", "!!!.???", "e30.AAAA", "x" * 2000 + ".y"])
def test_malformed_tokens_are_refused(token: str) -> None:
    with pytest.raises(TokenRefused, match=r"malformed|forged"):
        verify(KEY, token, NOW, ADDR)


def test_a_signed_payload_of_the_wrong_shape_is_malformed() -> None:
    payload = b'{"m":"","n":"alice","e":"soon","a":"127.0.0.1:4433","r":"AAAAAAAAAAAAAAAAAAAAAA"}'
    mac = tokens._mac(KEY, payload)
    token = tokens._b64(payload) + "." + tokens._b64(mac)
    with pytest.raises(TokenRefused, match="malformed"):
        verify(KEY, token, NOW, ADDR)


def test_used_tokens_refuse_a_second_use_and_forget_expired_ones() -> None:
    used = UsedTokens()
    first = Claims("", "a", expires=int(NOW) + 10, addr=ADDR, nonce=b"1" * 16)
    second = Claims("", "b", expires=int(NOW) + 20, addr=ADDR, nonce=b"2" * 16)
    used.use(first, NOW)
    used.use(second, NOW + 1)
    with pytest.raises(TokenRefused, match="used twice"):
        used.use(first, NOW + 2)
    assert len(used) == 2
    used.prune(NOW + 10)  # the first has expired: verify() refuses it from now on anyway
    assert len(used) == 1
    used.use(Claims("", "c", expires=int(NOW) + 40, addr=ADDR, nonce=b"3" * 16), NOW + 25)  # prunes the second
    assert len(used) == 1


def test_hello_carries_a_connect_token_only_when_it_has_one() -> None:
    plain = Hello(version=PROTOCOL_VERSION, name="alice")
    assert b"connect_token" not in encode(plain)  # what decoders that predate it read
    with_token = Hello(version=PROTOCOL_VERSION, name="alice", connect_token="t.k")
    assert decode(encode(with_token)) == with_token


# ---------------------------------------------------------------------- a real server


async def _token_server(start_server: Any, **options: Any) -> Any:
    return await start_server(
        game_config={"time_limit_s": 60}, require_tokens=True, metrics_port=0, host="127.0.0.1", **options
    )


def _http(srv: Any) -> str:
    return f"http://127.0.0.1:{srv.server.metrics_port}"


async def test_a_server_that_requires_tokens_seats_good_ones_and_refuses_the_rest(start_server) -> None:
    srv = await _token_server(start_server, matches=2)
    server = srv.server
    first, other = server.matches[0], server.matches[1]
    answer = await fetch_connect_token(_http(srv), "alice")
    assert answer["quic_port"] == srv.port and answer["http_port"] == server.metrics_port
    assert answer["match"] == "" and answer["expires"] > time.time() and answer["cert_sha256"]

    async with GameClient.connect(
        "127.0.0.1", srv.port, "ignored", cafile=srv.cert, connect_token=answer["token"]
    ) as alice:
        assert alice.match_id == first.match_id and first.sessions[alice.player_id].name == "alice"
        assert await alice.wait_update(timeout=2)

        async def refused(connect_token: str, reason: str) -> None:
            with pytest.raises(ClientError, match=reason):
                async with GameClient.connect(
                    "127.0.0.1", srv.port, "mallory", cafile=srv.cert, connect_token=connect_token
                ):
                    pass

        key, addr, now = server.token_key, server.address, time.time()
        await refused("", r"requires a connect token: POST http://127.0.0.1:\d+/lobby/token")
        await refused(answer["token"], "used twice")
        await refused(issue(key, "", "late", addr, now - 120, ttl_s=60), "expired")
        await refused(_flip_a_mac_bit(issue(key, "", "forger", addr, now)), "forged")
        await refused(issue(bytes(32), "", "forger", addr, now), "forged")
        await refused(issue(key, "0" * 32, "lost", addr, now), "which this server is not running")
        await refused(issue(key, "", "elsewhere", "127.0.0.1:1", now), "for server 127.0.0.1:1")
        assert server.kicked == 7

        # A token naming the other match seats its bearer there.
        pinned = await fetch_connect_token(_http(srv), "bob", match=other.match_id)
        async with GameClient.connect(
            "127.0.0.1", srv.port, "bob", cafile=srv.cert, connect_token=pinned["token"]
        ) as bob:
            assert bob.match_id == other.match_id

        # The match played on through all of it, alice in it.
        tick = first.tick
        assert await alice.wait_update(timeout=2)
        await until(lambda: first.tick > tick + 5)
        assert not alice.closed.is_set() and alice.player_id in first.sessions

        # Coming back with the welcome's reconnect token needs no connect token.
        token, player, world = alice.token, alice.player_id, alice.world
        alice.abandon()
    await until(lambda: first.live_figures()["away"] == 1, timeout=5)
    async with GameClient.connect("127.0.0.1", srv.port, "alice", cafile=srv.cert, token=token, world=world) as again:
        assert again.player_id == player and again.match_id == first.match_id
        assert await again.wait_update(timeout=2)


async def test_spectators_of_a_server_that_requires_tokens_need_one_for_that_match(start_server) -> None:
    srv = await _token_server(start_server, matches=2)
    first, other = srv.server.matches
    with pytest.raises(ClientError, match="requires a connect token"):
        async with GameClient.spectate("127.0.0.1", srv.port, first.match_id, cafile=srv.cert):
            pass
    for_other = (await fetch_connect_token(_http(srv), "fan", match=other.match_id))["token"]
    with pytest.raises(ClientError, match=f"is for match {other.match_id}, not {first.match_id}"):
        async with GameClient.spectate("127.0.0.1", srv.port, first.match_id, cafile=srv.cert, connect_token=for_other):
            pass
    for_first = (await fetch_connect_token(_http(srv), "fan", match=first.match_id))["token"]
    async with GameClient.spectate(
        "127.0.0.1", srv.port, first.match_id[:8], cafile=srv.cert, connect_token=for_first
    ) as fan:
        assert fan.spectating and fan.match_id == first.match_id
    assert srv.server.kicked == 2


async def test_bots_given_the_http_url_bring_their_own_tokens(start_server) -> None:
    srv = await _token_server(start_server)
    report = await run_swarm("127.0.0.1", srv.port, 3, duration=1.0, cafile=srv.cert, tokens_url=_http(srv))
    assert report["connected"] == 3 and report["errors"] == 0, report
    assert srv.server.kicked == 0


async def test_the_lobby_refuses_bad_names_and_unknown_matches(start_server) -> None:
    srv = await _token_server(start_server)
    async with aiohttp.ClientSession() as http:
        for body, status, reason in [
            ({"name": ""}, 400, "name must be 1-32 printable characters"),
            ({"name": "x" * 33}, 400, "name must be"),
            ({"name": "bell\a"}, 400, "name must be"),
            ({"name": 7}, 400, "name must be"),
            ({"name": "ok", "match": "f" * 32}, 404, "no match f"),
        ]:
            async with http.post(_http(srv) + "/lobby/token", json=body) as response:
                assert response.status == status, body
                assert reason in await response.text()
        async with http.post(_http(srv) + "/lobby/token", data=b"not json") as response:
            assert response.status == 400
    with pytest.raises(ClientError, match="name must be"):
        await fetch_connect_token(_http(srv), " ")


async def test_tokens_are_required_by_default_exactly_when_the_http_side_is_on(start_server) -> None:
    lobby = await start_server(game_config={"time_limit_s": 60}, metrics_port=0, require_tokens=None)
    assert lobby.server.config.tokens_required()
    refused_with = f"POST http://127.0.0.1:{lobby.server.metrics_port}/lobby/token"
    with pytest.raises(ClientError, match=refused_with):
        async with GameClient.connect("127.0.0.1", lobby.port, "direct", cafile=lobby.cert):
            pass
    token = (await fetch_connect_token(_http(lobby), "via-lobby"))["token"]
    async with GameClient.connect("127.0.0.1", lobby.port, "x", cafile=lobby.cert, connect_token=token) as player:
        assert player.player_id in lobby.server.matches[0].sessions
    # No HTTP side, no lobby to get one from: none needed.
    bare = await start_server(game_config={"time_limit_s": 60}, require_tokens=None)
    assert not bare.server.config.tokens_required()
    async with GameClient.connect("127.0.0.1", bare.port, "direct", cafile=bare.cert) as player:
        assert player.player_id in bare.server.matches[0].sessions


async def test_the_lobby_holds_one_address_to_its_rate_and_says_when_to_come_back(start_server) -> None:
    srv = await _token_server(start_server, lobby_rate=1.0)  # bursts of four
    async with aiohttp.ClientSession() as http:
        statuses = []
        for _ in range(5):
            async with http.post(_http(srv) + "/lobby/token", json={"name": "eager"}) as response:
                statuses.append(response.status)
                retry_after = response.headers.get("Retry-After")
                text = await response.text()
        assert statuses == [200, 200, 200, 200, 429]
        assert retry_after == "1" and "too many lobby requests from this address" in text
        async with http.get(_http(srv) + "/metrics") as response:
            assert "tickline_lobby_tokens_refused_total 1.0" in await response.text()
    # The SDK waits as told, within its timeout, and gets its token.
    answer = await fetch_connect_token(_http(srv), "patient", timeout=5.0)
    assert answer["token"]
    with pytest.raises(ClientError, match="too many lobby requests"):
        await fetch_connect_token(_http(srv), "hasty", timeout=0.5)


async def test_the_token_key_is_made_once_owner_only_and_may_be_shared(start_server, tmp_path) -> None:
    srv = await start_server()
    path = srv.data_dir / "tls" / "token.key"
    assert path.stat().st_mode & 0o777 == 0o600 and len(path.read_bytes()) == tokens.KEY_BYTES
    assert srv.server.token_key == path.read_bytes()
    shared = tmp_path / "fleet.key"
    shared.write_bytes(b"k" * 32)
    fleet = await start_server(token_key=shared)
    assert fleet.server.token_key == b"k" * 32


async def test_a_token_key_that_cannot_be_one_is_said_in_one_line(start_server, tmp_path) -> None:
    missing = tmp_path / "nope.key"
    with pytest.raises(ConfigurationError, match=f"--token-key {missing}: no such file"):
        ServerConfig(token_key=missing).validate()
    short = tmp_path / "short.key"
    short.write_bytes(b"too short")
    with pytest.raises(ConfigurationError, match="holds 9 bytes; a connect-token key is at least 32"):
        await start_server(token_key=short)
