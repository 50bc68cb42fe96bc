"""Recorded matches for tests: a scripted arena match written through the real event log writer.

Players stand on a line and fire at their neighbours, so that a small map gives
kills (marks) within a few seconds; the same script always gives the same match.
"""

from __future__ import annotations

import asyncio
from typing import Any

from tickline.server.eventlog import EventLog, KeyframeRecord, MatchEnd, PlayerRecord, TickRecord
from tickline.shared.game import HASH_VERSION, Rules, TickInputs, state_hash
from tickline.shared.games import make_rules
from tickline.shared.logformat import MatchHeader

TICKS = 240
MATCH = "m" * 32
# A small arena where the scripted players hit each other often.
DUEL = {"time_limit_s": 60, "width": 300, "height": 300, "fire_cooldown_ms": 100, "view_radius": 120}


def scripted_inputs(rules: Rules, tick: int, players: int = 2) -> TickInputs:
    """Tick ``tick``'s inputs: everyone joins at tick 1, then moves and fires by a fixed pattern."""
    pids = range(1, players + 1)
    inputs = TickInputs(joins=[(pid, f"p{pid}") for pid in pids] if tick == 1 else [])
    for pid in pids:
        inputs.inputs[pid] = rules.validate_input(
            {
                "mx": (tick // 20 + pid) % 3 - 1,
                "my": (tick // 30) % 3 - 1,
                "ax": 3 - pid * 2,
                "ay": 1,
                "fire": tick % 3 == 0,
            }
        )
    return inputs


async def write_match(
    url: str,
    match_id: str = MATCH,
    seed: int = 11,
    ticks: int = TICKS,
    keyframe_every: int = 60,
    end: bool = True,
    server_id: str = "A",
    config: dict[str, Any] | None = None,
    players: int = 2,
    hash_version: int = HASH_VERSION,
) -> dict[int, str]:
    """Play a scripted arena match through the real writer; returns tick -> hash."""
    rules = make_rules("arena", config if config is not None else {"time_limit_s": 60})
    header = MatchHeader(
        match_id=match_id,
        game="arena",
        game_version=rules.version,
        seed=seed,
        config=rules.config,
        tick_rate=60,
        send_rate=30,
        created_at=1.0,
        hash_version=hash_version,
    )
    log = await EventLog.open(url, server_id)
    writer = asyncio.create_task(log.run())
    await log.create_match(header)
    for pid in range(1, players + 1):
        log.add_player(PlayerRecord(match_id, pid, f"p{pid}", ""))
    state = rules.initial_state(seed)
    hashes = {}
    for tick in range(1, ticks + 1):
        inputs = scripted_inputs(rules, tick, players)
        events = rules.step(state, inputs)
        hashes[tick] = state_hash(state, hash_version)
        log.append(TickRecord(match_id, tick, inputs.to_record(), events, hashes[tick]))
        if tick % keyframe_every == 0:
            log.add_keyframe(KeyframeRecord(match_id, tick, rules.dump_state(state), hashes[tick]))
        if tick % 50 == 0:
            await asyncio.sleep(0)  # let the writer commit in groups, as the server's loop does
        if rules.is_over(state):
            break
    if end:
        log.end_match(MatchEnd(match_id, "finished", tick, state_hash(state, hash_version), {"ticks": tick}))
    log.stop()
    await writer
    assert log.lag_ticks(match_id) == 0
    await log.dispose()
    return hashes
