"""A bot that plays arena: hunts the nearest enemy, keeps its distance, heals when hurt.

It decides the way a person's client would: from its own predicted position
and the other players as interpolated on screen (``bots.world``). Its own
randomness (wander direction) is the bot's business, not the simulation's.
"""

from __future__ import annotations

import random
from typing import Any

from tickline.bots.world import ClientWorld

UNIT = 100  # fixed units per world unit (shared.arena.UNIT)


def _sign(value: float, dead_zone: float) -> int:
    return 0 if abs(value) <= dead_zone else (1 if value > 0 else -1)


class ArenaBot:
    def __init__(self, player_id: int, seed: int, config: dict[str, Any] | None = None, rate: float = 60) -> None:
        self.player_id = player_id
        self._rng = random.Random(seed)
        self._rate = rate  # decisions a second
        self._wander = (0, 0)
        self._wander_left = 0
        # Views carry positions in steps of view_step fixed units.
        per_unit = UNIT / (config or {}).get("view_step", 1)
        self._fire_range = 450 * per_unit
        self._too_close = 120 * per_unit
        self._too_far = 260 * per_unit
        self._dead_zone = 8 * per_unit

    def decide(self, world: ClientWorld, now: float) -> dict[str, Any]:
        """The controls for this tick."""
        me = world.predicted_self()
        if me is None or not me["alive"] or world.view.get("over"):
            return {"mx": 0, "my": 0, "ax": 0, "ay": 0, "fire": False}
        x, y = me["x"], me["y"]
        others = world.interpolated("players", now)
        enemies = [p for pid, p in others.items() if pid != str(self.player_id) and p["alive"]]
        target = min(enemies, key=lambda p: (p["x"] - x) ** 2 + (p["y"] - y) ** 2, default=None)

        mx, my = self._wandering()
        ax = ay = 0
        fire = False
        if target is not None:
            dx, dy = target["x"] - x, target["y"] - y
            dist2 = dx * dx + dy * dy
            ax, ay = round(dx), round(dy)
            fire = dist2 <= self._fire_range**2
            if dist2 > self._too_far**2:
                mx, my = _sign(dx, self._dead_zone), _sign(dy, self._dead_zone)
            elif dist2 < self._too_close**2:
                mx, my = -_sign(dx, self._dead_zone), -_sign(dy, self._dead_zone)
        pickups = world.view.get("pickups", {})
        if me["hp"] < 50 and pickups:
            k = min(pickups.values(), key=lambda k: (k["x"] - x) ** 2 + (k["y"] - y) ** 2)
            mx, my = _sign(k["x"] - x, self._dead_zone), _sign(k["y"] - y, self._dead_zone)
        # vt: the tick our picture of the others is from, so that a hitscan
        # server judges the shot where we saw them (lag compensation).
        return {"mx": mx, "my": my, "ax": ax, "ay": ay, "fire": fire, "vt": int(world.render_tick(now))}

    def _wandering(self) -> tuple[int, int]:
        if self._wander_left <= 0:
            self._wander = (self._rng.choice((-1, 0, 1)), self._rng.choice((-1, 0, 1)))
            self._wander_left = max(1, round(self._rng.randint(40, 80) * self._rate / 60))  # 0.67-1.33 s
        self._wander_left -= 1
        return self._wander
