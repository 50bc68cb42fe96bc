"""Creating and upgrading the event log's schema with Alembic.

``upgrade(engine)`` brings any log to the newest schema: a new database gets
every revision; a log written before migrations existed (tickline 0.1 made its
tables directly) is recognised and stamped as revision 0001 first.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, inspect
from sqlalchemy.ext.asyncio import AsyncEngine

MIGRATIONS = Path(__file__).parent / "migrations"
FIRST_REVISION = "0001"


def _config(connection: Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


def head() -> str:
    head_revision = ScriptDirectory.from_config(_config()).get_current_head()
    assert head_revision is not None
    return head_revision


def _current(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


def _upgrade(connection: Connection, revision: str) -> tuple[str | None, str | None]:
    config = _config(connection)
    before = _current(connection)
    if before is None and inspect(connection).has_table("matches"):
        command.stamp(config, FIRST_REVISION)
        before = FIRST_REVISION
    command.upgrade(config, revision)
    return before, _current(connection)


async def upgrade(engine: AsyncEngine, revision: str = "head") -> tuple[str | None, str | None]:
    """Upgrade the log to ``revision``; returns (revision before, revision after)."""
    async with engine.begin() as conn:
        return await conn.run_sync(_upgrade, revision)


async def current(engine: AsyncEngine) -> str | None:
    async with engine.connect() as conn:
        return await conn.run_sync(_current)
