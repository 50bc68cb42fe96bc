"""Durability as the player sees it: what a client was shown is committed; an unwritable log
pauses the match instead of letting it run on unrecorded; nothing is lost either way."""

from __future__ import annotations

import os

import pytest
from sqlalchemy import event
from sqlalchemy.engine import make_url

from tests.support import pg_maintenance_connect, until
from tickline.bots.client import GameClient
from tickline.bots.swarm import run_swarm
from tickline.replays.reader import LogReader
from tickline.replays.verify import verify_match
from tickline.server.eventlog import EventLog, EventLogUnavailable, LogSettings


async def _play(client: GameClient, updates: int, check=None) -> None:
    for _ in range(updates):
        assert await client.wait_update(timeout=5), client.close_reason
        if check is not None:
            check()
        client.send_input({"mx": 1, "my": 1, "ax": 1, "ay": 0, "fire": True})


async def _refused_again(log: EventLog, times: int) -> None:
    """Until the writer has had ``times`` more commits refused: time in which a match that
    ran unrecorded would have ticked."""
    refused = log.failed_commits
    await until(lambda: log.failed_commits >= refused + times)


@pytest.mark.parametrize(("durability", "flush_ms", "ahead_expected"), [("tick", 50, False), ("batch", 400, True)])
async def test_tick_durability_never_shows_a_client_an_uncommitted_tick(
    start_server, durability: str, flush_ms: int, ahead_expected: bool
) -> None:
    srv = await start_server(
        game_config={"time_limit_s": 60}, log=LogSettings(durability=durability, flush_ms=flush_ms)
    )
    ahead: list[int] = []
    async with GameClient.connect("127.0.0.1", srv.port, "watcher", cafile=srv.cert) as client:
        log = srv.server.eventlog

        def check() -> None:
            committed = log.committed.get(client.match_id, 0)
            if client.world.tick > committed:
                ahead.append(client.world.tick - committed)

        await _play(client, 60, check)
    # With batch durability and a long flush the client is routinely ahead of the
    # log (what the setting trades away); with tick durability, never.
    assert bool(ahead) is ahead_expected, ahead[:5]


async def test_match_pauses_while_sqlite_is_full_and_resumes_losing_nothing(start_server, caplog) -> None:
    srv = await start_server(game_config={"time_limit_s": 60})
    engine = srv.server.eventlog.engine

    def disk_full(dbapi_connection, _record) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA max_page_count = 1")  # SQLite keeps the file at its current size
        cursor.close()

    async with GameClient.connect("127.0.0.1", srv.port, "player", cafile=srv.cert) as client:
        await _play(client, 10)
        match = srv.server.matches[0]
        event.listen(engine.sync_engine, "connect", disk_full)
        await engine.dispose()  # every new connection now finds the disk full
        await until(lambda: match.pauses >= 1)
        paused_tick = match.tick
        await _refused_again(srv.server.eventlog, 3)
        assert match.tick == paused_tick  # no tick runs unrecorded
        assert "full" in (srv.server.eventlog.failing or "")

        event.remove(engine.sync_engine, "connect", disk_full)
        await engine.dispose()  # space again
        await until(lambda: match.tick > paused_tick + 30)
        await _play(client, 10)
        match_id = client.match_id
    await srv.stop()
    errors = [r.getMessage() for r in caplog.records if r.name == "tickline.server.eventlog" and r.levelname == "ERROR"]
    assert len(errors) == 1 and "database or disk is full" in errors[0]
    async with await LogReader.open(srv.db_url) as reader:
        result = await verify_match(reader, match_id)
        _, summary = await reader.match(match_id)
    assert result.verified, result.reason
    assert result.ticks == summary.last_tick >= paused_tick + 30
    assert summary.stats["pauses"] >= 1


async def test_match_pauses_while_postgresql_refuses_and_resumes_losing_nothing(start_server, pg_url) -> None:
    srv = await start_server(game_config={"time_limit_s": 60}, db_url=pg_url)
    name = make_url(pg_url).database
    admin = await pg_maintenance_connect(os.environ["TICKLINE_TEST_PG_URL"])
    try:
        async with GameClient.connect("127.0.0.1", srv.port, "player", cafile=srv.cert) as client:
            await _play(client, 10)
            match = srv.server.matches[0]
            # The database goes away: open connections are cut, new ones refused.
            await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
            await admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", name)
            await until(lambda: match.pauses >= 1)
            paused_tick = match.tick
            await _refused_again(srv.server.eventlog, 3)
            assert match.tick == paused_tick
            await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
            await until(lambda: match.tick > paused_tick + 30)
            await _play(client, 10)
            match_id = client.match_id
    finally:
        await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
        await admin.close()
    await srv.stop()
    async with await LogReader.open(pg_url) as reader:
        result = await verify_match(reader, match_id)
    assert result.verified, result.reason
    assert result.ticks > paused_tick + 30


async def test_bots_play_a_match_on_postgresql_and_it_verifies(start_server, pg_url) -> None:
    srv = await start_server(game_config={"time_limit_s": 3}, db_url=pg_url, log=LogSettings(durability="tick"))
    report = await run_swarm("127.0.0.1", srv.port, 4, duration=15, cafile=srv.cert)
    await srv.stop()
    assert report["closed_by_server"] == {"match over": 4}
    async with await LogReader.open(pg_url) as reader:
        result = await verify_match(reader, report["match_ids"][0])
    assert result.verified and result.ticks == 180 and result.keyframes == 3


async def test_a_removed_sqlite_file_pauses_the_match_and_is_reported(start_server, caplog) -> None:
    srv = await start_server(game_config={"time_limit_s": 60}, log=LogSettings(give_up_s=1.0))
    db_file = srv.data_dir / "tickline.db"
    async with GameClient.connect("127.0.0.1", srv.port, "player", cafile=srv.cert) as client:
        await _play(client, 5)
        match = srv.server.matches[0]
        db_file.unlink()
        await until(lambda: match.pauses >= 1)
        paused_tick = match.tick
        await _refused_again(srv.server.eventlog, 2)
        assert match.tick == paused_tick
        assert "was removed or replaced" in srv.server.eventlog.failing
    # Shutdown cannot commit the last records anywhere safe: it says so and fails.
    with pytest.raises(ExceptionGroup) as failure:
        await srv.stop()
    assert failure.group_contains(EventLogUnavailable, match="records not committed")
    errors = [r.getMessage() for r in caplog.records if r.name == "tickline.server.eventlog" and r.levelname == "ERROR"]
    assert len(errors) == 1 and "was removed or replaced" in errors[0]
