"""Helpers the tests share (fixtures are in conftest.py)."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

PG_URL_ENV = "TICKLINE_TEST_PG_URL"
TICKLINE = [sys.executable, "-m", "tickline"]


async def run(
    *argv: str, cwd: Path | None = None, timeout: float = 120, env: dict[str, str] | None = None
) -> tuple[int, str, str]:
    """Run a command to its end: (exit status, stdout, stderr); ``env`` adds to this process's.
    The command runs as a user runs it: without asyncio's debug mode (``make test-debug``
    is for the tests' own loop; in a command, its slow-callback warnings would be read as
    the command's output)."""
    inherited = {k: v for k, v in os.environ.items() if k != "PYTHONASYNCIODEBUG"}
    proc = await asyncio.create_subprocess_exec(
        *argv,
        cwd=cwd,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**inherited, **(env or {})},
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout)
    return proc.returncode or 0, out.decode(), err.decode()


async def tickline(*args: str, timeout: float = 60, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    """The `tickline` command, as a user runs it."""
    return await run(*TICKLINE, *args, timeout=timeout, env=env)


async def serve(
    data_dir: Path, *args: str, loop: str | None = None, python: str = sys.executable
) -> tuple[asyncio.subprocess.Process, Any]:
    """`tickline [--loop LOOP] serve --port 0 --data-dir DATA_DIR ARGS` until its ready line:
    (the process, the line)."""
    proc = await asyncio.create_subprocess_exec(
        python,
        "-m",
        "tickline",
        *(["--loop", loop] if loop else []),
        "serve",
        "--port",
        "0",
        "--data-dir",
        str(data_dir),
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stderr is not None
    line = await asyncio.wait_for(proc.stdout.readline(), 30)
    assert line, (await proc.stderr.read()).decode()
    return proc, orjson.loads(line)


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


class RecordingChannel:
    """Stands in for a transport under a Session in a unit test: records what the session
    sends. (The real transports are tested over loopback.)"""

    peer = "test"

    def __init__(self) -> None:
        self.datagrams: list[bytes] = []
        self.reliable: list[bytes] = []
        self.closed: str | None = None

    def send_reliable(self, body: bytes) -> None:
        self.reliable.append(body)

    def send_datagram(self, body: bytes) -> None:
        self.datagrams.append(body)

    def close(self, reason: str, error: bool = False) -> None:
        self.closed = reason

    def offer_fastpath(self) -> Any:
        return None  # no fast path beside this channel

    def fast_sender(self) -> Any:
        return None


class MatchStandIn:
    """What a Session reads of its match: the rules, and the tick."""

    def __init__(self, game: str = "arena") -> None:
        from tickline.shared.games import make_rules

        self.rules = make_rules(game)
        self.tick = 0


def session_in_match(**options: Any) -> tuple[Any, RecordingChannel, MatchStandIn]:
    """A Session (``options``: its clock, limits, ack timeout) on a RecordingChannel, joined
    to a MatchStandIn as player 1."""
    from tickline.server.session import Session

    channel, match = RecordingChannel(), MatchStandIn()
    session = Session(channel, **options)
    session.join(match, 1)  # type: ignore[arg-type]  # (the stand-in has what a session reads of its match)
    return session, channel, match
