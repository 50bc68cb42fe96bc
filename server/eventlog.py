"""The event log's writer: one task that commits every match's tick records in groups.

The tick loop never awaits the database. It calls :meth:`EventLog.append`,
which only queues the record; :meth:`EventLog.run` (one task per server) takes
everything waiting, encodes it and commits it in one transaction. SQLite runs
in aiosqlite's thread, PostgreSQL through asyncpg, so the event loop is never
blocked by a commit either.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import orjson
from sqlalchemy import event, insert, update
from sqlalchemy.exc import ArgumentError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from server.schema import matches, metadata, ticks
from shared.logformat import MatchHeader, encode_payload

log = logging.getLogger("tickline.eventlog")


class EventLogUnavailable(RuntimeError):
    """The database cannot be opened or written; the message says which and why."""


@dataclass(slots=True)
class TickRecord:
    match_id: str
    tick: int
    inputs: dict[str, Any]  # TickInputs.to_record()
    events: list[dict[str, Any]]
    hash: str


@dataclass(slots=True)
class MatchEnd:
    match_id: str
    status: str
    last_tick: int
    final_hash: str
    stats: dict[str, Any] = field(default_factory=dict)


_STOP = object()


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # WAL + synchronous=NORMAL survives a process crash without corruption and
    # halves commit latency against FULL (notes/eventlog.md).
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


class EventLog:
    """Appends tick records for many matches; one writer task commits them."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self._queue: asyncio.Queue[Any] = asyncio.Queue()
        self.committed: dict[str, int] = {}  # match_id -> newest committed tick
        self.appended: dict[str, int] = {}  # match_id -> newest appended tick
        self.commits = 0
        self.rows = 0

    @classmethod
    async def open(cls, url: str) -> EventLog:
        """Connect to ``url`` and create the tables if the log is new."""
        try:
            engine = create_async_engine(url)
        except (ArgumentError, ImportError) as exc:
            raise EventLogUnavailable(f"cannot use event log URL {url!r}: {exc}") from None
        if engine.dialect.name == "sqlite":
            event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        try:
            async with engine.begin() as conn:
                await conn.run_sync(metadata.create_all)
        except (SQLAlchemyError, OSError) as exc:
            await engine.dispose()
            reason = getattr(exc, "orig", None) or exc
            raise EventLogUnavailable(f"cannot open the event log at {engine.url!r}: {reason}") from None
        return cls(engine)

    async def create_match(self, header: MatchHeader) -> None:
        """Write a new match's header; awaited before its first tick, never during."""
        async with self.engine.begin() as conn:
            await conn.execute(insert(matches).values(**header.to_row(), status="running", last_tick=0))
        self.committed[header.match_id] = 0
        self.appended[header.match_id] = 0

    def append(self, record: TickRecord) -> None:
        """Queue one tick's record. Never blocks; the writer commits it soon after."""
        self.appended[record.match_id] = record.tick
        self._queue.put_nowait(record)

    def end_match(self, end: MatchEnd) -> None:
        """Queue the end of a match; it is committed after all its ticks."""
        self._queue.put_nowait(end)

    def lag_ticks(self, match_id: str) -> int:
        return self.appended.get(match_id, 0) - self.committed.get(match_id, 0)

    async def run(self) -> None:
        """The writer task: commit whatever is waiting, in one transaction, until stopped."""
        while True:
            batch = [await self._queue.get()]
            while not self._queue.empty():
                batch.append(self._queue.get_nowait())
            stop = any(item is _STOP for item in batch)
            await self._commit([item for item in batch if item is not _STOP])
            if stop:
                return

    def stop(self) -> None:
        """Ask the writer to finish after what is already queued (call once, then await run)."""
        self._queue.put_nowait(_STOP)

    async def dispose(self) -> None:
        await self.engine.dispose()

    async def _commit(self, batch: list[Any]) -> None:
        if not batch:
            return
        rows = []
        newest: dict[str, int] = {}
        ends: list[MatchEnd] = []
        for item in batch:
            if isinstance(item, TickRecord):
                rows.append({
                    "match_id": item.match_id, "tick": item.tick,
                    "payload": encode_payload(item.inputs, item.events), "hash": item.hash,
                })
                newest[item.match_id] = item.tick
            else:
                ends.append(item)
        started = time.perf_counter()
        async with self.engine.begin() as conn:
            if rows:
                await conn.execute(insert(ticks), rows)
            for match_id, tick in newest.items():
                await conn.execute(
                    update(matches).where(matches.c.match_id == match_id).values(last_tick=tick)
                )
            for end in ends:
                await conn.execute(
                    update(matches)
                    .where(matches.c.match_id == end.match_id)
                    .values(
                        status=end.status, last_tick=end.last_tick, final_hash=end.final_hash,
                        ended_at=time.time(), stats=orjson.dumps(end.stats).decode(),
                    )
                )
        self.commits += 1
        self.rows += len(rows)
        self.committed.update(newest)
        elapsed = time.perf_counter() - started
        if elapsed > 0.1:
            log.warning("event log commit of %d ticks took %.0f ms", len(rows), elapsed * 1000)
