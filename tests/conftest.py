"""Fixtures: a real tickline server on a loopback QUIC port with a real SQLite log."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from server.app import Server, ServerConfig
from server.match import MatchSettings


class RunningServer:
    def __init__(self, server: Server, task: asyncio.Task[None], data_dir: Path) -> None:
        self.server = server
        self.task = task
        self.data_dir = data_dir

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
        self.server.stop()
        await asyncio.wait_for(self.task, 15)


@pytest.fixture
async def start_server(tmp_path: Path) -> AsyncIterator[Callable[..., Any]]:
    """``await start_server(game_config={...}, seed=..., ...)`` -> a RunningServer, stopped at teardown."""
    running: list[RunningServer] = []

    async def start(game_config: dict[str, Any] | None = None, seed: int | None = 7,
                    tick_rate: int = 60, send_rate: int = 30, **options: Any) -> RunningServer:
        data_dir = tmp_path / f"server{len(running)}"
        config = ServerConfig(
            port=0, data_dir=data_dir,
            match=MatchSettings(game_config=game_config or {}, seed=seed,
                                tick_rate=tick_rate, send_rate=send_rate),
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
        if not handle.task.done():
            await handle.stop()
        else:
            handle.task.result()  # a server that died must fail the test
