"""Run N bots against a server and report what they saw, as one JSON-able dict."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bots.arena_bot import ArenaBot
from bots.client import ClientError, GameClient

log = logging.getLogger("tickline.bots")

NORMAL_ENDS = ("match over", "server shutting down")


@dataclass(slots=True)
class BotResult:
    connected: bool = False
    seconds: float = 0.0
    deltas: int = 0
    bytes_down: int = 0
    bytes_up: int = 0
    inputs_sent: int = 0
    close_reason: str = ""
    error: str = ""
    match_id: str = ""
    events: list[str] = field(default_factory=list)


async def run_bot(host: str, port: int, name: str, duration: float, seed: int,
                  cafile: Path | str | None = None) -> BotResult:
    """One arena bot: connect, play until ``duration`` passes or the server ends it."""
    result = BotResult()
    try:
        async with GameClient.connect(host, port, name, cafile=cafile) as client:
            result.connected = True
            result.match_id = client.match_id
            bot = ArenaBot(client.player_id, seed)
            started = time.monotonic()
            deadline = started + duration
            # One input per delta received; the timeout keeps acks flowing if
            # deltas stop for a moment.
            period = 1.0 / (client.welcome.send_rate if client.welcome else 30)
            while not client.closed.is_set() and time.monotonic() < deadline:
                await client.wait_update(timeout=min(4 * period, max(0.0, deadline - time.monotonic())))
                if client.closed.is_set():
                    break
                client.send_input(bot.decide(client.world.view))
            result.seconds = time.monotonic() - started
            result.close_reason = client.close_reason if client.closed.is_set() else ""
            result.deltas = client.stats.deltas_applied
            result.bytes_down = client.stats.bytes_down
            result.bytes_up = client.stats.bytes_up
            result.inputs_sent = client.stats.inputs_sent
            result.events = [e.kind for e in client.events]
    except ClientError as exc:
        result.error = str(exc)
    return result


async def run_swarm(host: str, port: int, n: int, duration: float, *,
                    cafile: Path | str | None = None, ramp_s: float = 0.02,
                    name_prefix: str = "bot", seed: int = 1) -> dict[str, Any]:
    """Run ``n`` bots at once (started ``ramp_s`` apart) and summarise them."""
    async def staggered(i: int) -> BotResult:
        await asyncio.sleep(i * ramp_s)
        return await run_bot(host, port, f"{name_prefix}{i + 1}", duration, seed + i, cafile)

    async with asyncio.TaskGroup() as tg:
        tasks = [tg.create_task(staggered(i)) for i in range(n)]
    results = [t.result() for t in tasks]
    return summarize(results)


def summarize(results: list[BotResult]) -> dict[str, Any]:
    connected = [r for r in results if r.connected]
    seconds = sum(r.seconds for r in connected) or 1.0
    per_bot_s = seconds  # bot-seconds
    ended = Counter(r.close_reason for r in connected if r.close_reason)
    errors = Counter(r.error for r in results if r.error)
    return {
        "bots": len(results),
        "connected": len(connected),
        "disconnects": sum(n for reason, n in ended.items() if reason not in NORMAL_ENDS),
        "closed_by_server": dict(ended),
        "deltas_per_s_per_bot": round(sum(r.deltas for r in connected) / per_bot_s, 2),
        "bytes_down_per_s_per_bot": round(sum(r.bytes_down for r in connected) / per_bot_s, 1),
        "bytes_up_per_s_per_bot": round(sum(r.bytes_up for r in connected) / per_bot_s, 1),
        "inputs_sent": sum(r.inputs_sent for r in connected),
        "match_ids": sorted({r.match_id for r in connected}),
        "errors": sum(errors.values()),
        "error_reasons": dict(errors),
    }
