"""Helpers the tests share (fixtures are in conftest.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

PG_URL_ENV = "TICKLINE_TEST_PG_URL"


async def until(condition: Callable[[], object], timeout: float = 10.0, every: float = 0.01) -> None:
    """Until ``condition()`` holds: state the code exposes (a counter, a flag), read between
    turns of the event loop; TimeoutError after ``timeout`` seconds."""
    async with asyncio.timeout(timeout):
        while not condition():  # noqa: ASYNC110 - what is awaited is the code's own state, no event of ours
            await asyncio.sleep(every)


async def wait_for_tick(metrics_port: int, tick: int, timeout: float = 30.0) -> dict[str, Any]:
    """Until a match of the server whose HTTP side is on ``metrics_port`` has run ``tick``
    ticks, as its lobby list says (``/matches``); that match's entry."""
    import aiohttp

    async with asyncio.timeout(timeout), aiohttp.ClientSession() as http:
        while True:
            async with http.get(f"http://127.0.0.1:{metrics_port}/matches") as response:
                listed: list[dict[str, Any]] = await response.json()
            done = [m for m in listed if m["tick"] >= tick]
            if done:
                return done[0]
            await asyncio.sleep(0.05)


async def pg_maintenance_connect(maintenance_url: str) -> Any:
    import asyncpg
    from sqlalchemy.engine import make_url

    dsn = make_url(maintenance_url).set(drivername="postgresql")
    return await asyncpg.connect(dsn.render_as_string(hide_password=False), timeout=15)
