"""The event log's writer: one task per server commits every match's records in groups.

The tick loop never awaits the database. It calls :meth:`EventLog.append` (and
``add_keyframe``, ``add_player``, ``end_match``), which encode the record as a
row while its data is still in the CPU's cache (a few microseconds a tick) and
queue it; :meth:`EventLog.run`, the single writer task, takes everything
waiting and commits it in one transaction. On SQLite the whole transaction is
one call into the pooled connection's aiosqlite thread (``_write_in_thread``);
on PostgreSQL the same statements (``_write_group``) go through asyncpg. No
commit blocks the event loop either, and the thread that runs SQLite's side
of a commit does so at the lowest CPU priority (``WRITER_NICE``), so that on a
busy core it waits for the tick loops rather than delay them.

Durability is a setting:

- ``batch`` (default): the writer commits at most ``flush_ms`` after a record
  was queued, so a crash loses at most that much play;
- ``tick``: the same pipeline, committing as soon as anything waits; matches
  hold each tick's deltas until :meth:`watch` reports the tick committed, so
  nothing a client saw can be lost.

Backpressure: records are never dropped. When more than ``max_queue``
records wait, or the database is failing, :meth:`has_room` is false and every
match pauses (``wait_for_room``) until the writer catches up.

Fencing: each match has an owner (a server id) and an epoch. Every commit
re-checks, in its transaction, that this server still owns the match at the
epoch it knows; a server that lost a match (another took it over) is refused
with :class:`FencedOut` and stops the match instead of writing.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import sqlite3
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import chain
from typing import Any, Self

import orjson
from sqlalchemy import Connection, StaticPool, case, create_engine, event, insert, select, tuple_, update
from sqlalchemy.exc import ArgumentError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from tickline.server import migrate
from tickline.server.schema import keyframes, matches, players, ticks
from tickline.server.stats import Samples
from tickline.shared.logformat import MatchHeader, check_log_url, encode_payload, encode_state

log = logging.getLogger(__name__)

DURABILITIES = ("batch", "tick")
# The most records one transaction takes; a backlog drains as a pipeline of these.
# With this many waiting, a group is full: it is committed without a flush wait.
CHUNK = 2000
# A record queued in the last tenth of its group's flush interval commits the group at once
# (in batch durability): ticks then carry the commits, with no timer of the writer's own.
EARLY_COMMIT = 0.1

_TICK_COLUMNS = ("match_id", "tick", "payload", "hash")
TickRow = tuple[str, int, bytes, str]  # a ticks row, in _TICK_COLUMNS' order


# SQLite: tick rows per multi-row INSERT (4 parameters each). SQLite 3.32+
# allows 32766 parameters in one statement, older builds 999; 2000 rows is
# past where bigger statements stop paying.
ROWS_PER_INSERT = 2000 if sqlite3.sqlite_version_info >= (3, 32) else 999 // len(_TICK_COLUMNS)


def _insert_ticks(conn: Connection, rows: list[TickRow]) -> None:
    """INSERT tick rows as positional tuples, without SQLAlchemy's per-row parameter
    processing (a tenth of the writer's time in the event-log benchmark; tick rows
    need none of it: plain ints, str, bytes).

    On SQLite, many rows per statement: sqlite3's executemany steps (and releases
    and takes back the GIL) once per row, so under a busy event loop each row
    waited for the GIL; one multi-row INSERT is also about 15 % less CPU a row.
    Elsewhere, the driver's executemany (asyncpg pipelines it).
    """
    style = conn.dialect.paramstyle
    if style == "qmark":
        columns = ", ".join(_TICK_COLUMNS)
        one = "(" + ", ".join("?" for _ in _TICK_COLUMNS) + ")"
        for start in range(0, len(rows), ROWS_PER_INSERT):
            part = rows[start : start + ROWS_PER_INSERT]
            conn.exec_driver_sql(
                f"INSERT INTO ticks ({columns}) VALUES {', '.join([one] * len(part))}", tuple(chain.from_iterable(part))
            )
        return
    if style in ("numeric_dollar", "numeric"):
        prefix = "$" if style == "numeric_dollar" else ":"
        marks = ", ".join(f"{prefix}{i}" for i in range(1, len(_TICK_COLUMNS) + 1))
    elif style == "format":
        marks = ", ".join("%s" for _ in _TICK_COLUMNS)
    else:
        conn.execute(insert(ticks), [dict(zip(_TICK_COLUMNS, row, strict=True)) for row in rows])
        return
    conn.exec_driver_sql(f"INSERT INTO ticks ({', '.join(_TICK_COLUMNS)}) VALUES ({marks})", rows)


class EventLogUnavailable(RuntimeError):
    """The database cannot be opened or written; the message says which and why."""


class FencedOut(RuntimeError):
    """Another server owns this match now; this one must not write it."""

    def __init__(self, match_id: str) -> None:
        super().__init__(f"match {match_id} is owned by another server now; this server stopped writing it")
        self.match_id = match_id


@dataclass(slots=True)
class LogSettings:
    durability: str = "batch"
    flush_ms: int = 50
    max_queue: int = 10_000  # records waiting before matches pause
    give_up_s: float = 10.0  # at shutdown, how long to retry an unwritable database


@dataclass(slots=True)
class TickRecord:
    match_id: str
    tick: int
    inputs: dict[str, Any]  # TickInputs.to_record()
    events: list[dict[str, Any]]
    hash: str


@dataclass(slots=True)
class KeyframeRecord:
    match_id: str
    tick: int
    state: bytes  # Rules.dump_state()
    hash: str


@dataclass(slots=True)
class PlayerRecord:
    match_id: str
    player_id: int
    name: str
    token_hash: str


@dataclass(slots=True)
class MatchEnd:
    match_id: str
    status: str
    last_tick: int
    final_hash: str
    stats: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class Recovered:
    """What the log holds of a running match: enough to resume it at ``last_tick + 1``."""

    header: MatchHeader
    epoch: int
    last_tick: int
    keyframe: tuple[int, bytes, str] | None  # (tick, state, hash), newest at or before last_tick
    ticks: list[tuple[int, bytes, str]]  # (tick, payload, hash) after the keyframe
    players: list[tuple[int, str, str]]  # (player_id, name, token_hash)


Record = TickRecord | KeyframeRecord | PlayerRecord | MatchEnd
# What waits in the writer's queue: tick and keyframe records already encoded as
# their rows (a TickRow; a keyframes row), the rest as they came.
Queued = TickRow | dict[str, Any] | PlayerRecord | MatchEnd


@dataclass(slots=True)
class Prepared:
    """A group of records, encoded as rows, ready for one transaction."""

    ticks: list[TickRow]
    keyframes: list[dict[str, Any]]
    players: list[dict[str, Any]]
    ends: list[MatchEnd]
    newest: dict[str, int]  # match_id -> newest tick in the group
    touched: list[str]  # every match the group writes, sorted

    def without(self, match_id: str) -> Prepared:
        return Prepared(
            [r for r in self.ticks if r[0] != match_id],
            [r for r in self.keyframes if r["match_id"] != match_id],
            [r for r in self.players if r["match_id"] != match_id],
            [e for e in self.ends if e.match_id != match_id],
            {m: t for m, t in self.newest.items() if m != match_id},
            [m for m in self.touched if m != match_id],
        )

    def size(self) -> int:
        return len(self.ticks) + len(self.keyframes) + len(self.players) + len(self.ends)


def _queued(record: Record) -> Queued:
    """What waits in the writer's queue for ``record``: tick and keyframe records as their rows."""
    if isinstance(record, TickRecord):
        return (record.match_id, record.tick, encode_payload(record.inputs, record.events), record.hash)
    if isinstance(record, KeyframeRecord):
        return {
            "match_id": record.match_id,
            "tick": record.tick,
            "state": encode_state(record.state),
            "hash": record.hash,
        }
    return record


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # WAL + synchronous=NORMAL survives a process crash without corruption and
    # halves commit latency against FULL (docs/design.md, "The event log").
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _reason(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc)
    return text.splitlines()[0] if text else type(exc).__name__


class EventLog:
    """Queues records for many matches; one writer task (``run``) commits them."""

    def __init__(self, engine: AsyncEngine, server_id: str, settings: LogSettings) -> None:
        self.engine = engine
        self.server_id = server_id
        self.settings = settings
        self._items: deque[Queued] = deque()
        self._wake = asyncio.Event()
        # Cuts a group commit's flush wait short: set on stop() and when a full
        # group waits (a burst, or a writer that fell behind).
        self._hurry = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()
        self._stopping = False
        # The clock of the flush interval (and of the log's lag): time.monotonic, or a test's.
        self.clock: Callable[[], float] = time.monotonic
        self._pending_since: float | None = None  # when the oldest queued record was queued
        self._inflight_since: float | None = None  # the same, for the batch being committed
        self._epochs: dict[str, int] = {}
        self._watchers: dict[str, tuple[Callable[[int], None], Callable[[FencedOut], None]]] = {}
        self.committed: dict[str, int] = {}  # match_id -> newest committed tick
        self.appended: dict[str, int] = {}  # match_id -> newest queued tick
        self.failing: str | None = None  # why the database refuses writes, while it does
        self.commit_seconds = Samples(4096)
        self.commits = 0
        self.rows = 0
        self.failed_commits = 0  # attempts the database refused (each is retried)
        # A SQLite file removed under a running server takes writes into an unlinked
        # inode, silently lost at exit; each commit first checks it is still there.
        self._sqlite_file: tuple[str, int] | None = None
        # The writer's own connection, kept from one commit to the next: checking one out of
        # the pool and back (with its reset) cost more CPU than committing a 50 ms group.
        # Taken again after a failed commit, and after engine.dispose() (a new pool).
        self._writer: tuple[AsyncConnection, Any] | None = None  # (connection, its pool)
        self._committing = asyncio.Lock()
        database = engine.url.database
        if engine.dialect.name == "sqlite" and database and database != ":memory:":
            self._sqlite_file = (database, os.stat(database).st_ino)

    # ------------------------------------------------------------ opening

    @classmethod
    async def open(
        cls, url: str, server_id: str = "", settings: LogSettings | None = None, upgrade: bool = True
    ) -> Self:
        """Connect to ``url`` and bring its schema to the newest revision (Alembic)."""
        settings = settings or LogSettings()
        if settings.durability not in DURABILITIES:
            raise ValueError(f"durability must be one of {', '.join(DURABILITIES)}")
        check_log_url(url)
        try:
            engine = create_async_engine(url)
        except (ArgumentError, ImportError) as exc:
            raise EventLogUnavailable(f"cannot use event log URL {url!r}: {exc}") from None
        if engine.dialect.name == "sqlite":
            event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
            folder = os.path.dirname(engine.url.database or "") or "."
            if not await asyncio.to_thread(os.path.isdir, folder):
                await engine.dispose()
                raise EventLogUnavailable(f"cannot open the event log: the folder {folder} does not exist")
        try:
            if upgrade:
                before, after = await migrate.upgrade(engine)
                if before is None:
                    log.debug("event log schema created at revision %s", after)
                elif before != after:
                    log.info("event log schema upgraded from %s to %s", before, after)
            else:
                current = await migrate.current(engine)
                if current != migrate.head():
                    raise EventLogUnavailable(
                        f"the event log's schema is at revision {current}, this tickline needs "
                        f"{migrate.head()}: run `tickline db upgrade`"
                    )
        except (SQLAlchemyError, OSError) as exc:
            await engine.dispose()
            # aiosqlite's thread may still be reporting the failed connect; let it
            # finish before the caller closes the loop under it.
            await asyncio.sleep(0.1)
            raise EventLogUnavailable(
                f"cannot open the event log at {engine.url.render_as_string(hide_password=True)}: {_reason(exc)}"
            ) from None
        except BaseException:
            await engine.dispose()
            raise
        return cls(engine, server_id, settings)

    async def dispose(self) -> None:
        await self._drop_writer()
        await self.engine.dispose()

    async def _writer_connection(self) -> AsyncConnection:
        if self._writer is not None and self._writer[1] is not self.engine.pool:
            await self._drop_writer()  # the engine was disposed: its connections are not to be reused
        if self._writer is None:
            self._writer = (await self.engine.connect(), self.engine.pool)
        return self._writer[0]

    async def _drop_writer(self) -> None:
        writer, self._writer = self._writer, None
        if writer is not None:
            with contextlib.suppress(Exception):  # (one we are done with: its close failing changes nothing)
                await writer[0].close()

    # ------------------------------------------------------------ outside the tick (awaited)

    async def create_match(self, header: MatchHeader) -> None:
        """Write a new match's header, owned by this server at epoch 1."""
        async with self.engine.begin() as conn:
            await conn.execute(
                insert(matches).values(
                    **header.to_row(),
                    status="running",
                    last_tick=0,
                    owner=self.server_id,
                    epoch=1,
                )
            )
        self._epochs[header.match_id] = 1
        self.committed[header.match_id] = 0
        self.appended[header.match_id] = 0

    async def has_match(self, match_id: str) -> bool:
        """Whether the log holds a match with this id."""
        async with self.engine.connect() as conn:
            found = await conn.execute(select(matches.c.match_id).where(matches.c.match_id == match_id))
            return found.first() is not None

    async def running_matches(self) -> list[str]:
        """Matches this server owned that never ended: a crash, or a kill, stopped them."""
        query = (
            select(matches.c.match_id)
            .where(matches.c.status == "running", matches.c.owner == self.server_id)
            .order_by(matches.c.created_at)
        )
        async with self.engine.connect() as conn:
            return list((await conn.execute(query)).scalars())

    async def claim(self, match_id: str) -> int:
        """Take ownership of ``match_id`` with a new epoch; FencedOut if another server won the race."""
        async with self.engine.begin() as conn:
            row = (await conn.execute(select(matches.c.epoch).where(matches.c.match_id == match_id))).first()
            if row is None:
                raise LookupError(f"no match {match_id} in the log")
            epoch = row.epoch + 1
            result = await conn.execute(
                update(matches)
                .where(matches.c.match_id == match_id, matches.c.epoch == row.epoch)
                .values(owner=self.server_id, epoch=epoch)
            )
            if result.rowcount != 1:
                raise FencedOut(match_id)
        self._epochs[match_id] = epoch
        return int(epoch)

    async def load_running(self, match_id: str) -> Recovered:
        """Claim a running match and read what resuming it needs."""
        epoch = await self.claim(match_id)
        async with self.engine.connect() as conn:
            row = (await conn.execute(select(matches).where(matches.c.match_id == match_id))).mappings().one()
            header = MatchHeader.from_row(row)
            last_tick = row["last_tick"]
            kf = (
                await conn.execute(
                    select(keyframes.c.tick, keyframes.c.state, keyframes.c.hash)
                    .where(keyframes.c.match_id == match_id, keyframes.c.tick <= last_tick)
                    .order_by(keyframes.c.tick.desc())
                    .limit(1)
                )
            ).first()
            after = kf.tick if kf is not None else 0
            stored = (
                await conn.execute(
                    select(ticks.c.tick, ticks.c.payload, ticks.c.hash)
                    .where(ticks.c.match_id == match_id, ticks.c.tick > after, ticks.c.tick <= last_tick)
                    .order_by(ticks.c.tick)
                )
            ).all()
            seated = (
                await conn.execute(
                    select(players.c.player_id, players.c.name, players.c.token_hash)
                    .where(players.c.match_id == match_id)
                    .order_by(players.c.player_id)
                )
            ).all()
        self.committed[match_id] = self.appended[match_id] = last_tick
        return Recovered(
            header=header,
            epoch=epoch,
            last_tick=last_tick,
            keyframe=(kf.tick, kf.state, kf.hash) if kf is not None else None,
            ticks=[(t.tick, t.payload, t.hash) for t in stored],
            players=[(p.player_id, p.name, p.token_hash) for p in seated],
        )

    async def mark_failed(self, match_id: str, reason: str) -> None:
        """Record that a match cannot go on, so no server tries to resume it again."""
        async with self.engine.begin() as conn:
            await conn.execute(
                update(matches)
                .where(matches.c.match_id == match_id)
                .values(
                    status="failed",
                    ended_at=time.time(),
                    stats=orjson.dumps({"error": reason}).decode(),
                )
            )

    # ------------------------------------------------------------ from the tick loop (never awaits)

    def watch(self, match_id: str, on_commit: Callable[[int], None], on_fenced: Callable[[FencedOut], None]) -> None:
        """Be told, after each commit, the newest committed tick of ``match_id``."""
        self._watchers[match_id] = (on_commit, on_fenced)

    def append(self, record: TickRecord) -> None:
        self.appended[record.match_id] = record.tick
        # Encoded here, not by the writer: the record's inputs were made this
        # tick and are in cache (encoding a batch of cold records later, in a
        # worker thread, cost 1.5x as much and competed with the loop for the GIL).
        self._put(_queued(record))

    def add_keyframe(self, record: KeyframeRecord) -> None:
        self._put(_queued(record))

    def add_player(self, record: PlayerRecord) -> None:
        self._put(record)

    def end_match(self, end: MatchEnd) -> None:
        """Queue the end of a match; it is committed after all its ticks."""
        self._put(end)

    def _put(self, record: Queued) -> None:
        self._items.append(record)
        now = self.clock()
        if self._pending_since is None:
            self._pending_since = now
        elif now >= self._pending_since + self.settings.flush_ms * (1 - EARLY_COMMIT) / 1000:
            # The group is nearly due, and the loop is awake for this record now: committing
            # it a little early spares the loop a wake-up of its own at the deadline.
            self._hurry.set()
        waiting = len(self._items)
        if waiting >= CHUNK:
            self._hurry.set()
        if waiting >= self.settings.max_queue:
            self._room.clear()
        self._wake.set()

    def has_room(self) -> bool:
        """False while the writer is behind by more than max_queue records, or failing."""
        return self._room.is_set()

    async def wait_for_room(self) -> None:
        await self._room.wait()

    def lag_ticks(self, match_id: str) -> int:
        return self.appended.get(match_id, 0) - self.committed.get(match_id, 0)

    def lag_seconds(self) -> float:
        """How long the oldest record not yet committed has waited (0 when none waits)."""
        since = self._inflight_since or self._pending_since
        return 0.0 if since is None else self.clock() - since

    def queued(self) -> int:
        return len(self._items)

    # ------------------------------------------------------------ the writer task

    def stop(self) -> None:
        """Ask the writer to commit what is queued and return."""
        self._stopping = True
        self._wake.set()
        self._hurry.set()

    async def run(self) -> None:
        """The writer task: commits, one group at a time, everything that waits.

        Records are encoded as they are queued, so there is nothing to overlap
        with a commit but the matches themselves: what they queue while one group
        commits (in the driver's thread) is the next group, and the busier the
        log, the larger (and cheaper per row) its groups.
        """
        flush = self.settings.flush_ms / 1000 if self.settings.durability == "batch" else 0.0
        while True:
            if not self._items:
                if self._stopping:
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            if flush and not self._stopping and self._pending_since is not None and len(self._items) < CHUNK:
                # Group commit: let a flush interval's worth of records gather,
                # unless a full group waits or the log stops meanwhile.
                wait = self._pending_since + flush - self.clock()
                if wait > 0:
                    self._hurry.clear()
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(wait):
                            await self._hurry.wait()
            chunk = [self._items.popleft() for _ in range(min(len(self._items), CHUNK))]
            since, self._pending_since = self._pending_since, (self.clock() if self._items else None)
            await self._write(self._group(chunk), since)

    async def _write(self, prepared: Prepared, since: float | None) -> None:
        self._inflight_since = since
        try:
            await self._commit_until_done(prepared)
        finally:
            self._inflight_since = None
        if len(self._items) < self.settings.max_queue // 2 and self.failing is None:
            self._room.set()

    def _check_file(self) -> None:
        if self._sqlite_file is None:
            return
        path, inode = self._sqlite_file
        try:
            same = os.stat(path).st_ino == inode
        except FileNotFoundError:
            same = False
        if not same:
            raise EventLogUnavailable(f"the SQLite file {path} was removed or replaced while in use")

    async def _commit_until_done(self, batch: Prepared) -> None:
        """Commit ``batch``, retrying while the database fails; never drop a record."""
        backoff = 0.05
        failed_at = 0.0
        while batch.touched:
            try:
                self._check_file()
                await self.commit(batch)
            except FencedOut as fenced:
                batch = batch.without(fenced.match_id)
                self._epochs.pop(fenced.match_id, None)
                log.error("%s", fenced)
                watcher = self._watchers.pop(fenced.match_id, None)
                if watcher is not None:
                    watcher[1](fenced)
                continue
            except (SQLAlchemyError, OSError, EventLogUnavailable) as exc:
                self.failed_commits += 1
                if self.failing is None:
                    failed_at = time.monotonic()
                    log.error("event log write failed, matches paused until it recovers: %s", _reason(exc))
                self.failing = _reason(exc)
                self._room.clear()
                if self._stopping and time.monotonic() - failed_at > self.settings.give_up_s:
                    raise EventLogUnavailable(
                        f"event log unwritable for {self.settings.give_up_s:g} s at shutdown; "
                        f"{batch.size()} records not committed: {self.failing}"
                    ) from None
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
                continue
            if self.failing is not None:
                log.warning("event log writable again after %.1f s", time.monotonic() - failed_at)
                self.failing = None
            return

    async def commit_group(self, records: list[Record]) -> None:
        """Commit ``records`` now, past the queue, in one transaction, as the writer commits
        a group (they are encoded first; only the transaction counts in ``commit_seconds``)."""
        await self.commit(self._group([_queued(r) for r in records]))

    @staticmethod
    def _group(batch: list[Queued]) -> Prepared:
        """The rows of one transaction, sorted by table."""
        tick_rows: list[TickRow] = []
        keyframe_rows: list[dict[str, Any]] = []
        player_rows: list[dict[str, Any]] = []
        ends: list[MatchEnd] = []
        newest: dict[str, int] = {}
        for item in batch:
            if isinstance(item, tuple):
                tick_rows.append(item)
                newest[item[0]] = item[1]
            elif isinstance(item, dict):
                keyframe_rows.append(item)
            elif isinstance(item, PlayerRecord):
                player_rows.append(
                    {
                        "match_id": item.match_id,
                        "player_id": item.player_id,
                        "name": item.name,
                        "token_hash": item.token_hash,
                    }
                )
            else:
                ends.append(item)
        touched = sorted(
            set(newest)
            | {r["match_id"] for r in keyframe_rows}
            | {p["match_id"] for p in player_rows}
            | {e.match_id for e in ends}
        )
        return Prepared(tick_rows, keyframe_rows, player_rows, ends, newest, touched)

    def mark_committed(self, prepared: Prepared) -> None:
        """After a group is committed: count it, and tell each match its newest committed tick."""
        self.commits += 1
        self.rows += len(prepared.ticks)
        for match_id, tick in prepared.newest.items():
            self.committed[match_id] = tick
            watcher = self._watchers.get(match_id)
            if watcher is not None:
                watcher[0](tick)
        for end in prepared.ends:
            self._watchers.pop(end.match_id, None)
            self._epochs.pop(end.match_id, None)

    async def commit(self, prepared: Prepared) -> None:
        """Commit one group in one transaction, off the event loop, then :meth:`mark_committed`.

        SQLite: the whole transaction is one call into the pooled connection's
        aiosqlite thread (one round trip through the loop, not one per statement:
        under load each round trip waits for the busy loop's next turn).
        PostgreSQL: the same statements through asyncpg, awaited one by one.
        (The writer's unit of work: a benchmark's subclass may measure or replace it.)
        """
        fence = (self.server_id, {m: self._epochs.get(m, -1) for m in prepared.touched})
        async with self._committing:  # (one transaction at a time on the writer's connection)
            started = time.perf_counter()
            conn = await self._writer_connection()
            try:
                if self.engine.dialect.name == "sqlite":
                    pooled = await conn.get_raw_connection()
                    driver = pooled.driver_connection  # an aiosqlite.Connection
                    assert driver is not None
                    # aiosqlite's _execute runs fn in the connection's own thread: the one way to
                    # run a whole transaction there in one hop (aiosqlite has no public call for
                    # it; SQLAlchemy's aiosqlite dialect uses the same to set isolation levels).
                    try:
                        await driver._execute(_write_in_thread, pooled.info, driver, prepared, fence)
                    except ValueError as exc:  # aiosqlite's "Connection closed": retried on a new one
                        raise EventLogUnavailable(f"the SQLite connection closed: {exc}") from None
                else:
                    async with conn.begin():
                        await conn.run_sync(_write_group, prepared, fence)
            except FencedOut:
                raise  # (the transaction rolled back; the connection is sound)
            except Exception:
                await self._drop_writer()  # the next attempt starts on a new connection
                raise
        elapsed = time.perf_counter() - started
        self.commit_seconds.add(elapsed)
        self.mark_committed(prepared)
        if elapsed > 0.1:
            log.warning("event log commit of %d ticks took %.0f ms", len(prepared.ticks), elapsed * 1000)


Fence = tuple[str, dict[str, int]]  # (this server's id, match_id -> the epoch it knows)


# The nice value of the threads that run SQLite's side of a commit: the lowest
# CPU priority, so that they take only the CPU the tick loops leave. At the
# default priority, on a server pinned to one core, the kernel let the freshly
# woken thread preempt the event loop for SQLite's few milliseconds a commit,
# adding 0.3-4 ms to the tick lateness p99 of 10 matches (bench/eventlog.py).
# A writer the loops leave no CPU to falls behind, and the matches pause, as
# with any slow database.
WRITER_NICE = 19


def lower_thread_priority(nice: int = WRITER_NICE) -> bool:
    """Give the calling thread (alone) the nice value ``nice``; whether it could.

    Linux only: there a thread is a task of its own with its own nice value,
    while elsewhere ``setpriority`` of a thread id would name a process.
    """
    if sys.platform != "linux":
        return False
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), nice)
    except OSError:  # e.g. a sandbox that forbids it: the writer still works, at normal priority
        return False
    return True


def _write_in_thread(info: dict[str, Any], driver: Any, prepared: Prepared, fence: Fence) -> None:
    """In an aiosqlite connection's thread: the group's transaction on its sqlite3 connection,
    through a synchronous SQLAlchemy engine kept in the pooled connection's ``info``
    (so it lives exactly as long as that connection)."""
    engine = info.get("tickline_sync_engine")
    if engine is None:
        lower_thread_priority()  # once per connection: the thread is the connection's own
        raw = driver._conn  # the sqlite3 connection, usable only in this thread
        engine = info["tickline_sync_engine"] = create_engine("sqlite://", creator=lambda: raw, poolclass=StaticPool)
    with engine.begin() as conn:
        _write_group(conn, prepared, fence)


def _fence_sqlite(conn: Connection, server_id: str, epochs: dict[str, int], newest: dict[str, int]) -> int:
    """The fencing UPDATE of ``_write_group`` as SQLite SQL, for its rowcount.

    Built as a string: SQLAlchemy's construction and compilation of the same
    statement (a CASE and an IN of as many matches as the group touches) was
    most of the Python a commit runs in aiosqlite's thread, holding the GIL
    the tick loops wait for.
    """
    params: list[Any] = []
    if newest:
        last_tick = "CASE match_id " + " ".join("WHEN ? THEN ?" for _ in newest) + " ELSE last_tick END"
        for item in newest.items():
            params.extend(item)
    else:
        last_tick = "last_tick"
    params.append(server_id)
    for item in epochs.items():
        params.extend(item)
    pairs = ", ".join("(?, ?)" for _ in epochs)
    return conn.exec_driver_sql(
        f"UPDATE matches SET last_tick = {last_tick} WHERE owner = ? AND (match_id, epoch) IN (VALUES {pairs})",
        tuple(params),
    ).rowcount


def _write_group(conn: Connection, prepared: Prepared, fence: Fence) -> None:
    """Every statement of one group's transaction (the caller commits it)."""
    server_id, epochs = fence
    touched, newest = prepared.touched, prepared.newest
    # Fence first, every match of the group in one statement: only rows this
    # server owns at the epoch it knows are updated. The UPDATE also locks those
    # rows (PostgreSQL), so a takeover and this commit cannot interleave.
    if conn.dialect.paramstyle == "qmark":
        rowcount = _fence_sqlite(conn, server_id, epochs, newest)
    else:
        rowcount = conn.execute(
            update(matches)
            .where(tuple_(matches.c.match_id, matches.c.epoch).in_(list(epochs.items())), matches.c.owner == server_id)
            .values(
                last_tick=case(newest, value=matches.c.match_id, else_=matches.c.last_tick)
                if newest
                else matches.c.last_tick
            )
        ).rowcount
    if rowcount != len(touched):
        rows = conn.execute(
            select(matches.c.match_id, matches.c.owner, matches.c.epoch).where(matches.c.match_id.in_(touched))
        ).all()
        ours = {r.match_id for r in rows if r.owner == server_id and r.epoch == epochs[r.match_id]}
        raise FencedOut(next(m for m in touched if m not in ours))
    if prepared.ticks:
        _insert_ticks(conn, prepared.ticks)
    if prepared.keyframes:
        conn.execute(insert(keyframes), prepared.keyframes)
    if prepared.players:
        conn.execute(insert(players), prepared.players)
    for end in prepared.ends:
        conn.execute(
            update(matches)
            .where(matches.c.match_id == end.match_id)
            .values(
                status=end.status,
                last_tick=end.last_tick,
                final_hash=end.final_hash,
                ended_at=time.time(),
                stats=orjson.dumps(end.stats).decode(),
            )
        )
