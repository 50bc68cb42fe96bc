"""The game rules interface, the per-tick input record, and the canonical state hash.

A game is a :class:`Rules` subclass bound to one config. Its contract is the
determinism contract of docs/design.md: the state at tick T is a pure function of
(game, version, seed, config) and the :class:`TickInputs` of ticks 1..T. The
server, the client's prediction and the replay verifier all run the same
``step``; the log stores only causes (inputs) and a hash per tick, and a replay
that recomputes every hash proves both the log and the rules.

States are plain dicts of ints, strings, bools, lists and dicts whose entity
tables are keyed by integer ids; ``state_hash`` serialises them canonically.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import orjson
import xxhash

from tickline.shared.schema import Controls, Inputs, InvalidInput, View

__all__ = [
    "HASH_VERSION",
    "HASH_VERSIONS",
    "ConfigError",
    "Controls",
    "GameEvent",
    "InvalidInput",
    "Rules",
    "State",
    "TickInputs",
    "state_hash",
]

State = dict[str, Any]
GameEvent = dict[str, Any]
_UNDECLARED_VIEW = View(tables={}, doc="(not declared)")


class ConfigError(ValueError):
    """A game config the rules refuse; its message says which key and why."""


@dataclass(slots=True)
class TickInputs:
    """Everything from outside that a tick applies: players joining, leaving, and new controls.

    ``inputs`` maps a player id to the controls that player sent for this tick
    (decoded by the game's declaration); a player with no entry sent nothing new,
    and games usually keep its last controls in their state (arena does). Joins,
    leaves and inputs come in player-id order, live and in replay alike.
    ``seqs`` gives the client's sequence number of each such input: not
    simulated, but kept in the log as an audit trail (each applied once, in order).
    ``refused`` is the rest of that trail, never simulated either: per player, what the
    server refused since the last tick and how often, by reason ("messages" and "bytes":
    over the input rate; "buffer": more ticks of input than the server holds; "kicked: why":
    the input, or anything else, that closed the player's connection).
    """

    joins: list[tuple[int, str]] = field(default_factory=list)
    leaves: list[int] = field(default_factory=list)
    inputs: dict[int, Controls] = field(default_factory=dict)
    seqs: dict[int, int] = field(default_factory=dict)
    refused: dict[int, dict[str, int]] = field(default_factory=dict)

    def is_empty(self) -> bool:
        return not (self.joins or self.leaves or self.inputs)

    def to_record(self) -> dict[str, Any]:
        """The canonical JSON form stored in the event log (sorted by player id)."""
        out: dict[str, Any] = {}
        if self.joins:
            out["j"] = [[pid, name] for pid, name in sorted(self.joins)]
        if self.leaves:
            out["l"] = sorted(self.leaves)
        if self.inputs:
            out["i"] = [
                [pid, self.inputs[pid], self.seqs[pid]] if pid in self.seqs else [pid, self.inputs[pid]]
                for pid in sorted(self.inputs)
            ]
        if self.refused:
            out["x"] = [
                [pid, reason, count]
                for pid in sorted(self.refused)
                for reason, count in sorted(self.refused[pid].items())
            ]
        return out

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> TickInputs:
        return cls(
            joins=[(int(pid), str(name)) for pid, name in record.get("j", ())],
            leaves=[int(pid) for pid in record.get("l", ())],
            inputs={int(item[0]): item[1] for item in record.get("i", ())},
            seqs={int(item[0]): int(item[2]) for item in record.get("i", ()) if len(item) > 2},
            refused=_refusals(record.get("x", ())),
        )


def _refusals(items: Any) -> dict[int, dict[str, int]]:
    out: dict[int, dict[str, int]] = {}
    for pid, reason, count in items:
        out.setdefault(int(pid), {})[str(reason)] = int(count)
    return out


class Rules(ABC):
    """One game's rules, bound to a validated config.

    Subclasses set ``name`` and ``version``; bump ``version`` whenever a change
    could make an old log replay differently.
    """

    name: ClassVar[str]
    version: ClassVar[int]
    # The declarations (shared/schema.py): what an input may hold, what a view holds.
    # Set them on the class, or override input_schema / view_schema when they depend
    # on the config.
    inputs: ClassVar[Inputs | None] = None
    views: ClassVar[View | None] = None
    # The game's own bot behaviours for load tests, by name: "package.module:Class"
    # (imported only by the bots; each is made as Class(player_id, seed, config, rate)).
    behaviours: ClassVar[dict[str, str]] = {}
    # Earlier versions of these rules, still importable, so that every log replays
    # under the rules that wrote it (newest first).
    previous_versions: ClassVar[tuple[type[Rules], ...]] = ()
    # The kinds of event (their "k") worth a mark on a replay's timeline, such as kills.
    marks: ClassVar[tuple[str, ...]] = ()
    # JavaScript source of a function (ctx, view, info) => void that the replay player calls
    # after its own drawing, to draw what draw hints cannot say (cards); "" for none.
    draw_hook: ClassVar[str] = ""
    # The tick rate and send rate a server uses for this game unless told otherwise.
    default_rates: ClassVar[tuple[int, int]] = (60, 30)

    def __init__(self, config: dict[str, Any] | None = None) -> None:
        self.config = self.validate_config(dict(config or {}))

    @classmethod
    @abstractmethod
    def default_config(cls) -> dict[str, Any]:
        """Every config key with its default value."""

    def validate_config(self, config: dict[str, Any]) -> dict[str, Any]:
        """Defaults merged with ``config``; unknown keys and wrong types raise ConfigError."""
        defaults = self.default_config()
        for key, value in config.items():
            if key not in defaults:
                raise ConfigError(f"unknown {self.name} config key {key!r}; known keys: {', '.join(sorted(defaults))}")
            want = type(defaults[key])
            if type(value) is not want:
                raise ConfigError(f"{self.name} config key {key!r} must be {want.__name__}, not {type(value).__name__}")
        return {**defaults, **config}

    @abstractmethod
    def initial_state(self, seed: int) -> State:
        """The state before tick 1."""

    def input_schema(self) -> Inputs:
        """The declaration of this game's inputs."""
        if self.inputs is None:
            raise NotImplementedError(f"{type(self).__name__} declares no inputs: set inputs = Inputs(...)")
        return self.inputs

    def view_schema(self) -> View:
        """The declaration of this game's views (none declared: an empty one; clients then
        find their own entity in a "players" table and interpolate nothing)."""
        return self.views if self.views is not None else _UNDECLARED_VIEW

    def validate_input(self, raw: Any) -> Controls:
        """Normalised controls from a client's raw input, or InvalidInput (by the declared inputs).
        A game whose inputs need more than their declaration can say overrides this."""
        return self.input_schema().decode(raw)

    def input_check(self) -> Inputs | Callable[[Any], Controls]:
        """What the server checks each raw input with: the declaration itself when
        :meth:`validate_input` is the declaration's (so that a native intake reads it with no
        call back into Python), else :meth:`validate_input`."""
        if type(self).validate_input is Rules.validate_input:
            try:
                return self.input_schema()
            except NotImplementedError:
                pass  # (then each input says so, from validate_input)
        return self.validate_input

    def idle_input(self) -> Controls:
        """The controls of a player who is not touching anything (used while disconnected)."""
        return self.input_schema().idle()

    @abstractmethod
    def step(self, state: State, inputs: TickInputs) -> list[GameEvent]:
        """Advance ``state`` one tick, in place; return the tick's events."""

    @abstractmethod
    def view(self, state: State, player_id: int) -> dict[str, Any]:
        """What ``player_id`` may see, in wire form (string keys, JSON values)."""

    def spectator_view(self, state: State) -> dict[str, Any]:
        """What a spectator (and a replay's whole-map view) sees: the whole match, hidden
        information included (spectators see it only after the server's delay). The
        default is the view of a player who is not in the match; a game whose views
        hide something from everyone but its owner overrides this."""
        return self.view(state, 0)

    def view_key(self, state: State, player_id: int) -> Any:
        """Players with equal keys get equal views at a tick, so the server builds and
        encodes that view once. The default, the player id, shares nothing."""
        return player_id

    def predict_self(self, me: dict[str, Any], inputs: list[Controls]) -> dict[str, Any]:
        """Client prediction: the player's own entity (as in its view) after ``inputs``,
        one per tick. The default predicts nothing: the server's word stands."""
        return me

    @abstractmethod
    def is_over(self, state: State) -> bool:
        """Whether the match has ended."""

    def players(self, state: State) -> list[int]:
        """The ids of the players in the match. By default the keys of ``state["players"]``:
        a game that keeps its players elsewhere says where by overriding this."""
        return sorted(state.get("players", {}))

    def result(self, state: State) -> dict[str, Any]:
        """What the match's end tells every client: by default the winner and each player's
        score, from ``state["winner"]`` and each ``state["players"][id]["score"]``."""
        players = state.get("players", {})
        return {"winner": state.get("winner", 0), "scores": {str(pid): p.get("score", 0) for pid, p in players.items()}}

    def max_players(self) -> int:
        return int(self.config.get("max_players", 64))

    def dump_state(self, state: State) -> bytes:
        return orjson.dumps(state, option=orjson.OPT_NON_STR_KEYS | orjson.OPT_SORT_KEYS)

    @abstractmethod
    def load_state(self, data: bytes) -> State:
        """The inverse of ``dump_state``."""


# How a state's canonical bytes become its hash, by version: 1, BLAKE2b-128; 2, xxh3-128
# (a quarter of the hash's time was BLAKE2b, 50 times xxh3's; the canonical bytes are the
# same). A match's header names its version, so a log verifies as it was written; new
# matches take the newest.
HASH_VERSIONS = (1, 2)
HASH_VERSION = 2


def state_hash(state: State, version: int = HASH_VERSION) -> str:
    """A canonical hash of a state (32 hex digits): equal states hash equal on every platform."""
    data = orjson.dumps(state, option=orjson.OPT_NON_STR_KEYS | orjson.OPT_SORT_KEYS)
    if version == 2:
        return xxhash.xxh3_128_hexdigest(data)
    if version == 1:
        return hashlib.blake2b(data, digest_size=16).hexdigest()
    raise ValueError(f"state hash version {version} is not one this tickline knows {HASH_VERSIONS}; upgrade tickline")


# PRNG: splitmix64, with its whole state one int kept inside the game state, so
# that randomness is part of what the log reproduces.
_MASK64 = (1 << 64) - 1


def rng_seed(seed: int) -> int:
    return seed & _MASK64


def rng_next(state: State, key: str = "rng") -> int:
    """The next 64-bit random number; advances ``state[key]``."""
    x = (state[key] + 0x9E3779B97F4A7C15) & _MASK64
    state[key] = x
    z = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return int(z ^ (z >> 31))


def rng_below(state: State, n: int, key: str = "rng") -> int:
    """A random int in [0, n)."""
    return rng_next(state, key) % n
