"""Games for the tests: arena's version 2, which changes one rule, and a game no entry point installs."""

from __future__ import annotations

from typing import Any, ClassVar

from tickline.shared.arena import Arena
from tickline.shared.game import GameEvent, Rules, State, TickInputs
from tickline.shared.schema import Inputs, Int, Table, View


class ArenaV2(Arena):
    """Arena with one balance change: a hit on a player at full health does 5 more damage.
    Version 1 stays importable through ``previous_versions``, so matches recorded under it
    still replay under it."""

    version = 2
    previous_versions: ClassVar[tuple[type[Rules], ...]] = (Arena,)

    def _damage(self, state: State, pid: int, by: int, tick: int, events: list[GameEvent]) -> None:
        target = state["players"][pid]
        if target["hp"] == self.config["max_hp"]:
            target["hp"] -= 5
        super()._damage(state, pid, by, tick, events)


class Tally(Rules):
    """A tiny game: each player's total of the numbers it sends; over at a tick limit."""

    name = "tally"
    version = 1
    default_rates = (20, 20)
    inputs = Inputs(controls={"add": Int(0, 9, doc="added to your total this tick")})
    views = View(tables={"players": Table({"total": Int(0, 2**31 - 1)})})

    @classmethod
    def default_config(cls) -> dict[str, Any]:
        return {"ticks": 40, "max_players": 4}

    def initial_state(self, seed: int) -> State:
        return {"tick": 0, "players": {}, "over": False}

    def load_state(self, data: bytes) -> State:
        import orjson

        state: State = orjson.loads(data)
        state["players"] = {int(k): v for k, v in state["players"].items()}
        return state

    def step(self, state: State, inputs: TickInputs) -> list[GameEvent]:
        state["tick"] += 1
        for pid in inputs.leaves:
            state["players"].pop(pid, None)
        for pid, _name in inputs.joins:
            state["players"].setdefault(pid, {"total": 0})
        for pid in sorted(inputs.inputs):
            if pid in state["players"]:
                state["players"][pid]["total"] += inputs.inputs[pid]["add"]
        state["over"] = state["tick"] >= self.config["ticks"]
        return []

    def view(self, state: State, player_id: int) -> dict[str, Any]:
        return {"players": {str(pid): {"total": p["total"]} for pid, p in state["players"].items()}}

    def is_over(self, state: State) -> bool:
        return bool(state["over"])
