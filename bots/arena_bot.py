"""A bot that plays arena: hunts the nearest enemy, keeps its distance, heals when hurt.

It decides from the world as the client sees it (``client.world.view``), the
way a person's client would; its own randomness (wander direction) is the
bot's business, not the simulation's.
"""

from __future__ import annotations

import random
from typing import Any

# World units in fixed units (shared.arena.UNIT = 100).
_FIRE_RANGE = 450 * 100
_TOO_CLOSE = 120 * 100
_TOO_FAR = 260 * 100


def _sign(value: int, dead_zone: int) -> int:
    return 0 if abs(value) <= dead_zone else (1 if value > 0 else -1)


class ArenaBot:
    def __init__(self, player_id: int, seed: int) -> None:
        self.player_id = player_id
        self._rng = random.Random(seed)
        self._wander = (self._rng.choice((-1, 0, 1)), self._rng.choice((-1, 0, 1)))
        self._wander_left = 0

    def decide(self, view: dict[str, Any]) -> dict[str, Any]:
        """The controls for the next input, from the current view."""
        players = view.get("players", {})
        me = players.get(str(self.player_id))
        if me is None or not me["alive"] or view.get("over"):
            return {"mx": 0, "my": 0, "ax": 0, "ay": 0, "fire": False}
        x, y = me["x"], me["y"]
        enemies = [p for pid, p in players.items() if pid != str(self.player_id) and p["alive"]]
        target = min(enemies, key=lambda p: (p["x"] - x) ** 2 + (p["y"] - y) ** 2, default=None)

        mx, my = self._wandering()
        ax = ay = 0
        fire = False
        if target is not None:
            dx, dy = target["x"] - x, target["y"] - y
            dist2 = dx * dx + dy * dy
            ax, ay = dx, dy
            fire = dist2 <= _FIRE_RANGE ** 2
            if dist2 > _TOO_FAR ** 2:
                mx, my = _sign(dx, 800), _sign(dy, 800)
            elif dist2 < _TOO_CLOSE ** 2:
                mx, my = -_sign(dx, 800), -_sign(dy, 800)
        pickups = view.get("pickups", {})
        if me["hp"] < 50 and pickups:
            k = min(pickups.values(), key=lambda k: (k["x"] - x) ** 2 + (k["y"] - y) ** 2)
            mx, my = _sign(k["x"] - x, 500), _sign(k["y"] - y, 500)
        # Aim is bounded by the rules (+-1e6 fixed units); world coordinates are well inside.
        return {"mx": mx, "my": my, "ax": ax, "ay": ay, "fire": fire}

    def _wandering(self) -> tuple[int, int]:
        if self._wander_left <= 0:
            self._wander = (self._rng.choice((-1, 0, 1)), self._rng.choice((-1, 0, 1)))
            self._wander_left = self._rng.randint(20, 40)
        self._wander_left -= 1
        return self._wander
