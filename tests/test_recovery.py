"""Crash recovery for real: kill -9 a serving process mid-match, start it again, play on."""

from __future__ import annotations

import asyncio
import signal
import socket
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.support import wait_for_tick
from tickline.bots.swarm import run_swarm
from tickline.replays.reader import LogReader
from tickline.replays.verify import verify_match
from tickline.shared.logformat import decode_payload

TICKLINE = [sys.executable, "-m", "tickline"]


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def _serve(*args: str) -> tuple[asyncio.subprocess.Process, dict[str, Any]]:
    proc = await asyncio.create_subprocess_exec(
        *TICKLINE,
        "serve",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stderr is not None
    line = await asyncio.wait_for(proc.stdout.readline(), 30)
    assert line, (await proc.stderr.read()).decode()
    return proc, orjson.loads(line)


@pytest.mark.slow
async def test_killed_server_resumes_its_match_and_bots_get_their_players_back(tmp_path: Path) -> None:
    port = _free_udp_port()
    args = [
        "--port",
        str(port),
        "--data-dir",
        str(tmp_path),
        "--durability",
        "tick",
        "--set",
        "time_limit_s=10",
        "--set",
        "score_limit=1000",
    ]
    first, ready = await _serve(*args, "--metrics-port", "0", "--no-require-tokens")
    assert ready["resumed"] == []
    swarm = asyncio.create_task(
        run_swarm("127.0.0.1", port, 4, duration=40, cafile=ready["cert"], reconnect_s=20, details=True)
    )
    await wait_for_tick(ready["metrics_port"], 120)  # two seconds of play, then the crash
    first.kill()  # SIGKILL: no shutdown, no last flush
    assert await first.wait() == -signal.SIGKILL

    second, ready = await _serve(*args)
    try:
        [resumed] = ready["resumed"]
        assert resumed["tick"] > 60  # it had played for seconds before the kill
        assert ready["start_s"] < 5
        report = await asyncio.wait_for(swarm, 40)
    finally:
        second.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(second.wait(), 15) == 0

    match_id = resumed["match_id"]
    assert report["connected"] == 4 and report["errors"] == 0, report
    assert report["closed_by_server"] == {"match over": 4}, report
    for bot in report["per_bot"]:
        assert bot["match_id"] == match_id
        assert bot["reconnects"] >= 1, bot
        # With --durability tick, no client ever held a tick the crash could lose.
        assert bot["ticks_held"][0] < resumed["tick"], (bot, resumed)

    async with await LogReader.open(f"sqlite+aiosqlite:///{tmp_path / 'tickline.db'}") as reader:
        result = await verify_match(reader, match_id)
        _, summary = await reader.match(match_id)
        kinds = []
        async for stored in reader.ticks(match_id):
            kinds += [e["k"] for e in decode_payload(stored.payload)[1]]
    assert result.verified, result.reason
    assert result.ticks == 10 * 60 and summary.status == "finished"
    assert summary.stats["resumed_at"] == resumed["tick"] - 1
    # The same four players played the whole match: nobody left, nobody new joined.
    assert kinds.count("join") == 4 and "leave" not in kinds
