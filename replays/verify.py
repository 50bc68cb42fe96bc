"""Verify a match, and seek in it: re-simulation from the header, the inputs and keyframes.

A match verifies when its ticks run 1..N with no gap, every payload decodes,
every recomputed state hash equals the stored one, every keyframe holds the
state the replay reaches at its tick, and, for a match that ended, N is the
last tick its end record names and the final hash matches. The first tick
where any of that fails is reported, with why.

A match can also be re-simulated under another version of its game's rules
(``rules_version``): then the first tick whose state differs from the recorded
one is where the new rules change what happened, which makes every stored
match a regression test for a change to the rules. A game (or version) this
installation lacks raises :class:`~tickline.shared.games.GameNotInstalled`: that
is not a verdict on the log.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from tickline.replays.reader import LogReader, MatchSummary
from tickline.shared.game import Rules, State, state_hash
from tickline.shared.games import game_class, make_rules
from tickline.shared.logformat import CorruptRecord, Divergence, MatchHeader, decode_state, replay_stored_tick


@dataclass(slots=True)
class VerifyReport:
    match_id: str
    verified: bool
    ticks: int  # ticks checked
    keyframes: int  # keyframes checked
    status: str  # the match's stored status
    final_state_hash: str
    first_bad_tick: int | None = None
    reason: str = ""
    rules_version: int = 0  # the version of the game's rules the match was re-simulated under

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        if self.verified:
            out.pop("first_bad_tick")
            out.pop("reason")
        return out


async def verify_match(reader: LogReader, match_id: str, rules_version: int | None = None) -> VerifyReport:
    """Re-simulate ``match_id`` under the rules it was recorded with (or ``rules_version``)."""
    header, summary = await reader.match(match_id)
    report = VerifyReport(
        match_id=header.match_id,
        verified=False,
        ticks=0,
        keyframes=0,
        status=summary.status,
        final_state_hash="",
        rules_version=header.game_version if rules_version is None else rules_version,
    )
    cls = game_class(header.game, report.rules_version)  # GameNotInstalled propagates: not a verdict
    try:
        rules = cls(header.config)
    except ValueError as exc:  # the stored config does not fit these rules
        report.reason = f"the match's config does not fit {header.game} rules version {cls.version}: {exc}"
        return report
    report = await _verify(reader, header, summary, rules, report)
    if cls.version != header.game_version and not report.verified:
        report.reason = (
            f"under {header.game} rules version {cls.version} (recorded under {header.game_version}), "
            f"tick {report.first_bad_tick} differs: {report.reason}"
        )
    return report


async def _verify(
    reader: LogReader, header: MatchHeader, summary: MatchSummary, rules: Rules, report: VerifyReport
) -> VerifyReport:
    state = rules.initial_state(header.seed)
    keyframes = await reader.keyframe_ticks(header.match_id)
    expected = 1
    try:
        async for stored in reader.ticks(header.match_id):
            replay_stored_tick(rules, state, expected, stored.tick, stored.payload, stored.hash)
            if stored.tick in keyframes:
                await _check_keyframe(reader, rules, header.match_id, stored.tick, stored.hash)
                report.keyframes += 1
            report.ticks = expected
            expected += 1
    except Divergence as exc:
        return _fail(report, exc.tick, str(exc))
    report.final_state_hash = state_hash(state)
    if summary.last_tick > report.ticks:
        return _fail(
            report,
            report.ticks + 1,
            f"the log says tick {summary.last_tick} was committed, but only {report.ticks} are stored",
        )
    stray = sorted(t for t in keyframes if t > report.ticks)
    if stray:
        return _fail(report, stray[0], f"a keyframe at tick {stray[0]} lies beyond the last stored tick")
    if summary.status != "running" and summary.final_hash and summary.final_hash != report.final_state_hash:
        return _fail(report, report.ticks, "final state hash differs from the one recorded at the match's end")
    report.verified = True
    return report


async def _check_keyframe(reader: LogReader, rules: Rules, match_id: str, tick: int, tick_hash: str) -> None:
    keyframe = await reader.keyframe(match_id, tick)
    assert keyframe is not None
    try:
        kept = state_hash(rules.load_state(decode_state(keyframe.state)))
    except (CorruptRecord, ValueError, KeyError, TypeError) as exc:
        raise Divergence(tick, f"keyframe at tick {tick} cannot be read: {exc}") from None
    if kept != tick_hash or keyframe.hash != tick_hash:
        raise Divergence(tick, f"keyframe at tick {tick} does not hold the replayed state")


async def state_at(reader: LogReader, match_id: str, tick: int) -> tuple[Rules, State]:
    """The match's state after ``tick``: from the newest keyframe at or before it, replaying the rest.

    Seeking costs at most one keyframe interval of re-simulation. Every tick
    replayed is checked against its stored hash on the way.
    """
    header, summary = await reader.match(match_id)
    if not 0 <= tick <= summary.last_tick:
        raise ValueError(f"tick {tick} is outside the match (0 to {summary.last_tick})")
    rules = make_rules(header.game, header.config, version=header.game_version)
    keyframe = await reader.keyframe(header.match_id, tick, at_or_before=True)
    if keyframe is not None:
        state = rules.load_state(decode_state(keyframe.state))
        if state_hash(state) != keyframe.hash:
            raise Divergence(keyframe.tick, f"keyframe at tick {keyframe.tick} does not match its stored hash")
        after = keyframe.tick
    else:
        state, after = rules.initial_state(header.seed), 0
    expected = after + 1
    async for stored in reader.ticks(header.match_id, after=after):
        if stored.tick > tick:
            break
        replay_stored_tick(rules, state, expected, stored.tick, stored.payload, stored.hash)
        expected += 1
    if expected - 1 != tick:
        raise Divergence(expected, f"tick {expected} is missing from the log")
    return rules, state


def _fail(report: VerifyReport, tick: int, reason: str) -> VerifyReport:
    report.verified = False
    report.first_bad_tick = tick
    report.reason = reason
    return report
