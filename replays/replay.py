"""The replay API: one recorded match, opened from the event log or a replay file, to move around in.

A :class:`Replay` holds what the log keeps of a match (its header, each tick's
input record and state hash, its keyframes) and re-simulates the rest: the
state at any tick (``state_at``, from the nearest keyframe at or before it),
the ticks one by one with their inputs and events (``frames``), what any
player was shown at a tick (``view``) or the whole match (``full_view``).
Every tick re-simulated is checked against its stored hash on the way, so a
replay never shows a state the match did not have: a tick that does not hold
raises :class:`~tickline.shared.logformat.Divergence` naming it.

Opening is the only I/O (:func:`open_replay`, :meth:`Replay.from_log`,
``replays.file.read_replay``); once open, a replay is plain computation, which
callers on an event loop run in a worker thread when it is long.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tickline.replays.reader import LogReader
from tickline.shared.game import GameEvent, Rules, State, TickInputs, state_hash
from tickline.shared.games import game_class
from tickline.shared.logformat import CorruptRecord, Divergence, MatchHeader, decode_payload, decode_state

# A stored hash may be a prefix of the state hash (replay files keep 16 hex digits
# a tick: 64 bits tell a diverged state as surely, in half the bytes); never shorter.
MIN_HASH_CHARS = 16


@dataclass(slots=True)
class StoredStep:
    """One tick as recorded: its input record (a log payload, or the decoded record) and state hash."""

    tick: int
    record: bytes | dict[str, Any]
    hash: str


@dataclass(slots=True)
class Frame:
    """One tick of a replay: the state after it (live: copy it to keep it past the next frame),
    the inputs it applied, and the events it produced."""

    tick: int
    state: State
    inputs: TickInputs
    events: list[GameEvent]
    hash: str  # the state's whole hash (checked against the stored one)


# The kind of the marks that say what the server refused of a player: ``{"k": REFUSED, "p":
# player, "why": reason, "n": how many}`` (shared/game.py's TickInputs.refused names the reasons).
REFUSED = "refused"


@dataclass(slots=True)
class Mark:
    """An event worth a mark on a timeline (a kill, or inputs the server refused), at its tick."""

    tick: int
    event: GameEvent


@dataclass(slots=True)
class Summary:
    """What one pass over the whole match finds: who played, how it ended, its marks."""

    players: dict[int, str]
    result: dict[str, Any]
    marks: list[Mark]
    final_hash: str
    scores: list[tuple[int, dict[str, int]]] = field(default_factory=list)  # (tick, scores), once a second


class Replay:
    """A recorded match. ``steps`` are its stored ticks in order; ``keyframes`` map a tick to
    the stored state (``Rules.dump_state`` bytes) and its hash."""

    def __init__(
        self,
        header: MatchHeader,
        steps: list[StoredStep],
        keyframes: dict[int, tuple[bytes, str]] | None = None,
        *,
        status: str = "finished",
        last_tick: int | None = None,
        final_hash: str | None = None,
        rules_version: int | None = None,
        rules: Rules | None = None,
    ) -> None:
        self.header = header
        self.steps = steps
        self._first = steps[0].tick if steps else 1
        self.keyframes = dict(keyframes or {})
        self.status = status
        self.last_tick = steps[-1].tick if last_tick is None and steps else (last_tick or 0)
        self.final_hash = final_hash
        self.file_header: dict[str, Any] | None = None  # a replay file's header, when read from one
        self._summary: Summary | None = None
        if rules is None:
            # GameNotInstalled propagates: a game this installation lacks is not a verdict on the match.
            version = header.game_version if rules_version is None else rules_version
            rules = game_class(header.game, version)(header.config)
        self.rules = rules

    # ------------------------------------------------------------ opening

    @classmethod
    async def from_log(cls, reader: LogReader, match_id: str, rules_version: int | None = None) -> Replay:
        """The match ``match_id`` (a unique prefix will do) from an open event log."""
        header, summary = await reader.match(match_id)
        steps = [StoredStep(t.tick, t.payload, t.hash) async for t in reader.ticks(header.match_id)]
        keyframes = {kept.tick: (kept.state, kept.hash) for kept in await reader.keyframes(header.match_id)}
        return cls(
            header,
            steps,
            keyframes,
            status=summary.status,
            last_tick=summary.last_tick,
            final_hash=summary.final_hash,
            rules_version=rules_version,
        )

    # ------------------------------------------------------------ what it holds

    def hash(self, state: State) -> str:
        """``state``'s hash as this match's log computes them (its header's hash version)."""
        return state_hash(state, self.header.hash_version)

    @property
    def tick_rate(self) -> int:
        return self.header.tick_rate

    @property
    def ticks(self) -> int:
        """How many ticks are stored (1..ticks, when the log is whole)."""
        return self.steps[-1].tick if self.steps else 0

    @property
    def duration_s(self) -> float:
        return self.ticks / self.header.tick_rate

    def inputs(self, tick: int) -> TickInputs:
        """The inputs tick ``tick`` applied."""
        return TickInputs.from_record(self._record(self._step(tick)))

    def players(self, until: int | None = None) -> dict[int, str]:
        """Every player who joined by tick ``until`` (default: the end): id -> name, from the
        input records alone (nothing re-simulated)."""
        joined: dict[int, str] = {}
        for step in self.steps:
            if until is not None and step.tick > until:
                break
            for pid, name in self._record(step).get("j", ()):
                joined.setdefault(int(pid), str(name))
        return dict(sorted(joined.items()))

    def view(self, state: State, player_id: int) -> dict[str, Any]:
        """What ``player_id`` was shown of ``state`` (its interest and hidden information applied)."""
        return self.rules.view(state, player_id)

    def full_view(self, state: State) -> dict[str, Any]:
        """The whole match at ``state``, as a spectator sees it."""
        return self.rules.spectator_view(state)

    # ------------------------------------------------------------ moving around

    def state_at(self, tick: int) -> State:
        """The state after ``tick`` (0: before the first), a fresh copy: from the newest keyframe
        at or before it, re-simulating at most one keyframe interval."""
        if not 0 <= tick <= self.ticks:
            raise ValueError(f"tick {tick} is outside the match (0 to {self.ticks})")
        base = max((t for t in self.keyframes if t <= tick), default=0)
        state = self.keyframe_state(base) if base else self.rules.initial_state(self.header.seed)
        for _ in self.run_from(state, base + 1, tick + 1):
            pass
        return state

    def frames(self, start: int = 1, stop: int | None = None) -> Iterator[Frame]:
        """Ticks ``start`` to ``stop`` (inclusive; default: the last), each after it was re-simulated.
        The frame's state is the replay's working state: copy what must outlive the next frame."""
        stop = self.ticks if stop is None else min(stop, self.ticks)
        if start < 1:
            raise ValueError("ticks start at 1")
        state = self.state_at(start - 1)
        yield from self.run_from(state, start, stop + 1)

    def run_from(self, state: State, start: int, stop: int | None = None) -> Iterator[Frame]:
        """Step ``state`` (the state after tick ``start - 1``) through ticks ``start`` up to
        ``stop`` (exclusive; default: the end), checking each tick's hash."""
        rules = self.rules
        for tick in range(start, self.ticks + 1 if stop is None else stop):
            step = self._step(tick)
            try:
                inputs = TickInputs.from_record(self._record(step))
                events = rules.step(state, inputs)
            except Divergence:
                raise
            except (CorruptRecord, ValueError, KeyError, TypeError) as exc:
                raise Divergence(tick, f"tick record cannot be replayed: {exc}") from None
            digest = self.hash(state)
            check_hash(tick, digest, step.hash)
            yield Frame(tick, state, inputs, events, digest)

    def _step(self, tick: int) -> StoredStep:
        # Stored ticks run 1..N (a slice of a replay: first..N); a gap is found by position, then named.
        index = tick - self._first
        if 0 <= index < len(self.steps) and self.steps[index].tick == tick:
            return self.steps[index]
        after = next((s.tick for s in self.steps[max(0, min(index, len(self.steps))) :] if s.tick > tick), None)
        beyond = f" (next stored is {after})" if after is not None else ""
        raise Divergence(tick, f"tick {tick} is missing from the log{beyond}")

    @staticmethod
    def _record(step: StoredStep) -> dict[str, Any]:
        if isinstance(step.record, dict):
            return step.record
        return decode_payload(step.record)[0]

    def keyframe_state(self, tick: int) -> State:
        """The stored keyframe at ``tick``, loaded and checked against its own hash."""
        data, kept_hash = self.keyframes[tick]
        try:
            # The log keeps keyframes compressed; a replay file, as plain JSON.
            state = self.rules.load_state(data if data[:1] == b"{" else decode_state(data))
        except (CorruptRecord, ValueError, KeyError, TypeError) as exc:
            raise Divergence(tick, f"keyframe at tick {tick} cannot be read: {exc}") from None
        if self.hash(state) != kept_hash:
            raise Divergence(tick, f"keyframe at tick {tick} does not match its stored hash")
        return state

    # ------------------------------------------------------------ the whole match

    @property
    def summary(self) -> Summary:
        """One pass over every tick (re-simulated and checked): players, result, marks, scores."""
        return self._summary if self._summary is not None else self.scan()

    def scan(self, visit: Callable[[Frame], None] | None = None) -> Summary:
        """Re-simulate the whole match once, calling ``visit`` with every frame; its summary."""
        players: dict[int, str] = {}
        marks: list[Mark] = []
        scores: list[tuple[int, dict[str, int]]] = []
        kinds = set(self.rules.marks)
        state = self.rules.initial_state(self.header.seed)
        every = self.header.tick_rate
        refusals: dict[tuple[int, str], tuple[int, Mark]] = {}  # (player, reason) -> (last tick, its mark)
        for frame in self.run_from(state, 1):
            for pid, name in frame.inputs.joins:
                players.setdefault(pid, name)
            marks += [Mark(frame.tick, event) for event in frame.events if event.get("k") in kinds]
            for pid, reasons in frame.inputs.refused.items():
                for why, count in reasons.items():
                    # What the server refused, one mark per spell: a flood is one moment.
                    last = refusals.get((pid, why))
                    if last is not None and frame.tick - last[0] <= every:
                        last[1].event["n"] += count
                        refusals[pid, why] = (frame.tick, last[1])
                    else:
                        mark = Mark(frame.tick, {"k": REFUSED, "p": pid, "why": why, "n": count})
                        marks.append(mark)
                        refusals[pid, why] = (frame.tick, mark)
            if frame.tick % every == 0 or frame.tick == self.ticks:
                scores.append((frame.tick, self.rules.result(state).get("scores", {})))
            if visit is not None:
                visit(frame)
        self._summary = Summary(players, self.rules.result(state), marks, self.hash(state), scores)
        return self._summary


def same_hash(computed: str, stored: str) -> bool:
    """Whether ``stored`` is ``computed`` (or, from a replay file, its prefix)."""
    return computed == stored or (len(stored) >= MIN_HASH_CHARS and computed.startswith(stored))


def check_hash(tick: int, computed: str, stored: str) -> None:
    """Raise Divergence unless ``stored`` is ``computed`` (or its prefix)."""
    if not same_hash(computed, stored):
        raise Divergence(tick, f"state hash differs at tick {tick}: stored {stored}, replayed {computed}")


async def open_replay(source: str, db_url: str, rules_version: int | None = None) -> Replay:
    """A replay file (a path that exists) or a match id in the log at ``db_url``."""
    from tickline.replays.file import read_replay  # the file format builds on this module

    if await asyncio.to_thread(Path(source).is_file):
        return await read_replay(Path(source), rules_version=rules_version)
    async with await LogReader.open(db_url) as reader:
        return await Replay.from_log(reader, source, rules_version=rules_version)
