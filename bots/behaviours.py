"""What a bot does each tick: the behaviours a load test can choose and mix.

- ``arena``: plays to win (``bots.arena_bot.ArenaBot``);
- ``wander``: the Colyseus peer scenario's bot: a new random direction every
  0.8-1.2 s, fire held half the time;
- ``idle``: connected, acknowledging, touching nothing.

A mix such as ``arena=3,idle=1`` gives each bot a behaviour by weight,
decided by the bot's index so the same command makes the same crowd.
"""

from __future__ import annotations

import random
from typing import Any, Protocol

from tickline.bots.arena_bot import ArenaBot
from tickline.bots.world import ClientWorld

BEHAVIOURS = ("arena", "wander", "idle")


class Behaviour(Protocol):
    def decide(self, world: ClientWorld, now: float) -> dict[str, Any]: ...


class IdleBot:
    def decide(self, world: ClientWorld, now: float) -> dict[str, Any]:
        return {}


class WanderBot:
    def __init__(self, seed: int, rate: float = 60) -> None:
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


def parse_mix(spec: str) -> list[tuple[str, float]]:
    """``arena`` or ``arena=3,idle=1`` -> [(name, weight)]; ValueError on anything else."""
    mix = []
    for part in spec.split(","):
        name, _, weight = part.strip().partition("=")
        if name not in BEHAVIOURS:
            raise ValueError(f"unknown behaviour {name!r}; choose from {', '.join(BEHAVIOURS)} (e.g. arena=3,idle=1)")
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


def make_behaviour(name: str, player_id: int, seed: int, config: dict[str, Any] | None, rate: float = 60) -> Behaviour:
    """``rate``: how many times a second the bot decides (the tick rate, or less
    for inputs that hold for several ticks)."""
    if name == "arena":
        return ArenaBot(player_id, seed, config, rate)
    if name == "wander":
        return WanderBot(seed, rate)
    return IdleBot()
