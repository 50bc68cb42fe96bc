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
    player_id: int = 0
    reconnects: int = 0
    # The newest tick this bot held (and so acknowledged) on each connection.
    ticks_held: list[int] = field(default_factory=list)
    events: list[str] = field(default_factory=list)


async def run_bot(host: str, port: int, name: str, duration: float, seed: int,
                  cafile: Path | str | None = None, reconnect_s: float = 0.0,
                  stall_s: float = 2.0) -> BotResult:
    """One arena bot: connect, play until ``duration`` passes or the server ends it.

    With ``reconnect_s`` > 0, a bot whose connection drops, or that hears
    nothing for ``stall_s``, comes back with its token for up to that long and
    plays on as the same player.
    """
    result = BotResult()
    token = ""
    world = None
    bot: ArenaBot | None = None
    started = time.monotonic()
    deadline = started + duration
    give_up = 0.0
    while time.monotonic() < deadline:
        try:
            async with GameClient.connect(host, port, name, cafile=cafile, token=token, world=world,
                                          timeout=2.0 if token else 10.0) as client:
                if not token:
                    result.connected = True
                    result.match_id, result.player_id = client.match_id, client.player_id
                    bot = ArenaBot(client.player_id, seed, client.welcome.config if client.welcome else None)
                else:
                    result.reconnects += 1
                token, world = client.token, client.world
                assert bot is not None
                lost = await _play(client, bot, deadline, stall_s)
                result.ticks_held.append(client.world.tick)
                result.deltas += client.stats.deltas_applied
                result.bytes_down += client.stats.bytes_down
                result.bytes_up += client.stats.bytes_up
                result.inputs_sent += client.stats.inputs_sent
                result.events += [e.kind for e in client.events]
                result.close_reason = client.close_reason if client.closed.is_set() else ""
                if not lost or reconnect_s <= 0:
                    break
                result.close_reason = client.close_reason or "no updates"
                give_up = time.monotonic() + reconnect_s
                if not client.closed.is_set():
                    client.abandon()
        except ClientError as exc:
            if not token or time.monotonic() > give_up:
                result.error = str(exc)
                break
            await asyncio.sleep(0.2)
    result.seconds = time.monotonic() - started
    return result


async def _play(client: GameClient, bot: ArenaBot, deadline: float, stall_s: float) -> bool:
    """Play one input per tick until the deadline or the end; True when the
    connection was lost (or went silent for ``stall_s``) rather than ended."""
    rate = client.welcome.tick_rate if client.welcome else 60
    loop = asyncio.get_running_loop()
    next_tick = loop.time()
    while not client.closed.is_set() and time.monotonic() < deadline:
        next_tick += 1 / rate
        delay = next_tick - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        else:
            next_tick = loop.time()  # fell behind: do not try to catch up
        if client.closed.is_set():
            break
        if client.silent_for() > stall_s:
            return True
        client.send_input(bot.decide(client.world, client.now()))
    return client.closed.is_set() and client.close_reason not in NORMAL_ENDS


async def run_swarm(host: str, port: int, n: int, duration: float, *,
                    cafile: Path | str | None = None, ramp_s: float = 0.02,
                    name_prefix: str = "bot", seed: int = 1, reconnect_s: float = 0.0,
                    details: bool = False) -> dict[str, Any]:
    """Run ``n`` bots at once (started ``ramp_s`` apart) and summarise them."""
    async def staggered(i: int) -> BotResult:
        await asyncio.sleep(i * ramp_s)
        return await run_bot(host, port, f"{name_prefix}{i + 1}", duration, seed + i, cafile, reconnect_s)

    async with asyncio.TaskGroup() as tg:
        tasks = [tg.create_task(staggered(i)) for i in range(n)]
    results = [t.result() for t in tasks]
    report = summarize(results)
    if details:
        report["per_bot"] = [
            {"player_id": r.player_id, "match_id": r.match_id, "reconnects": r.reconnects,
             "ticks_held": r.ticks_held, "close_reason": r.close_reason, "error": r.error}
            for r in results
        ]
    return report


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
        "reconnects": sum(r.reconnects for r in connected),
        "match_ids": sorted({r.match_id for r in connected}),
        "errors": sum(errors.values()),
        "error_reasons": dict(errors),
    }
