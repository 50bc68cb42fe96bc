"""Bad input closes only the offending connection, with a reason and one log line; the match plays on."""

from __future__ import annotations

import logging
import struct

import orjson
import pytest

from tests.rawclient import raw_client
from tickline.bots.client import GameClient
from tickline.replays.reader import LogReader
from tickline.replays.verify import verify_match
from tickline.shared.protocol import MAX_DATAGRAM, PROTOCOL_VERSION, Hello, Input, Welcome, encode, encode_stream


def _hello(name: str = "raw", version: int = PROTOCOL_VERSION, caps: list[object] | None = None) -> bytes:
    return encode_stream(Hello(version=version, name=name, caps=caps or []))


def _framed(body: bytes) -> bytes:
    return struct.pack("!I", len(body)) + body


# (what the bad client sends after connecting, words the close reason must contain)
BEFORE_HELLO = {
    "malformed_json": (_framed(b"{not json"), "not valid JSON"),
    "unknown_frame_type": (_framed(orjson.dumps({"t": "teleport", "x": 1})), "unknown frame type"),
    "oversized_frame": (struct.pack("!I", 10_000_000), "exceeds"),
    "wrong_first_frame": (_framed(orjson.dumps({"t": "bye", "reason": "x"})), "expected hello"),
    "unsupported_version": (_hello(version=99), "protocol version 99"),
    "bad_name": (_hello(name="\x00\x01"), "player name"),
    "bad_caps": (_hello(caps=["fastpath", 7]), "caps must be"),
    "too_many_caps": (_hello(caps=[f"c{i}" for i in range(20)]), "caps must be"),
    "field_of_wrong_type": (_framed(orjson.dumps({"t": "hello", "version": "1", "name": "x"})), "wrong type"),
}

# (datagram sent after the welcome, words the close reason must contain)
AFTER_WELCOME = {
    "malformed_datagram": (b"\xff\xfe garbage", "not valid JSON"),
    "oversized_datagram": (
        orjson.dumps({"t": "in", "ack": 0, "inputs": [], "pad": "x" * (MAX_DATAGRAM - 10)}),
        "exceeds",
    ),
    "server_frame_from_client": (encode(Welcome(1, 1, "m", "arena", 1, 60, 30, 0)), "not allowed"),
    "input_out_of_range": (encode(Input(ack=0, inputs=[[1, {"mx": 5}]])), "'mx' must be -1, 0 or 1"),
    "input_unknown_control": (encode(Input(ack=0, inputs=[[1, {"teleport": True}]])), "unknown control"),
    "input_bad_seq": (encode(Input(ack=0, inputs=[["one", {}]])), "positive integer seq"),
    "too_many_inputs": (encode(Input(ack=0, inputs=[[i, {}] for i in range(1, 40)])), "more than 16"),
    "input_held_too_long": (encode(Input(ack=0, inputs=[[1, {}, 9]])), "holds for 1 to 8 ticks, not 9"),
    "input_held_no_tick": (encode(Input(ack=0, inputs=[[1, {}, 0]])), "holds for 1 to 8 ticks, not 0"),
    "input_ticks_not_a_number": (encode(Input(ack=0, inputs=[[1, {}, "2"]])), "holds for 1 to 8 ticks, not '2'"),
}


async def _bystander_keeps_playing(client: GameClient, updates: int = 10) -> None:
    tick = client.world.tick
    for _ in range(updates):
        assert await client.wait_update(timeout=2), f"bystander stopped receiving: {client.close_reason}"
        client.send_input({"mx": 1, "my": 0, "ax": 1, "ay": 0, "fire": True})
    assert client.world.tick > tick
    assert not client.closed.is_set()


def _session_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage() for r in caplog.records if r.name == "tickline.server.session" and r.levelno >= logging.WARNING
    ]


@pytest.mark.parametrize("case", sorted(BEFORE_HELLO))
async def test_bad_control_frame_closes_only_that_connection(case, start_server, caplog) -> None:
    payload, words = BEFORE_HELLO[case]
    srv = await start_server(game_config={"time_limit_s": 60})
    async with GameClient.connect("127.0.0.1", srv.port, "bystander", cafile=srv.cert) as good:
        await good.wait_update(timeout=2)
        async with raw_client(srv.port) as bad:
            bad.send_stream(payload)
            reason = await bad.closed_reason()
        assert words in reason
        await _bystander_keeps_playing(good)
    warnings = _session_warnings(caplog)
    assert len(warnings) == 1 and words in warnings[0]


@pytest.mark.parametrize("case", sorted(AFTER_WELCOME))
async def test_bad_datagram_closes_only_that_connection_and_the_log_still_verifies(case, start_server, caplog) -> None:
    payload, words = AFTER_WELCOME[case]
    srv = await start_server(game_config={"time_limit_s": 60})
    async with GameClient.connect("127.0.0.1", srv.port, "bystander", cafile=srv.cert) as good:
        async with raw_client(srv.port) as bad:
            bad.send_stream(_hello())
            welcome = await bad.next_frame()
            assert isinstance(welcome, Welcome) and welcome.player_id == 2
            bad.send_datagram(payload)
            reason = await bad.closed_reason()
        assert words in reason
        await _bystander_keeps_playing(good)
        match_id = good.match_id
    await srv.stop()
    warnings = _session_warnings(caplog)
    assert len(warnings) == 1 and words in warnings[0]
    async with await LogReader.open(srv.db_url) as reader:
        result = await verify_match(reader, match_id)
    assert result.verified, result.reason


async def test_silent_connection_is_closed_after_the_hello_timeout(start_server) -> None:
    srv = await start_server(hello_timeout=0.5)
    async with raw_client(srv.port) as silent:
        reason = await silent.closed_reason(timeout=5)
    assert reason == "no hello within 0.5 s"


async def test_a_full_match_turns_new_players_away_with_a_reason(start_server) -> None:
    srv = await start_server(game_config={"max_players": 1, "time_limit_s": 60})
    async with GameClient.connect("127.0.0.1", srv.port, "first", cafile=srv.cert) as first:
        async with raw_client(srv.port) as second:
            second.send_stream(_hello("second"))
            reason = await second.closed_reason(timeout=10)
        assert "no match has room" in reason
        await _bystander_keeps_playing(first, updates=3)
