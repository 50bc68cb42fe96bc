"""The database fixtures themselves: ``db_url`` (SQLite and PostgreSQL) and ``pg_url``."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from sqlalchemy import Column, Integer, MetaData, String, Table, func, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

metadata = MetaData()
probe = Table(
    "probe",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("body", String(64), nullable=False),
)


async def test_db_url_round_trip(db_url: str) -> None:
    engine = create_async_engine(db_url)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(metadata.create_all)
            await conn.execute(probe.insert(), [{"id": 1, "body": "first"}, {"id": 2, "body": "second"}])
        async with engine.connect() as conn:
            rows = (await conn.execute(select(probe.c.id, probe.c.body).order_by(probe.c.id))).all()
        assert [tuple(row) for row in rows] == [(1, "first"), (2, "second")]
        assert engine.dialect.name == make_url(db_url).get_backend_name()
    finally:
        await engine.dispose()


async def _user_tables(url: str) -> tuple[str, list[str]]:
    engine = create_async_engine(url)
    try:
        async with engine.connect() as conn:
            name = (await conn.execute(select(func.current_database()))).scalar_one()
            tables = (
                (
                    await conn.execute(
                        text(
                            "SELECT tablename FROM pg_catalog.pg_tables"
                            " WHERE schemaname NOT IN ('pg_catalog', 'information_schema')"
                        )
                    )
                )
                .scalars()
                .all()
            )
        return name, list(tables)
    finally:
        await engine.dispose()


async def test_pg_databases_are_distinct_and_empty(pg_url: str, make_pg_url: Callable[[], Awaitable[str]]) -> None:
    other_url = await make_pg_url()
    assert make_url(pg_url).database != make_url(other_url).database
    database = make_url(pg_url).database
    assert database is not None and database.startswith("tl_")

    first, first_tables = await _user_tables(pg_url)
    second, second_tables = await _user_tables(other_url)
    assert first == make_url(pg_url).database and second == make_url(other_url).database
    assert first_tables == [] and second_tables == []

    # What one test writes is not seen by another database.
    engine = create_async_engine(pg_url)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(metadata.create_all)
    finally:
        await engine.dispose()
    assert (await _user_tables(pg_url))[1] == ["probe"]
    assert (await _user_tables(other_url))[1] == []
