"""Fixtures: a real tickline server on a loopback QUIC port with a real SQLite log, and fresh
PostgreSQL databases on the server that .ci/pg.sh started."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support import PG_URL_ENV, pg_maintenance_connect
from tickline.server.app import Server, ServerConfig
from tickline.server.match import MatchSettings

# --- asyncio: errors must reach someone, and the end-to-end tests run on both loops --------


class _LoopErrors(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage().splitlines()[0])


@pytest.fixture(autouse=True)
def errors_reach_someone() -> Iterator[None]:
    """Fail a test whose event loop had to report an error that nobody handled: a task or
    future whose exception was never retrieved, an exception in a callback."""
    caught = _LoopErrors()
    logger = logging.getLogger("asyncio")
    logger.addHandler(caught)
    try:
        yield
        gc.collect()  # a task dropped with an exception reports it when it is collected
    finally:
        logger.removeHandler(caught)
    if caught.messages:
        pytest.fail(f"the event loop reported {len(caught.messages)} unhandled errors: {caught.messages[:3]}")


def pytest_asyncio_loop_factories(config: pytest.Config, item: pytest.Item) -> dict[str, Callable[[], Any]]:
    """Async tests run on asyncio's own loop; those marked ``both_loops`` once more on uvloop."""
    factories: dict[str, Callable[[], Any]] = {"asyncio": asyncio.new_event_loop}
    if item.get_closest_marker("both_loops") is None:
        return factories
    try:
        import uvloop
    except ImportError:  # uvloop is the 'fast' extra; without it, asyncio's loop alone
        return factories
    factories["uvloop"] = uvloop.new_event_loop
    return factories


class RunningServer:
    def __init__(self, server: Server, task: asyncio.Task[None], data_dir: Path) -> None:
        self.server = server
        self.task = task
        self.data_dir = data_dir
        self.stopped = False

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def cert(self) -> Path:
        assert self.server.cert_path is not None
        return self.server.cert_path

    @property
    def db_url(self) -> str:
        return self.server.config.database_url()

    async def stop(self) -> None:
        """Stop the server and wait for it; its errors are raised here, to the test."""
        self.stopped = True
        self.server.stop()
        await asyncio.wait_for(self.task, 15)


@pytest.fixture
async def start_server(tmp_path: Path) -> AsyncIterator[Callable[..., Any]]:
    """``await start_server(game_config={...}, seed=..., ...)`` -> a RunningServer, stopped at teardown.
    ``match_options`` are further MatchSettings (``{"game": "goofspiel"}``); the rest, ServerConfig's.
    Unlike a real server's, ``require_tokens`` defaults to False even with the HTTP side on: most
    tests' clients connect directly; the tests of tokens and of that default ask for theirs."""
    running: list[RunningServer] = []

    async def start(
        game_config: dict[str, Any] | None = None,
        seed: int | None = 7,
        tick_rate: int = 60,
        send_rate: int = 30,
        match_options: dict[str, Any] | None = None,
        **options: Any,
    ) -> RunningServer:
        data_dir = tmp_path / f"server{len(running)}"
        options.setdefault("require_tokens", False)
        config = ServerConfig(
            port=0,
            data_dir=data_dir,
            match=MatchSettings(
                game_config=game_config or {},
                seed=seed,
                tick_rate=tick_rate,
                send_rate=send_rate,
                **(match_options or {}),
            ),
            **options,
        )
        server = Server(config)
        task = asyncio.create_task(server.run())
        ready = asyncio.create_task(server.ready.wait())
        await asyncio.wait({task, ready}, timeout=15, return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            ready.cancel()
            task.result()  # raises the server's start-up error
        assert server.ready.is_set(), "server did not become ready within 15 s"
        handle = RunningServer(server, task, data_dir)
        running.append(handle)
        return handle

    yield start
    for handle in running:
        if handle.stopped:
            continue  # the test stopped it and saw how that went
        if not handle.task.done():
            await handle.stop()
        else:
            handle.task.result()  # a server that died must fail the test


# --- PostgreSQL: a fresh database per test on the server that .ci/pg.sh started ---------


@pytest.fixture
async def make_pg_url() -> AsyncIterator[Callable[[], Awaitable[str]]]:
    """``await make_pg_url()`` -> the URL of a new, empty database; all are dropped at teardown.

    Skips the test when TICKLINE_TEST_PG_URL (the maintenance URL printed by
    ``.ci/pg.sh start``) is not set.
    """
    maintenance_url = os.environ.get(PG_URL_ENV)
    if not maintenance_url:
        pytest.skip(f"PostgreSQL not configured: set {PG_URL_ENV} (see .ci/pg.sh)")
    from sqlalchemy.engine import make_url

    created: list[str] = []

    async def make() -> str:
        name = f"tl_{uuid.uuid4().hex[:12]}"
        conn = await pg_maintenance_connect(maintenance_url)
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()
        created.append(name)
        return make_url(maintenance_url).set(database=name).render_as_string(hide_password=False)

    yield make
    if created:
        conn = await pg_maintenance_connect(maintenance_url)
        try:
            for name in created:
                # Connections a test left open (an engine not disposed) must not keep it.
                await conn.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE datname = $1 AND pid <> pg_backend_pid()",
                    name,
                )
                await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()


@pytest.fixture
async def pg_url(make_pg_url: Callable[[], Awaitable[str]]) -> str:
    """``postgresql+asyncpg://postgres@127.0.0.1:PORT/tl_<12 hex>``: a fresh, empty
    database, dropped at teardown. Skips when TICKLINE_TEST_PG_URL is unset."""
    return await make_pg_url()


@pytest.fixture(params=["sqlite", "postgresql"], ids=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The event log's database URL, once per backend: SQLite in tmp_path, and a fresh
    PostgreSQL database (skipped like ``pg_url`` when PostgreSQL is not configured)."""
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path}/log.db"
    url: str = request.getfixturevalue("pg_url")
    return url
