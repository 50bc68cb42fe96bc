"""Live spectating: a spectator watches a match over real QUIC on loopback, as far behind it as
the server's spectator delay says, sees exactly what the replay holds at each tick it is
shown, cannot play, and is not a player."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.rawclient import raw_client
from tests.support import tickline, until
from tickline.bots.client import ClientError, GameClient
from tickline.bots.swarm import run_swarm
from tickline.replays.reader import LogReader
from tickline.replays.replay import Replay
from tickline.server.match import Match
from tickline.shared.logformat import decode_payload
from tickline.shared.protocol import PROTOCOL_VERSION, Delta, Hello, Input, Welcome, decode, encode, encode_stream


@dataclass
class Seen:
    """What a spectator was shown: per view, (its tick, the server's tick it came with, the
    match's tick when the client applied it, the view)."""

    views: list[tuple[int, int, int, dict[str, Any]]] = field(default_factory=list)

    def recorder(self, client: GameClient, match: Match) -> Callable[[int, dict[str, Any]], None]:
        def record(tick: int, view: dict[str, Any]) -> None:
            self.views.append((tick, client.server_tick, match.tick, view))

        return record


async def _first_match_with_players(srv: Any, players: int) -> Match:
    await until(lambda: srv.server.matches and len(srv.server.matches[0].sessions) >= players)
    match: Match = srv.server.matches[0]
    return match


def _as_sent(view: dict[str, Any]) -> Any:
    """A view as the wire carries it (JSON), to compare with what a client rebuilt."""
    return orjson.loads(orjson.dumps(view))


async def _assert_shown_as_the_replay_has_it(db_url: str, match_id: str, seen: Seen, follow: int, delay: int) -> None:
    assert len(seen.views) > 10
    ticks = [tick for tick, *_ in seen.views]
    assert ticks == sorted(set(ticks))  # each tick once, in order
    async with await LogReader.open(db_url) as reader:
        replay = await Replay.from_log(reader, match_id)
    for tick, server_tick, match_tick, view in seen.views:
        # The delay held: the view is `delay` ticks older than the server's tick when sent,
        # and no newer than the match's tick minus the delay when it arrived.
        assert server_tick - tick == delay, (tick, server_tick)
        assert tick <= match_tick - delay, (tick, match_tick)
        state = replay.state_at(tick)
        expected = replay.full_view(state) if follow == 0 else replay.view(state, follow)
        assert view == _as_sent(expected), f"tick {tick}"


@pytest.mark.slow
async def test_spectators_watch_arena_behind_the_delay_and_see_what_the_replay_holds(start_server) -> None:
    delay_s, tick_rate = 0.5, 60
    srv = await start_server(game_config={"time_limit_s": 4}, match_options={"spectator_delay_s": delay_s})
    bots = asyncio.create_task(run_swarm("127.0.0.1", srv.port, 3, duration=15, cafile=srv.cert))
    match = await _first_match_with_players(srv, 3)
    whole, follower = Seen(), Seen()
    async with (
        GameClient.spectate("127.0.0.1", srv.port, match.match_id[:8], cafile=srv.cert) as watcher,
        GameClient.spectate("127.0.0.1", srv.port, match.match_id, follow=2, cafile=srv.cert) as fan,
    ):
        assert watcher.spectating and watcher.player_id == 0 and watcher.match_id == match.match_id
        assert watcher.welcome is not None and watcher.welcome.spectator_delay == delay_s * tick_rate
        watcher.on_view = whole.recorder(watcher, match)
        fan.on_view = follower.recorder(fan, match)
        with pytest.raises(ClientError, match="spectators cannot send inputs"):
            watcher.send_input({"mx": 1})
        await asyncio.wait_for(watcher.closed.wait(), 15)
        await asyncio.wait_for(fan.closed.wait(), 15)
        assert watcher.close_reason == fan.close_reason == "match over"
        assert [e.kind for e in watcher.events] == ["over"]
    report = await bots
    await srv.stop()
    assert report["closed_by_server"] == {"match over": 3}
    assert not match.spectators
    delay = round(delay_s * tick_rate)
    await _assert_shown_as_the_replay_has_it(srv.db_url, match.match_id, whole, 0, delay)
    await _assert_shown_as_the_replay_has_it(srv.db_url, match.match_id, follower, 2, delay)
    assert srv.server.ended_totals["ticks"] == 4 * tick_rate


@pytest.mark.slow
async def test_goofspiel_spectators_see_hands_only_once_they_are_delay_ticks_old(start_server) -> None:
    delay_s, tick_rate = 0.5, 10
    srv = await start_server(
        game_config={"cards": 8, "round_ms": 500},
        tick_rate=tick_rate,
        send_rate=tick_rate,
        match_options={"game": "goofspiel", "spectator_delay_s": delay_s},
    )
    bots = asyncio.create_task(run_swarm("127.0.0.1", srv.port, 2, duration=15, cafile=srv.cert))
    match = await _first_match_with_players(srv, 2)
    seen = Seen()
    async with GameClient.spectate("127.0.0.1", srv.port, match.match_id, cafile=srv.cert) as watcher:
        watcher.on_view = seen.recorder(watcher, match)
        await asyncio.wait_for(watcher.closed.wait(), 15)
    await bots
    await srv.stop()
    delay = round(delay_s * tick_rate)
    hands = [view["hands"] for *_, view in seen.views]
    assert any(hand["hand"] != list(range(1, 9)) for shown in hands for hand in shown.values())  # cards were played
    # Every hand and sealed bid it saw is the one the replay holds `delay` ticks before the server's tick.
    await _assert_shown_as_the_replay_has_it(srv.db_url, match.match_id, seen, 0, delay)


async def test_a_spectators_input_closes_it_with_a_reason_and_the_match_plays_on(start_server, caplog) -> None:
    srv = await start_server(game_config={"time_limit_s": 60}, match_options={"spectator_delay_s": 0.1})
    async with GameClient.connect("127.0.0.1", srv.port, "player", cafile=srv.cert) as player:
        await player.wait_update(timeout=2)
        match = srv.server.matches[0]
        async with raw_client(srv.port) as spy:
            spy.send_stream(encode_stream(Hello(version=PROTOCOL_VERSION, name="spy", spectate=match.match_id)))
            welcome = await spy.next_frame()
            assert isinstance(welcome, Welcome) and welcome.player_id == 0 and welcome.spectator_delay == 6
            spy.send_datagram(encode(Input(ack=0, inputs=[])))  # an ack alone is what a spectator may send
            await until(lambda: any(isinstance(d, Delta) for d in spy.datagrams))
            assert len(match.spectators) == 1
            spy.send_datagram(encode(Input(ack=0, inputs=[[1, {"mx": 1}]])))
            reason = await spy.closed_reason()
        assert reason == "spectators cannot send inputs"
        await until(lambda: not match.spectators)
        assert not match._watched  # no spectators: no ring of their views
        tick = player.world.tick
        for _ in range(5):
            assert await player.wait_update(timeout=2), player.close_reason
            player.send_input({"mx": 1, "my": 0})
        assert player.world.tick > tick and not player.closed.is_set()
    warnings = [
        r.getMessage() for r in caplog.records if r.name == "tickline.server.session" and r.levelno >= logging.WARNING
    ]
    assert len(warnings) == 1 and "spectator" in warnings[0] and "spectators cannot send inputs" in warnings[0]
    assert match.kicked == 1


async def test_a_spectator_is_not_a_player(start_server) -> None:
    srv = await start_server(
        game_config={"time_limit_s": 60, "max_players": 2}, match_options={"spectator_delay_s": 0.1}, metrics_port=0
    )
    await until(lambda: srv.server.matches and srv.server.matches[0].is_open())
    match = srv.server.matches[0]
    # A match may be watched before anyone plays in it.
    async with GameClient.spectate("127.0.0.1", srv.port, match.match_id, cafile=srv.cert) as watcher:
        assert match.status == "waiting" and len(match.spectators) == 1
        async with GameClient.connect("127.0.0.1", srv.port, "first", cafile=srv.cert) as first:
            assert first.player_id == 1 and not match.spectators.keys() & match.sessions.values()
            assert match.is_open()  # one player of two: the spectator takes no place
            async with GameClient.connect("127.0.0.1", srv.port, "second", cafile=srv.cert) as second:
                assert second.player_id == 2 and second.match_id == match.match_id
                assert len(match.sessions) == 2 and not match.is_open()
                samples = await _metrics(srv.server.metrics_port)
                assert samples[("tickline_spectators", (("match", match.match_id),))] == 1
                assert samples[("tickline_players", (("match", match.match_id),))] == 2
                assert samples[("tickline_server_spectators", ())] == 1
                await until(lambda: watcher.stats.deltas_applied > 0)
        # The players have gone: the spectator alone does not keep the match going.
        await asyncio.wait_for(watcher.closed.wait(), 10)
        assert watcher.close_reason == "every player left"
    await until(lambda: match.status == "abandoned")
    await srv.stop()
    async with await LogReader.open(srv.db_url) as reader:
        _, summary = await reader.match(match.match_id)
        joins = []
        async for stored in reader.ticks(match.match_id):
            inputs, _events = decode_payload(stored.payload)
            joins.extend(inputs.get("j", []))
    assert joins == [[1, "first"], [2, "second"]]
    assert summary.stats["players_seen"] == 2 and summary.stats["spectators_seen"] == 1
    async with await LogReader.open(srv.db_url) as reader:
        players = await _players_table(reader, match.match_id)
    assert players == [(1, "first"), (2, "second")]


async def _players_table(reader: LogReader, match_id: str) -> list[tuple[int, str]]:
    from sqlalchemy import column, select, table

    players = table("players", column("match_id"), column("player_id"), column("name"))
    async with reader._engine.connect() as conn:
        rows = await conn.execute(
            select(players.c.player_id, players.c.name)
            .where(players.c.match_id == match_id)
            .order_by(players.c.player_id)
        )
        return [(int(pid), str(name)) for pid, name in rows]


async def _metrics(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    import aiohttp

    async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{port}/metrics") as response:
        text = await response.text()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


@pytest.mark.parametrize(
    ("prefix", "follow", "words"),
    [
        ("0000", 0, "no match 0000 is running on this server or in its event log"),
        (None, 9, "has no player 9 to follow"),
    ],
)
async def test_a_spectator_of_no_such_match_or_player_is_told_why(start_server, prefix, follow, words) -> None:
    srv = await start_server(game_config={"time_limit_s": 60})
    async with GameClient.connect("127.0.0.1", srv.port, "player", cafile=srv.cert) as player:
        with pytest.raises(ClientError, match=words):
            async with GameClient.spectate(
                "127.0.0.1", srv.port, prefix or player.match_id, follow=follow, cafile=srv.cert, timeout=5
            ):
                pass
        assert await player.wait_update(timeout=2)


async def test_tickline_spectate_prints_a_json_line_per_view_with_the_delay_it_held(start_server) -> None:
    srv = await start_server(game_config={"time_limit_s": 60}, match_options={"spectator_delay_s": 0.25})
    async with GameClient.connect("127.0.0.1", srv.port, "walker", cafile=srv.cert) as player:
        await player.wait_update(timeout=2)
        server, match = f"127.0.0.1:{srv.port}", player.match_id[:6]
        code, out, err = await tickline("spectate", server, "--match", match, "--ticks", "5", "--cafile", str(srv.cert))
    assert code == 0, err
    lines = [orjson.loads(line) for line in out.splitlines()]
    assert len(lines) == 5
    for line in lines:
        assert line["delay_held"] is True and line["behind"] == 15
        assert line["tick"] == line["server_tick"] - 15
        assert line["scores"] == {"1": {"name": "walker", "score": 0}}
    assert "15 ticks (0.25 s) behind" in err


async def test_tickline_spectate_of_no_such_match_is_one_line_and_exit_1(start_server) -> None:
    srv = await start_server(game_config={"time_limit_s": 60})
    code, out, err = await tickline("spectate", f"127.0.0.1:{srv.port}", "--match", "abc", "--seconds", "5")
    assert code == 1 and not out
    assert len(err.strip().splitlines()) == 1 and "no match abc is running on this server or in its event log" in err


@pytest.mark.parametrize("value", ["-1", "-0.5", "nan", "301"])
async def test_a_bad_spectator_delay_is_one_line_and_exit_2(value: str, tmp_path) -> None:
    code, _out, err = await tickline("serve", "--port", "0", "--data-dir", str(tmp_path), "--spectator-delay", value)
    assert code == 2
    assert len(err.strip().splitlines()) == 1, err
    assert f"--spectator-delay {value} is out of range; use 0 to 300 seconds" in err


async def test_old_clients_are_not_sent_the_new_fields_they_do_not_know() -> None:
    # A player's hello and welcome encode as before spectating existed: a decoder that
    # refuses unknown fields (every tickline decoder) still reads them.
    hello = orjson.loads(encode(Hello(version=1, name="ada")))
    welcome = orjson.loads(encode(Welcome(1, 3, "m", "arena", 1, 60, 30, 5)))
    assert "spectate" not in hello and "follow" not in hello
    assert "spectator_delay" not in welcome
    # ...and a spectator's round-trip with them.
    for frame in (
        Hello(version=1, name="eve", spectate="ab12", follow=2),
        Welcome(1, 0, "m", "arena", 1, 60, 30, 5, spectator_delay=120),
    ):
        assert decode(encode(frame)) == frame


@pytest.mark.slow
async def test_a_recorded_match_streams_to_a_spectator_as_if_live(start_server) -> None:
    srv = await start_server(game_config={"time_limit_s": 2})
    report = await run_swarm("127.0.0.1", srv.port, 2, duration=15, cafile=srv.cert)
    match_id = report["match_ids"][0]
    await until(lambda: all(m.match_id != match_id for m in srv.server.matches))  # over, and replaced
    whole, follower = Seen(), Seen()
    async with (
        GameClient.spectate("127.0.0.1", srv.port, match_id[:8], cafile=srv.cert) as watcher,
        GameClient.spectate("127.0.0.1", srv.port, match_id, follow=1, cafile=srv.cert) as fan,
    ):
        assert watcher.spectating and watcher.match_id == match_id
        assert watcher.welcome is not None and watcher.welcome.spectator_delay == 0 and watcher.welcome.tick == 0
        # (the match's tick is the view's: nothing is held back of a match that is over)
        watcher.on_view = lambda tick, view: whole.views.append((tick, watcher.server_tick, tick, view))
        fan.on_view = lambda tick, view: follower.views.append((tick, fan.server_tick, tick, view))
        with pytest.raises(ClientError, match="spectators cannot send inputs"):
            fan.send_input({"mx": 1})
        await asyncio.wait_for(watcher.closed.wait(), 15)
        await asyncio.wait_for(fan.closed.wait(), 15)
        assert watcher.close_reason == fan.close_reason == "recorded match over"
        assert [e.kind for e in watcher.events] == ["over"]
    await srv.stop()
    assert whole.views[-1][0] == 2 * 60  # to the last tick
    await _assert_shown_as_the_replay_has_it(srv.db_url, match_id, whole, 0, 0)
    await _assert_shown_as_the_replay_has_it(srv.db_url, match_id, follower, 1, 0)
