"""A real server, real bots over QUIC on loopback, a real SQLite log, and a replay that verifies it."""

from __future__ import annotations

import asyncio

import pytest

from tickline.bots.client import GameClient
from tickline.bots.swarm import run_swarm
from tickline.replays.reader import LogReader
from tickline.replays.verify import verify_match
from tickline.shared.logformat import decode_payload

pytestmark = pytest.mark.both_loops  # the whole path, on asyncio's own loop and on uvloop


async def test_four_bots_play_a_match_and_its_replay_verifies(start_server) -> None:
    srv = await start_server(game_config={"time_limit_s": 3})
    report = await run_swarm("127.0.0.1", srv.port, 4, duration=15, cafile=srv.cert)
    await srv.stop()

    assert report["connected"] == 4 and report["errors"] == 0
    assert report["closed_by_server"] == {"match over": 4}
    assert report["disconnects"] == 0
    assert 0 < report["deltas_per_s_per_bot"] <= 31  # at the 30 Hz send rate (+1: the last tick goes to all)
    assert len(report["match_ids"]) == 1
    match_id = report["match_ids"][0]

    async with await LogReader.open(srv.db_url) as reader:
        result = await verify_match(reader, match_id)
        _, summary = await reader.match(match_id)
        kinds: list[str] = []
        async for stored in reader.ticks(match_id):
            _, events = decode_payload(stored.payload)
            kinds.extend(e["k"] for e in events)
    assert result.verified, result.reason
    assert result.ticks == 3 * 60
    assert summary.status == "finished"
    assert report["inputs_sent"] > 0 and summary.stats["inputs_applied"] >= 0.75 * report["inputs_sent"]
    # The bots really played: they fired, and somebody got hit.
    assert kinds.count("join") == 4
    assert "fire" in kinds
    assert "hit" in kinds


async def test_client_world_follows_the_server_state(start_server) -> None:
    srv = await start_server(game_config={"time_limit_s": 30})
    async with GameClient.connect("127.0.0.1", srv.port, "walker", cafile=srv.cert) as client:
        assert client.player_id == 1
        for _ in range(10):
            await client.wait_update(timeout=2)
            client.send_input({"mx": 1, "my": 0})
        await client.wait_update(timeout=2)
        me = client.world.view["players"]["1"]
        start_x = me["x"]
        for _ in range(15):
            await client.wait_update(timeout=2)
            client.send_input({"mx": 1, "my": 0})
        me = client.world.view["players"]["1"]
        assert me["name"] == "walker"
        assert me["x"] > start_x  # moving right, as asked
        # The client's copy equals the server's view of the same tick.
        match = srv.server.matches[0]
        assert client.world.server_seq > 0
        assert client.world.tick <= match.tick
    await srv.stop()


async def test_server_shutdown_tells_clients_why_and_commits_the_last_tick(start_server) -> None:
    srv = await start_server(game_config={"time_limit_s": 60})
    async with GameClient.connect("127.0.0.1", srv.port, "stayer", cafile=srv.cert) as client:
        for _ in range(5):
            await client.wait_update(timeout=2)
            client.send_input({"mx": 0, "my": 1})
        match = srv.server.matches[0]
        await srv.stop()
        await asyncio.wait_for(client.closed.wait(), 5)
        assert client.close_reason == "server shutting down"
        last_tick = match.tick
    async with await LogReader.open(srv.db_url) as reader:
        result = await verify_match(reader, match.match_id)
        _, summary = await reader.match(match.match_id)
    assert summary.status == "stopped"
    assert summary.last_tick == last_tick
    assert result.verified and result.ticks == last_tick


async def test_a_new_match_opens_when_one_ends(start_server) -> None:
    srv = await start_server(game_config={"time_limit_s": 1})
    first = await run_swarm("127.0.0.1", srv.port, 2, duration=5, cafile=srv.cert)
    second = await run_swarm("127.0.0.1", srv.port, 2, duration=5, cafile=srv.cert)
    await srv.stop()
    assert first["closed_by_server"] == {"match over": 2}
    assert second["closed_by_server"] == {"match over": 2}
    assert first["match_ids"] != second["match_ids"]
    async with await LogReader.open(srv.db_url) as reader:
        stored = await reader.matches()
    assert {m.match_id for m in stored} == set(first["match_ids"] + second["match_ids"])
