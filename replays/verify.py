"""Verify a match: re-simulate it from its header and inputs and compare every stored hash.

A match verifies when its ticks run 1..N with no gap, every payload decodes,
every recomputed state hash equals the stored one, and, for a match that
ended, N is the last tick its end record names and the final hash matches.
The first tick where any of that fails is reported, with why.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from replays.reader import LogReader
from shared.game import TickInputs, state_hash
from shared.games import UnknownGame, make_rules
from shared.logformat import CorruptRecord, decode_payload


@dataclass(slots=True)
class VerifyReport:
    match_id: str
    verified: bool
    ticks: int  # ticks checked
    status: str  # the match's stored status
    final_state_hash: str
    first_bad_tick: int | None = None
    reason: str = ""

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        if self.verified:
            out.pop("first_bad_tick")
            out.pop("reason")
        return out


async def verify_match(reader: LogReader, match_id: str) -> VerifyReport:
    header, summary = await reader.match(match_id)
    report = VerifyReport(match_id=header.match_id, verified=False, ticks=0, status=summary.status,
                          final_state_hash="")
    try:
        rules = make_rules(header.game, header.config, version=header.game_version)
    except (UnknownGame, ValueError) as exc:
        report.reason = str(exc)
        return report
    state = rules.initial_state(header.seed)
    expected = 1
    async for stored in reader.ticks(header.match_id):
        if stored.tick != expected:
            return _fail(report, expected, f"tick {expected} is missing from the log (next stored is {stored.tick})")
        try:
            inputs, _events = decode_payload(stored.payload)
            rules.step(state, TickInputs.from_record(inputs))
        except (CorruptRecord, ValueError, KeyError, TypeError) as exc:
            return _fail(report, stored.tick, f"tick record cannot be replayed: {exc}")
        computed = state_hash(state)
        if computed != stored.hash:
            return _fail(report, stored.tick, f"state hash differs at tick {stored.tick}: stored {stored.hash}, replayed {computed}")
        report.ticks = stored.tick
        expected += 1
    report.final_state_hash = state_hash(state)
    if summary.last_tick > report.ticks:
        return _fail(report, report.ticks + 1, f"the log says tick {summary.last_tick} was committed, but only {report.ticks} are stored")
    if summary.status in ("finished", "stopped") and summary.final_hash and summary.final_hash != report.final_state_hash:
        return _fail(report, report.ticks, "final state hash differs from the one recorded at the match's end")
    report.verified = True
    return report


def _fail(report: VerifyReport, tick: int, reason: str) -> VerifyReport:
    report.verified = False
    report.first_bad_tick = tick
    report.reason = reason
    return report
