"""What a bot does each tick: the behaviours a load test can choose and mix.

Every game gets two behaviours for free, from its declarations:

- ``idle``: connected, acknowledging, touching nothing;
- ``random``: a random valid input every decision (``Inputs.random``): a
  load test for a game on the day it is written, and a fuzzer of its rules.

A game adds its own by name in its ``Rules.behaviours`` (``"name":
"package.module:Class"``), each made as ``Class(player_id, seed, config, rate)``
with a ``decide(world, now) -> controls`` method. Arena's are ``arena`` (plays to
win, ``bots.arena_bot.ArenaBot``) and ``wander`` (the Colyseus peer scenario's
bot: a new random direction every 0.8-1.2 s, fire held half the time).

A mix such as ``arena=3,idle=1`` gives each bot a behaviour by weight, decided
by the bot's index so the same command makes the same crowd; ``default`` is the
game's first own behaviour, or ``random`` when it has none.
"""

from __future__ import annotations

import importlib
import random
from typing import Any, Protocol

from tickline.bots.world import ClientWorld
from tickline.shared.game import Rules

DEFAULT = "default"


class Behaviour(Protocol):
    def decide(self, world: ClientWorld, now: float) -> dict[str, Any]: ...


class IdleBot:
    def __init__(
        self, player_id: int = 0, seed: int = 0, config: dict[str, Any] | None = None, rate: float = 60
    ) -> None:
        pass

    def decide(self, world: ClientWorld, now: float) -> dict[str, Any]:
        return {}


class RandomBot:
    """A random valid input each decision, drawn from the game's declared inputs."""

    def __init__(
        self, player_id: int = 0, seed: int = 0, config: dict[str, Any] | None = None, rate: float = 60
    ) -> None:
        self._rng = random.Random(seed)

    def decide(self, world: ClientWorld, now: float) -> dict[str, Any]:
        if world.rules is None:  # a game this client does not know: nothing to draw from
            return {}
        # Optional controls (arena's vt) half the time: absent and present are both valid.
        return world.rules.input_schema().random(self._rng, optional=self._rng.random() < 0.5)


class WanderBot:
    def __init__(
        self, player_id: int = 0, seed: int = 0, config: dict[str, Any] | None = None, rate: float = 60
    ) -> None:
        self._rng = random.Random(seed)
        self._rate = rate  # decisions a second
        self._left = 0
        self._controls: dict[str, Any] = {}

    def decide(self, world: ClientWorld, now: float) -> dict[str, Any]:
        if self._left <= 0:
            self._left = round(self._rng.uniform(0.8, 1.2) * self._rate)
            mx, my = 0, 0
            while (mx, my) == (0, 0):
                mx, my = self._rng.choice((-1, 0, 1)), self._rng.choice((-1, 0, 1))
            self._controls = {"mx": mx, "my": my, "fire": self._rng.random() < 0.5, "ax": mx or 1, "ay": my}
        self._left -= 1
        return {**self._controls, "vt": int(world.render_tick(now))}


GENERIC: dict[str, type[IdleBot] | type[RandomBot]] = {"idle": IdleBot, "random": RandomBot}


def behaviour_names(game: type[Rules] | None = None) -> list[str]:
    """The behaviours a bot may have: the generic ones, and ``game``'s own (every installed
    game's when ``game`` is None)."""
    from tickline.shared.games import load, names

    own: set[str] = set()
    for cls in [game] if game is not None else [load(name) for name in names()]:
        own |= set(cls.behaviours)
    return [DEFAULT, *sorted(GENERIC), *sorted(own - set(GENERIC))]


def parse_mix(spec: str, known: list[str] | None = None) -> list[tuple[str, float]]:
    """``arena`` or ``arena=3,idle=1`` -> [(name, weight)]; ValueError on anything else
    (a name outside ``known``, when given, included)."""
    mix = []
    for part in spec.split(","):
        name, _, weight = part.strip().partition("=")
        if not name or (known is not None and name not in known):
            choices = ", ".join(known or [])
            raise ValueError(f"unknown behaviour {name!r}; choose from {choices} (e.g. random=3,idle=1)")
        try:
            w = float(weight) if weight else 1.0
        except ValueError:
            raise ValueError(f"behaviour weight {weight!r} is not a number") from None
        if w <= 0:
            raise ValueError(f"behaviour weight for {name} must be positive")
        mix.append((name, w))
    return mix


def behaviours_for(first: int, count: int, mix: list[tuple[str, float]]) -> list[str]:
    """The behaviours of bots ``first`` to ``first + count - 1``: by weight, exactly in
    every prefix (smooth weighted round robin), the same on every run and worker."""
    total = sum(w for _, w in mix)
    current = [0.0] * len(mix)
    out = []
    for index in range(first + count):
        for i, (_, weight) in enumerate(mix):
            current[i] += weight
        best = max(range(len(mix)), key=lambda i: (current[i], -i))
        current[best] -= total
        if index >= first:
            out.append(mix[best][0])
    return out


def resolve(name: str, game: type[Rules] | None) -> str:
    """The behaviour ``name`` stands for with ``game``: ``default`` is the game's first own one."""
    if name != DEFAULT:
        return name
    return next(iter(game.behaviours), "random") if game is not None else "random"


def make_behaviour(
    name: str, game: type[Rules] | None, player_id: int, seed: int, config: dict[str, Any] | None, rate: float = 60
) -> Behaviour:
    """Bot ``name`` for ``game`` (the server's, from its welcome). ``rate``: how many times a
    second the bot decides (the tick rate, or less for inputs that hold for several ticks)."""
    own = dict(game.behaviours) if game is not None else {}
    name = resolve(name, game)
    if name in GENERIC:
        return GENERIC[name](player_id, seed, config, rate)
    path = own.get(name)
    if path is None:
        offered = ", ".join([*GENERIC, *own])
        what = f"game {game.name!r}" if game is not None else "a game this client does not know"
        raise ValueError(f"behaviour {name!r} is not one for {what}; it has {offered}")
    module, _, attr = path.partition(":")
    cls = getattr(importlib.import_module(module), attr)
    bot: Behaviour = cls(player_id, seed, config, rate)
    return bot
