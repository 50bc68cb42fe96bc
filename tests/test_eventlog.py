"""The event log on SQLite and PostgreSQL: the writer, fencing, keyframes, migrations, and
verification that catches damage."""

from __future__ import annotations

import asyncio
import os
import sys
import threading
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from sqlalchemy import event, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import create_async_engine

from tests.recording import MATCH, TICKS
from tests.recording import scripted_inputs as _inputs
from tests.recording import write_match as _write_match
from tests.support import until
from tickline.replays.reader import LogReader, LogUnavailable, MatchNotFound
from tickline.replays.verify import state_at, verify_match
from tickline.server import migrate
from tickline.server.eventlog import CHUNK, WRITER_NICE, EventLog, FencedOut, LogSettings, TickRecord
from tickline.server.match import Match, MatchSettings, rebuild_state
from tickline.shared.game import HASH_VERSION, TickInputs, state_hash
from tickline.shared.games import GameNotInstalled, make_rules
from tickline.shared.logformat import MatchHeader, encode_payload


async def _sql(url: str, statement: str, **params: object) -> list[Any]:
    engine = create_async_engine(url)
    try:
        async with engine.begin() as conn:
            result = await conn.execute(text(statement), params)
            return list(result.all()) if result.returns_rows else []
    finally:
        await engine.dispose()


async def _verify(url: str, match_id: str = MATCH):
    async with await LogReader.open(url) as reader:
        return await verify_match(reader, match_id)


async def test_written_match_reads_back_and_verifies(db_url: str) -> None:
    hashes = await _write_match(db_url)
    async with await LogReader.open(db_url) as reader:
        [summary] = await reader.matches()
        header, _ = await reader.match("mmmm")  # a unique prefix is enough
        ticks = [t.tick async for t in reader.ticks(summary.match_id, partition=7)]
    assert summary.status == "finished" and summary.last_tick == TICKS and summary.final_hash == hashes[TICKS]
    assert summary.stats == {"ticks": TICKS}
    assert header.seed == 11 and header.game == "arena"
    assert ticks == list(range(1, TICKS + 1))
    report = await _verify(db_url)
    assert report.verified and report.ticks == TICKS and report.keyframes == TICKS // 60


async def test_seeking_from_a_keyframe_gives_the_stored_state(db_url: str) -> None:
    hashes = await _write_match(db_url)
    async with await LogReader.open(db_url) as reader:
        for tick in (0, 1, 59, 60, 61, 179, 200, TICKS):
            _, state = await state_at(reader, MATCH, tick)
            assert tick == 0 or state_hash(state) == hashes[tick]
        with pytest.raises(ValueError, match="outside the match"):
            await state_at(reader, MATCH, TICKS + 1)


async def test_a_tampered_hash_is_found_at_its_tick(db_url: str) -> None:
    await _write_match(db_url)
    await _sql(db_url, "UPDATE ticks SET hash = :h WHERE tick = 77", h="0" * 32)
    report = await _verify(db_url)
    assert not report.verified and report.first_bad_tick == 77 and "state hash differs" in report.reason


async def test_a_changed_input_is_found_where_the_state_diverges(db_url: str) -> None:
    await _write_match(db_url)
    [(other,)] = await _sql(db_url, "SELECT payload FROM ticks WHERE tick = 160")
    await _sql(db_url, "UPDATE ticks SET payload = :p WHERE tick = 100", p=other)
    report = await _verify(db_url)
    assert not report.verified and report.first_bad_tick == 100


async def test_a_missing_tick_is_reported_not_replayed(db_url: str) -> None:
    await _write_match(db_url)
    await _sql(db_url, "DELETE FROM ticks WHERE tick = 120")
    report = await _verify(db_url)
    assert not report.verified and report.first_bad_tick == 120 and "missing" in report.reason


async def test_a_truncated_log_is_reported(db_url: str) -> None:
    await _write_match(db_url)
    await _sql(db_url, "DELETE FROM keyframes WHERE tick > 200")
    await _sql(db_url, "DELETE FROM ticks WHERE tick > 200")
    report = await _verify(db_url)
    assert not report.verified and report.first_bad_tick == 201 and "only 200 are stored" in report.reason


async def test_a_corrupt_payload_is_reported(db_url: str) -> None:
    await _write_match(db_url)
    await _sql(db_url, "UPDATE ticks SET payload = :p WHERE tick = 5", p=b"not zlib")
    report = await _verify(db_url)
    assert not report.verified and report.first_bad_tick == 5 and "cannot be" in report.reason


async def test_a_keyframe_that_disagrees_with_the_replay_is_reported(db_url: str) -> None:
    await _write_match(db_url)
    [(state,)] = await _sql(db_url, "SELECT state FROM keyframes WHERE tick = 60")
    await _sql(db_url, "UPDATE keyframes SET state = :s WHERE tick = 120", s=state)
    report = await _verify(db_url)
    assert not report.verified and report.first_bad_tick == 120 and "keyframe" in report.reason


async def test_a_rules_version_this_installation_lacks_is_said_plainly_not_judged(db_url: str) -> None:
    await _write_match(db_url)
    await _sql(db_url, "UPDATE matches SET game_version = 99")
    with pytest.raises(GameNotInstalled, match="needs game 'arena' at rules version 99"):
        await _verify(db_url)


async def test_a_tick_is_written_once(db_url: str) -> None:
    await _write_match(db_url)
    with pytest.raises(IntegrityError):
        await _sql(
            db_url, "INSERT INTO ticks (match_id, tick, payload, hash) VALUES (:m, 1, :p, 'x')", m=MATCH, p=b"\x00"
        )


async def test_recovery_rebuilds_the_last_committed_state_from_the_newest_keyframe(db_url: str) -> None:
    hashes = await _write_match(db_url, ticks=150, end=False)
    log = await EventLog.open(db_url, "A")
    try:
        assert await log.running_matches() == [MATCH]
        recovered = await log.load_running(MATCH)
    finally:
        await log.dispose()
    assert recovered.last_tick == 150 and recovered.epoch == 2
    assert recovered.keyframe is not None and recovered.keyframe[0] == 120
    assert [t for t, _, _ in recovered.ticks] == list(range(121, 151))
    rules = make_rules("arena", recovered.header.config)
    assert state_hash(rebuild_state(rules, recovered)) == hashes[150]


async def test_new_matches_hash_with_the_newest_version_and_a_version_1_log_still_verifies(db_url: str) -> None:
    old = await _write_match(db_url, match_id="a" * 32, hash_version=1)  # as tickline logged before versions
    new = await _write_match(db_url, match_id="b" * 32)
    assert HASH_VERSION == 2
    rows = await _sql(db_url, "SELECT match_id, hash_version FROM matches ORDER BY match_id")
    assert rows == [("a" * 32, 1), ("b" * 32, 2)]
    assert old.keys() == new.keys() and all(old[t] != new[t] for t in old)  # same states, hashed two ways
    for match_id in ("a" * 32, "b" * 32):
        report = await _verify(db_url, match_id)
        assert report.verified and report.ticks == TICKS, report


async def test_a_match_resumed_from_a_version_1_log_hashes_on_with_version_1(db_url: str) -> None:
    hashes = await _write_match(db_url, ticks=150, end=False, hash_version=1)
    log = await EventLog.open(db_url, "A")
    try:
        recovered = await log.load_running(MATCH)
        assert recovered.header.hash_version == 1
        match = Match(MatchSettings(), log, recovered)
        assert state_hash(match.state, 1) == hashes[150]
        writer = asyncio.create_task(log.run())
        running = asyncio.create_task(match.run())
        await until(lambda: log.committed.get(MATCH, 0) >= 160)
        match.stop()
        await running
        log.stop()
        await writer
    finally:
        await log.dispose()
    report = await _verify(db_url)  # (every tick's hash recomputed with the header's version, 1)
    assert report.verified and report.ticks >= 160, report


async def _old_log(url: str, revision: str, payload: Callable[[TickInputs, list[Any]], bytes]) -> None:
    """A finished 90-tick arena match as an older tickline wrote it: schema ``revision``, each
    tick's ``payload(inputs, events)``, and state hashes of version 1 (all it had)."""
    rules = make_rules("arena", {"time_limit_s": 60})
    state = rules.initial_state(5)
    engine = create_async_engine(url)
    try:
        await migrate.upgrade(engine, revision)
        async with engine.begin() as conn:
            await conn.execute(
                text(
                    "INSERT INTO matches (match_id, game, game_version, seed, config, tick_rate, send_rate, "
                    "created_at, status, last_tick) VALUES (:m, 'arena', 1, 5, :c, 60, 30, 1.0, 'finished', 90)"
                ),
                {"m": MATCH, "c": orjson.dumps(rules.config).decode()},
            )
            for tick in range(1, 91):
                inputs = _inputs(rules, tick)
                events = rules.step(state, inputs)
                await conn.execute(
                    text("INSERT INTO ticks VALUES (:m, :t, :p, :h)"),
                    {"m": MATCH, "t": tick, "p": payload(inputs, events), "h": state_hash(state, 1)},
                )
            await conn.execute(text("UPDATE matches SET final_hash = :h"), {"h": state_hash(state, 1)})
    finally:
        await engine.dispose()


async def test_a_log_from_before_hash_versions_is_read_without_an_upgrade(tmp_path: Path) -> None:
    """A log at schema 0002 (no hash_version column) reads as hashed with version 1, and the
    reader leaves it as it was."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'old.db'}"
    await _old_log(url, "0002", lambda inputs, events: encode_payload(inputs.to_record(), events))
    async with await LogReader.open(url) as reader:
        header, _ = await reader.match(MATCH)
        report = await verify_match(reader, MATCH)
    assert header.hash_version == 1
    assert report.verified and report.ticks == 90, report
    engine = create_async_engine(url)
    try:
        assert await migrate.current(engine) == "0002"  # the reader changed nothing
    finally:
        await engine.dispose()


async def test_a_server_that_lost_its_match_is_fenced_out(db_url: str) -> None:
    await _write_match(db_url, ticks=30, end=False, server_id="A")
    rules = make_rules("arena", {"time_limit_s": 60})
    a = await EventLog.open(db_url, "A")
    b = await EventLog.open(db_url, "B")
    try:
        recovered_a = await a.load_running(MATCH)  # A resumes its match: epoch 2
        recovered_b = await b.load_running(MATCH)  # B takes it over: epoch 3
        assert (recovered_a.epoch, recovered_b.epoch) == (2, 3)
        state = rebuild_state(rules, recovered_a)
        fenced: list[FencedOut] = []
        a.watch(MATCH, lambda tick: None, fenced.append)
        writer_a = asyncio.create_task(a.run())
        inputs = _inputs(rules, 31)
        events = rules.step(state, inputs)
        a.append(TickRecord(MATCH, 31, inputs.to_record(), events, state_hash(state)))
        a.stop()
        await writer_a
        assert len(fenced) == 1 and "owned by another server" in str(fenced[0])
        assert await _sql(db_url, "SELECT count(*) FROM ticks WHERE tick = 31") == [(0,)]
        # The owner writes on.
        writer_b = asyncio.create_task(b.run())
        b.append(TickRecord(MATCH, 31, inputs.to_record(), events, state_hash(state)))
        b.stop()
        await writer_b
        assert await _sql(db_url, "SELECT owner, epoch, last_tick FROM matches") == [("B", 3, 31)]
    finally:
        await a.dispose()
        await b.dispose()
    assert (await _verify(db_url)).verified


async def test_a_log_from_the_first_schema_opens_upgraded_and_verifies(tmp_path: Path) -> None:
    """A log written by tickline 0.1 (schema 0001, plain zlib payloads) still opens and replays."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'old.db'}"
    # 0.1's payloads: zlib, no events
    await _old_log(url, "0001", lambda inputs, events: zlib.compress(orjson.dumps({"in": inputs.to_record()}), 1))
    log = await EventLog.open(url, "A")  # opening upgrades
    try:
        assert await migrate.current(log.engine) == migrate.head()
    finally:
        await log.dispose()
    report = await _verify(url)
    assert report.verified and report.ticks == 90 and report.keyframes == 0


async def test_a_log_made_before_migrations_is_stamped_and_upgraded(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'unversioned.db'}"
    engine = create_async_engine(url)
    await migrate.upgrade(engine, "0001")
    await _sql(url, "DROP TABLE alembic_version")  # as tickline 0.1 left it: tables, no version
    before, after = await migrate.upgrade(engine)
    await engine.dispose()
    assert (before, after) == ("0001", migrate.head())


async def test_a_server_refuses_an_old_schema_when_told_not_to_upgrade(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'old.db'}"
    engine = create_async_engine(url)
    await migrate.upgrade(engine, "0001")
    await engine.dispose()
    with pytest.raises(Exception, match="run `tickline db upgrade`"):
        await EventLog.open(url, "A", upgrade=False)


async def test_reader_refuses_a_missing_log_without_creating_one(tmp_path: Path) -> None:
    missing = tmp_path / "nothing.db"
    with pytest.raises(LogUnavailable, match="no event log"):
        await LogReader.open(f"sqlite+aiosqlite:///{missing}")
    assert not missing.exists()


async def test_reader_names_an_unknown_match(db_url: str) -> None:
    await _write_match(db_url)
    async with await LogReader.open(db_url) as reader:
        with pytest.raises(MatchNotFound, match="replay list"):
            await reader.match("nope")


@pytest.mark.skipif(sys.platform != "linux", reason="per-thread nice values are Linux's")
async def test_sqlite_commits_run_in_a_thread_at_the_lowest_cpu_priority(tmp_path: Path) -> None:
    """The thread that runs SQLite's side of a commit yields the CPU to the tick loop's,
    which keeps its own priority."""
    loop_nice = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    before = {t.native_id for t in threading.enumerate()}
    log = await EventLog.open(f"sqlite+aiosqlite:///{tmp_path / 'log.db'}", "A")
    writer = asyncio.create_task(log.run())
    rules = make_rules("arena")
    await log.create_match(MatchHeader(MATCH, "arena", rules.version, 1, rules.config, 60, 30, 1.0))
    log.append(TickRecord(MATCH, 1, TickInputs().to_record(), [], state_hash(rules.initial_state(1))))
    await until(lambda: not log.lag_ticks(MATCH), timeout=5)
    try:
        threads: dict[int, int] = {}
        for t in threading.enumerate():
            if t.native_id in before:
                continue
            assert t.native_id is not None  # a thread that enumerate() lists has started, so has its id
            threads[t.native_id] = os.getpriority(os.PRIO_PROCESS, t.native_id)
    finally:
        log.stop()
        await writer
        await log.dispose()
    assert WRITER_NICE in threads.values(), f"new threads' nice values: {threads}"
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == loop_nice


async def test_writer_groups_ticks_into_few_commits_in_batch_mode(db_url: str) -> None:
    log = await EventLog.open(db_url, "A", LogSettings(durability="batch", flush_ms=50))
    rules = make_rules("arena")
    header = MatchHeader(MATCH, "arena", rules.version, 1, rules.config, 60, 30, 1.0)
    await log.create_match(header)
    writer = asyncio.create_task(log.run())
    state = rules.initial_state(1)
    for tick in range(1, 121):  # two seconds of a 60 Hz match, in real time
        inputs = _inputs(rules, tick)
        events = rules.step(state, inputs)
        log.append(TickRecord(MATCH, tick, inputs.to_record(), events, state_hash(state)))
        await asyncio.sleep(1 / 60)
    log.stop()
    await writer
    await log.dispose()
    assert log.rows == 120
    assert log.commits <= 120 // 2  # a commit takes every tick that waited up to 50 ms
    assert (await _verify(db_url)).ticks == 120


async def test_the_writer_keeps_its_connection_until_a_commit_fails(db_url: str) -> None:
    """A pool checkout and return cost more CPU than a group's commit: the writer keeps one
    connection from commit to commit, and takes a new one after a commit failed."""
    log = await EventLog.open(db_url, "A")
    rules = make_rules("arena")
    await log.create_match(MatchHeader(MATCH, "arena", rules.version, 1, rules.config, 60, 30, 1.0))
    checkouts: list[int] = []
    event.listen(log.engine.sync_engine, "checkout", lambda *_: checkouts.append(1))
    try:
        for tick in range(1, 6):
            await log.commit_group([TickRecord(MATCH, tick, {}, [], "h")])
        assert len(checkouts) == 1
        with pytest.raises(IntegrityError):
            await log.commit_group([TickRecord(MATCH, 5, {}, [], "h")])  # a tick written twice
        await log.commit_group([TickRecord(MATCH, 6, {}, [], "h")])
        assert len(checkouts) == 2
        # Groups committed at once take turns on the one connection.
        await asyncio.gather(*(log.commit_group([TickRecord(MATCH, tick, {}, [], "h")]) for tick in (7, 8, 9)))
        assert len(checkouts) == 2
    finally:
        await log.dispose()
    assert log.committed[MATCH] == 9 and log.commits == 9


async def _log_with_long_flush(db_url: str) -> EventLog:
    """A batch-mode log whose flush interval no test waits out (10 s, the largest allowed)."""
    log = await EventLog.open(db_url, "A", LogSettings(durability="batch", flush_ms=10_000))
    rules = make_rules("arena")
    await log.create_match(MatchHeader(MATCH, "arena", rules.version, 1, rules.config, 60, 30, 1.0))
    return log


async def test_stopping_commits_what_waits_without_the_flush_wait(db_url: str) -> None:
    log = await _log_with_long_flush(db_url)
    writer = asyncio.create_task(log.run())
    for tick in range(1, 4):
        log.append(TickRecord(MATCH, tick, {}, [], "h"))
    await asyncio.sleep(0)  # one turn of the loop: the writer is now in its flush wait
    try:
        log.stop()
        async with asyncio.timeout(5):  # well inside the 10 s flush interval
            await writer
    finally:
        await log.dispose()
    assert log.rows == 3 and log.committed[MATCH] == 3


async def test_a_record_in_the_last_tenth_of_the_flush_interval_commits_its_group_at_once(db_url: str) -> None:
    """The tick that queues a record just before its group is due commits the group then, so
    that the writer needs no wake-up of its own at the deadline."""
    log = await _log_with_long_flush(db_url)
    now = [100.0]
    log.clock = lambda: now[0]
    writer = asyncio.create_task(log.run())
    try:
        log.append(TickRecord(MATCH, 1, {}, [], "h"))
        await asyncio.sleep(0)  # the writer waits for more, up to the flush interval (10 s)
        now[0] += 8.9  # not yet in the last tenth: the group still waits
        log.append(TickRecord(MATCH, 2, {}, [], "h"))
        await asyncio.sleep(0)  # (had it hurried the writer, the writer would take 1-2 now)
        now[0] += 0.2  # 9.1 s after the first record
        log.append(TickRecord(MATCH, 3, {}, [], "h"))
        await until(lambda: log.commits >= 1, timeout=5)  # well inside the 10 s flush interval
        assert log.commits == 1 and log.rows == 3 and log.committed[MATCH] == 3  # one group
    finally:
        log.stop()
        await writer
        await log.dispose()


async def test_a_full_group_is_committed_without_the_flush_wait(db_url: str) -> None:
    log = await _log_with_long_flush(db_url)
    writer = asyncio.create_task(log.run())
    try:
        log.append(TickRecord(MATCH, 1, {}, [], "h"))
        await asyncio.sleep(0)  # the writer waits for more, up to the flush interval
        for tick in range(2, CHUNK + 1):
            log.append(TickRecord(MATCH, tick, {}, [], "h"))
        await until(lambda: log.commits >= 1, timeout=5)  # well inside the 10 s flush interval
        assert log.rows == CHUNK and log.committed[MATCH] == CHUNK
    finally:
        log.stop()
        await writer
        await log.dispose()
