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

import asyncio
import importlib
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from typing import Any

from tickline.replays.reader import LogReader
from tickline.replays.replay import Replay
from tickline.shared.game import Rules, State
from tickline.shared.games import game_class
from tickline.shared.logformat import Divergence, MatchHeader


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


async def verify_match(
    reader: LogReader, match_id: str, rules_version: int | None = None, workers: int = 1
) -> VerifyReport:
    """Re-simulate ``match_id`` under the rules it was recorded with (or ``rules_version``),
    in a worker thread (and, for a long match, ``workers`` processes: :func:`verify_replay`)."""
    header, _summary = await reader.match(match_id)
    version = header.game_version if rules_version is None else rules_version
    game_class(header.game, version)  # GameNotInstalled propagates: not a verdict
    try:
        replay = await Replay.from_log(reader, header.match_id, rules_version=rules_version)
    except ValueError as exc:  # the stored config does not fit these rules
        return _config_refused(header, version, _summary.status, exc)
    return await asyncio.to_thread(verify_replay, replay, workers)


# Below this many ticks (about 5 minutes at 60 Hz) starting processes costs more than it saves.
PARALLEL_FROM = 20_000


def verify_replay(replay: Replay, workers: int = 1, parallel_from: int = PARALLEL_FROM) -> VerifyReport:
    """Re-simulate a whole replay under its rules: every tick, every keyframe, the end.

    With ``workers`` > 1 and at least ``parallel_from`` ticks, the match is cut at its
    keyframes into segments re-simulated in that many processes: each segment starts
    from the keyframe that ends the one before, which that one checks against the state
    it replays to, so the verdict (and the first bad tick) is the one a single pass gives.
    """
    header = replay.header
    report = VerifyReport(
        match_id=header.match_id,
        verified=False,
        ticks=0,
        keyframes=0,
        status=replay.status,
        final_state_hash="",
        rules_version=replay.rules.version,
    )
    cuts = _cuts(replay, workers * 4) if workers > 1 and replay.ticks >= parallel_from else []
    segments = _in_processes(replay, cuts, workers) if cuts else [check_segment(replay, 1, replay.ticks)]
    report = _judge(replay, segments, report)
    if replay.rules.version != header.game_version and not report.verified:
        report.reason = (
            f"under {header.game} rules version {replay.rules.version} (recorded under {header.game_version}), "
            f"tick {report.first_bad_tick} differs: {report.reason}"
        )
    return report


@dataclass(slots=True)
class Segment:
    """What re-simulating ticks ``start``..``stop`` found."""

    start: int
    stop: int
    ok_through: int = 0  # the last tick that replayed to its stored hash
    keyframes: int = 0
    final_hash: str = ""
    bad: tuple[int, str] | None = None  # (tick, why) of the first tick that did not hold


def check_segment(replay: Replay, start: int, stop: int) -> Segment:
    """Re-simulate ticks ``start``..``stop`` from the keyframe at ``start - 1`` (or the beginning),
    checking every tick's hash and every keyframe on the way."""
    found = Segment(start, stop, ok_through=start - 1)
    try:
        state = replay.keyframe_state(start - 1) if start > 1 else replay.rules.initial_state(replay.header.seed)
        for frame in replay.run_from(state, start, stop + 1):
            if frame.tick in replay.keyframes:
                kept = replay.keyframe_state(frame.tick)  # Divergence when unreadable or not its own hash
                if replay.hash(kept) != frame.hash:
                    raise Divergence(frame.tick, f"keyframe at tick {frame.tick} does not hold the replayed state")
                found.keyframes += 1
            found.ok_through = frame.tick
        found.final_hash = replay.hash(state)
    except Divergence as exc:
        found.bad = (exc.tick, str(exc))
    return found


def _cuts(replay: Replay, pieces: int) -> list[tuple[int, int]]:
    """(start, stop) of about ``pieces`` segments, each after a keyframe; none without keyframes
    or with a gap (a single pass names a gap best)."""
    if len(replay.steps) != replay.ticks or not replay.keyframes:
        return []
    size = max(1, replay.ticks // pieces)
    cuts, start = [], 1
    for tick in sorted(t for t in replay.keyframes if t < replay.ticks):
        if tick - start + 1 >= size:
            cuts.append((start, tick))
            start = tick + 1
    cuts.append((start, replay.ticks))
    return cuts if len(cuts) > 1 else []


def _in_processes(replay: Replay, cuts: list[tuple[int, int]], workers: int) -> list[Segment]:
    cls = type(replay.rules)
    spec = f"{cls.__module__}:{cls.__qualname__}"
    jobs = []
    for start, stop in cuts:
        steps = replay.steps[start - 1 : stop]
        keyframes = {t: kf for t, kf in replay.keyframes.items() if start - 1 <= t <= stop}
        jobs.append((spec, replay.header, steps, keyframes, start, stop))
    # spawn: a fork of a process with an event loop and database threads is not safe.
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=min(workers, len(jobs)), mp_context=context) as pool:
        return list(pool.map(_segment_job, *zip(*jobs, strict=True)))


def _segment_job(
    spec: str, header: MatchHeader, steps: list[Any], keyframes: dict[int, tuple[bytes, str]], start: int, stop: int
) -> Segment:
    module, _, name = spec.partition(":")
    cls = getattr(importlib.import_module(module), name)
    return check_segment(Replay(header, steps, keyframes, rules=cls(header.config)), start, stop)


def _judge(replay: Replay, segments: list[Segment], report: VerifyReport) -> VerifyReport:
    for segment in segments:
        report.keyframes += segment.keyframes
        report.ticks = segment.ok_through
        if segment.bad is not None:
            return _fail(report, *segment.bad)
    report.final_state_hash = segments[-1].final_hash
    keyframes = replay.keyframes
    if replay.last_tick > report.ticks:
        return _fail(
            report,
            report.ticks + 1,
            f"the log says tick {replay.last_tick} was committed, but only {report.ticks} are stored",
        )
    stray = sorted(t for t in keyframes if t > report.ticks)
    if stray:
        return _fail(report, stray[0], f"a keyframe at tick {stray[0]} lies beyond the last stored tick")
    if replay.status != "running" and replay.final_hash and replay.final_hash != report.final_state_hash:
        return _fail(report, report.ticks, "final state hash differs from the one recorded at the match's end")
    report.verified = True
    return report


def _config_refused(header: MatchHeader, version: int, status: str, exc: Exception) -> VerifyReport:
    return VerifyReport(
        match_id=header.match_id,
        verified=False,
        ticks=0,
        keyframes=0,
        status=status,
        final_state_hash="",
        rules_version=version,
        reason=f"the match's config does not fit {header.game} rules version {version}: {exc}",
    )


async def state_at(reader: LogReader, match_id: str, tick: int) -> tuple[Rules, State]:
    """The match's state after ``tick`` (see :meth:`Replay.state_at`)."""
    replay = await Replay.from_log(reader, match_id)
    if not 0 <= tick <= replay.last_tick:
        raise ValueError(f"tick {tick} is outside the match (0 to {replay.last_tick})")
    return replay.rules, replay.state_at(tick)


def _fail(report: VerifyReport, tick: int, reason: str) -> VerifyReport:
    report.verified = False
    report.first_bad_tick = tick
    report.reason = reason
    return report
