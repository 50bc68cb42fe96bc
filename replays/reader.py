"""A small, read-only reader of the event log, independent of the server's writer.

It names only the columns it reads (``sqlalchemy.table``/``column``), so the
reader keeps working as long as those columns exist, and never creates or
changes anything. Ticks are streamed in partitions (``stream(...).partitions()``),
an order of magnitude faster than iterating row by row.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import column, func, inspect, literal, select, table
from sqlalchemy.exc import ArgumentError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from tickline.shared.logformat import HEADER_COLUMNS, MatchHeader, check_log_url

_matches = table(
    "matches",
    *(column(name) for name in HEADER_COLUMNS),
    column("status"),
    column("last_tick"),
    column("final_hash"),
    column("ended_at"),
    column("stats"),
)
_ticks = table("ticks", column("match_id"), column("tick"), column("payload"), column("hash"))
_keyframes = table("keyframes", column("match_id"), column("tick"), column("state"), column("hash"))


class LogUnavailable(RuntimeError):
    """The log cannot be read; the message says which and why."""


class MatchNotFound(LookupError):
    pass


@dataclass(slots=True, frozen=True)
class MatchSummary:
    match_id: str
    game: str
    game_version: int
    status: str
    last_tick: int
    tick_rate: int
    created_at: float
    final_hash: str | None
    stats: dict[str, Any]


@dataclass(slots=True, frozen=True)
class StoredKeyframe:
    tick: int
    state: bytes
    hash: str


@dataclass(slots=True, frozen=True)
class StoredTick:
    tick: int
    payload: bytes
    hash: str


class LogReader:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._keyframes_table: bool | None = None
        self._hash_versions: bool | None = None  # whether matches has hash_version (schema 0003)

    @classmethod
    async def open(cls, url: str) -> LogReader:
        """A reader of the log at ``url``; :class:`~tickline.shared.logformat.UnsupportedLogUrl`
        for a URL of no database tickline logs to, :class:`LogUnavailable` for one it cannot read."""
        check_log_url(url)
        try:
            engine = create_async_engine(url)
        except (ArgumentError, ImportError) as exc:
            raise LogUnavailable(f"cannot use event log URL {url!r}: {exc}") from None
        database = engine.url.database
        if engine.dialect.name == "sqlite" and database and not await asyncio.to_thread(Path(database).exists):
            # Reading must not create an empty database file as a side effect.
            await engine.dispose()
            raise LogUnavailable(
                f"no event log at {database}; run `tickline serve` or `tickline demo` first, or pass --db"
            )
        try:
            async with engine.connect() as conn:
                await conn.execute(select(func.count()).select_from(_matches))
        except (SQLAlchemyError, OSError) as exc:  # OSError: a server refusing, a host that does not resolve
            await engine.dispose()
            reason = str(getattr(exc, "orig", None) or exc).splitlines()[0] or type(exc).__name__
            where = engine.url.render_as_string(hide_password=True)
            raise LogUnavailable(f"cannot read an event log at {where}: {reason}") from None
        return cls(engine)

    async def close(self) -> None:
        await self._engine.dispose()

    async def __aenter__(self) -> LogReader:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def matches(self) -> list[MatchSummary]:
        """Every match in the log, newest first."""
        query = (await self._matches_query()).order_by(_matches.c.created_at.desc())
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).mappings().all()
        return [_summary(row) for row in rows]

    async def match(self, match_id: str) -> tuple[MatchHeader, MatchSummary]:
        """The header and summary of one match; a unique prefix of its id will do."""
        query = (await self._matches_query()).where(_matches.c.match_id.startswith(match_id, autoescape=True))
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query.limit(2))).mappings().all()
        if not rows:
            raise MatchNotFound(f"no match {match_id!r} in the log; `tickline replay list` shows them")
        if len(rows) > 1:
            raise MatchNotFound(f"{match_id!r} names more than one match; give more of its id")
        return MatchHeader.from_row(rows[0]), _summary(rows[0])

    async def ticks(self, match_id: str, after: int = 0, partition: int = 2048) -> AsyncIterator[StoredTick]:
        """The match's stored ticks after ``after``, in tick order."""
        query = (
            select(_ticks.c.tick, _ticks.c.payload, _ticks.c.hash)
            .where(_ticks.c.match_id == match_id, _ticks.c.tick > after)
            .order_by(_ticks.c.tick)
        )
        async with self._engine.connect() as conn:
            result = await conn.stream(query)
            async for rows in result.partitions(partition):
                for tick, payload, hash_ in rows:
                    yield StoredTick(tick, payload, hash_)

    async def keyframes(self, match_id: str) -> list[StoredKeyframe]:
        """Every keyframe of the match, in tick order, in one query (none for logs from before keyframes)."""
        if not await self._has_keyframes():
            return []
        query = (
            select(_keyframes.c.tick, _keyframes.c.state, _keyframes.c.hash)
            .where(_keyframes.c.match_id == match_id)
            .order_by(_keyframes.c.tick)
        )
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [StoredKeyframe(row.tick, row.state, row.hash) for row in rows]

    async def _matches_query(self) -> Any:
        """SELECT of the matches' columns; a log from before hash versions hashed with version 1."""
        if self._hash_versions is None:
            async with self._engine.connect() as conn:
                names = await conn.run_sync(lambda c: {col["name"] for col in inspect(c).get_columns("matches")})
            self._hash_versions = "hash_version" in names
        if self._hash_versions:
            return select(_matches)
        return select(*(c for c in _matches.c if c.name != "hash_version"), literal(1).label("hash_version"))

    async def _has_keyframes(self) -> bool:
        if self._keyframes_table is None:
            async with self._engine.connect() as conn:
                self._keyframes_table = await conn.run_sync(lambda c: inspect(c).has_table("keyframes"))
        return self._keyframes_table


def _summary(row: Any) -> MatchSummary:
    return MatchSummary(
        match_id=row["match_id"],
        game=row["game"],
        game_version=row["game_version"],
        status=row["status"],
        last_tick=row["last_tick"],
        tick_rate=row["tick_rate"],
        created_at=row["created_at"],
        final_hash=row["final_hash"],
        stats=orjson.loads(row["stats"]) if row["stats"] else {},
    )
