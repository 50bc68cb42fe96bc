"""The event log: the server's writer, the replay reader, and verification that catches damage."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from replays.reader import LogReader, LogUnavailable, MatchNotFound
from replays.verify import verify_match
from server.eventlog import EventLog, MatchEnd, TickRecord
from shared.game import TickInputs, state_hash
from shared.games import make_rules
from shared.logformat import MatchHeader

TICKS = 240


async def _write_match(path: Path, match_id: str = "m" * 32, seed: int = 11) -> str:
    """Play a scripted arena match through the real writer into a SQLite file."""
    rules = make_rules("arena", {"time_limit_s": 60})
    header = MatchHeader(match_id=match_id, game="arena", game_version=rules.version, seed=seed,
                         config=rules.config, tick_rate=60, send_rate=30, created_at=1.0)
    log = await EventLog.open(f"sqlite+aiosqlite:///{path}")
    writer = asyncio.create_task(log.run())
    await log.create_match(header)
    state = rules.initial_state(seed)
    for tick in range(1, TICKS + 1):
        inputs = TickInputs(joins=[(1, "a"), (2, "b")] if tick == 1 else [])
        for pid in (1, 2):
            inputs.inputs[pid] = rules.validate_input(
                {"mx": (tick // 20 + pid) % 3 - 1, "my": (tick // 30) % 3 - 1, "ax": 3 - pid * 2, "ay": 1, "fire": tick % 3 == 0}
            )
        events = rules.step(state, inputs)
        log.append(TickRecord(match_id, tick, inputs.to_record(), events, state_hash(state)))
        if tick % 50 == 0:
            await asyncio.sleep(0)  # let the writer commit in groups, as the server's loop does
    log.end_match(MatchEnd(match_id, "finished", TICKS, state_hash(state), {"ticks": TICKS}))
    log.stop()
    await writer
    assert log.lag_ticks(match_id) == 0
    await log.dispose()
    return state_hash(state)


def _sql(path: Path, statement: str, *args: object) -> None:
    with sqlite3.connect(path) as conn:
        conn.execute(statement, args)


async def _verify(path: Path, match_id: str = "m" * 32):
    async with await LogReader.open(f"sqlite+aiosqlite:///{path}") as reader:
        return await verify_match(reader, match_id)


async def test_written_match_reads_back_and_verifies(tmp_path: Path) -> None:
    db = tmp_path / "log.db"
    final = await _write_match(db)
    async with await LogReader.open(f"sqlite+aiosqlite:///{db}") as reader:
        [summary] = await reader.matches()
        header, _ = await reader.match("mmmm")  # a unique prefix is enough
        ticks = [t.tick async for t in reader.ticks(summary.match_id, partition=7)]
    assert summary.status == "finished" and summary.last_tick == TICKS and summary.final_hash == final
    assert summary.stats == {"ticks": TICKS}
    assert header.seed == 11 and header.game == "arena"
    assert ticks == list(range(1, TICKS + 1))
    report = await _verify(db)
    assert report.verified and report.ticks == TICKS and report.final_state_hash == final


async def test_a_tampered_hash_is_found_at_its_tick(tmp_path: Path) -> None:
    db = tmp_path / "log.db"
    await _write_match(db)
    _sql(db, "UPDATE ticks SET hash = ? WHERE tick = 77", "0" * 32)
    report = await _verify(db)
    assert not report.verified and report.first_bad_tick == 77 and "state hash differs" in report.reason


async def test_a_changed_input_is_found_where_the_state_diverges(tmp_path: Path) -> None:
    db = tmp_path / "log.db"
    await _write_match(db)
    with sqlite3.connect(db) as conn:
        payload, = conn.execute("SELECT payload FROM ticks WHERE tick = 100").fetchone()
        other, = conn.execute("SELECT payload FROM ticks WHERE tick = 160").fetchone()
        assert payload != other
        conn.execute("UPDATE ticks SET payload = ? WHERE tick = 100", (other,))
    report = await _verify(db)
    assert not report.verified and report.first_bad_tick == 100


async def test_a_missing_tick_is_reported_not_replayed(tmp_path: Path) -> None:
    db = tmp_path / "log.db"
    await _write_match(db)
    _sql(db, "DELETE FROM ticks WHERE tick = 120")
    report = await _verify(db)
    assert not report.verified and report.first_bad_tick == 120 and "missing" in report.reason


async def test_a_truncated_log_is_reported(tmp_path: Path) -> None:
    db = tmp_path / "log.db"
    await _write_match(db)
    _sql(db, "DELETE FROM ticks WHERE tick > 200")
    report = await _verify(db)
    assert not report.verified and report.first_bad_tick == 201 and "only 200 are stored" in report.reason


async def test_a_corrupt_payload_is_reported(tmp_path: Path) -> None:
    db = tmp_path / "log.db"
    await _write_match(db)
    _sql(db, "UPDATE ticks SET payload = ? WHERE tick = 5", b"not zlib")
    report = await _verify(db)
    assert not report.verified and report.first_bad_tick == 5 and "cannot be" in report.reason


async def test_other_rules_version_is_refused_plainly(tmp_path: Path) -> None:
    db = tmp_path / "log.db"
    await _write_match(db)
    _sql(db, "UPDATE matches SET game_version = 99")
    report = await _verify(db)
    assert not report.verified and "rules version 99" in report.reason


async def test_a_tick_is_written_once(tmp_path: Path) -> None:
    db = tmp_path / "log.db"
    await _write_match(db)
    with pytest.raises(sqlite3.IntegrityError):
        _sql(db, "INSERT INTO ticks (match_id, tick, payload, hash) VALUES (?, 1, x'00', 'x')", "m" * 32)


async def test_reader_refuses_a_missing_log_without_creating_one(tmp_path: Path) -> None:
    missing = tmp_path / "nothing.db"
    with pytest.raises(LogUnavailable, match="no event log"):
        await LogReader.open(f"sqlite+aiosqlite:///{missing}")
    assert not missing.exists()


async def test_reader_names_an_unknown_match(tmp_path: Path) -> None:
    db = tmp_path / "log.db"
    await _write_match(db)
    async with await LogReader.open(f"sqlite+aiosqlite:///{db}") as reader:
        with pytest.raises(MatchNotFound, match="replay list"):
            await reader.match("nope")
