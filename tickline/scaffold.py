"""``tickline new game NAME [DIR]``: a small installable package with a working game in it.

What it writes, each file a starting point the author edits:

- ``pyproject.toml``: the package, its dependency on tickline, and the entry point
  that makes ``--game NAME`` find the game once it is installed;
- ``NAME/rules.py``: a Rules subclass with a complete minimal game (players walk a
  grid and pick up coins that appear at seeded random spots), its declared inputs
  and views, and its config;
- ``NAME/bot.py``: a bot behaviour for load tests (``--behaviour walker``);
- ``tests/test_NAME.py``: tests that play a match in-process and replay it, fuzz the
  rules from their declarations, and play a match on a real server with bots and
  verify its log;
- ``README.md``: how to install, serve, load-test, replay and change it.
"""

from __future__ import annotations

import keyword
import re
from pathlib import Path

NAME_PATTERN = re.compile(r"^[a-z][a-z0-9_]{0,31}$")


class ScaffoldError(ValueError):
    """The name or folder cannot take a new game; the message says why and what to do."""


def class_name(name: str) -> str:
    return "".join(part.capitalize() for part in name.split("_") if part)


def new_game(name: str, folder: Path) -> list[Path]:
    """Write the package for game ``name`` into ``folder`` (made; it must be new or empty)."""
    if not NAME_PATTERN.match(name) or keyword.iskeyword(name):
        raise ScaffoldError(
            f"game name {name!r} must be a Python package name: lowercase letters, digits and _, "
            "starting with a letter, at most 32 characters"
        )
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise ScaffoldError(f"{folder} already exists and is not an empty folder; name a new one")
    files = {
        "pyproject.toml": PYPROJECT,
        "README.md": README,
        f"{name}/__init__.py": INIT,
        f"{name}/rules.py": RULES,
        f"{name}/bot.py": BOT,
        f"tests/test_{name}.py": TESTS,
    }
    written = []
    for relative, template in files.items():
        path = folder / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(template.replace("__name__", name).replace("__Class__", class_name(name)))
        written.append(path)
    return written


PYPROJECT = """[build-system]
requires = ["setuptools>=68"]
build-backend = "setuptools.build_meta"

[project]
name = "__name__"
version = "0.1.0"
description = "__Class__, a game for the tickline game server"
requires-python = ">=3.11"
dependencies = ["tickline"]

[project.optional-dependencies]
dev = ["pytest>=8", "pytest-asyncio>=1.5", "hypothesis>=6.100"]

# This is what makes `tickline serve --game __name__` find the game once installed.
[project.entry-points."tickline.games"]
__name__ = "__name__.rules:__Class__"

[tool.setuptools]
packages = ["__name__"]

[tool.pytest.ini_options]
asyncio_mode = "auto"
asyncio_default_fixture_loop_scope = "function"
"""

INIT = '''"""__Class__: a game for the tickline game server (the rules are in __name__.rules)."""
'''

RULES = '''"""__Class__'s rules: players walk a grid and pick up coins; the first to the score limit wins.

Everything a tickline game needs is here:

- ``inputs`` and ``view_schema()`` declare what a player sends and what it is
  shown. The server decodes and checks inputs with them, the bots and property
  tests draw valid inputs from them, and clients read units from them;
- ``step`` is the simulation, and it must be deterministic: integers only,
  randomness from the PRNG kept in the state (``rng_below``), players iterated in
  sorted order, no clock, no global random. Then a replay of the log recomputes
  every tick's state hash exactly;
- ``view`` is what one player sees, in wire form (string keys);
- ``version``: raise it whenever a change could make an old log replay differently,
  and keep the old class in ``previous_versions`` so old matches still replay.
"""

from __future__ import annotations

from typing import Any, ClassVar

import orjson

from tickline.shared.game import ConfigError, GameEvent, Rules, State, TickInputs, rng_below, rng_seed
from tickline.shared.schema import Bool, Choice, Inputs, Int, Table, Text, View


class __Class__(Rules):
    name = "__name__"
    version = 1
    default_rates = (20, 20)  # ticks and state updates a second, unless the server is told otherwise
    inputs = Inputs(
        controls={
            "dx": Choice((-1, 0, 1), default=0, doc="walk left (-1) or right (1)"),
            "dy": Choice((-1, 0, 1), default=0, doc="walk up (-1) or down (1)"),
        },
        doc="A player keeps walking the way its newest input says.",
    )
    behaviours: ClassVar[dict[str, str]] = {"walker": "__name__.bot:Walker"}

    @classmethod
    def default_config(cls) -> dict[str, Any]:
        return {
            "tick_rate": 20,
            "size": 16,  # the grid is size x size cells
            "step_ticks": 4,  # a player moves one cell every this many ticks
            "coins": 3,  # coins on the grid at once
            "score_limit": 10,
            "time_limit_s": 60,
            "max_players": 8,
        }

    def validate_config(self, config: dict[str, Any]) -> dict[str, Any]:
        merged = super().validate_config(config)
        for key, value in merged.items():
            if value <= 0:
                raise ConfigError(f"__name__ config key {key!r} must be positive, got {value}")
        return merged

    def __init__(self, config: dict[str, Any] | None = None) -> None:
        super().__init__(config)
        self.size = self.config["size"]
        self.time_limit = self.config["time_limit_s"] * self.config["tick_rate"]
        cells = Int(0, self.size - 1, unit="cells")
        self._view = View(
            tables={
                "players": Table(
                    {"name": Text(32), "x": cells, "y": cells, "score": Int(0, 2**31 - 1, doc="coins picked up")},
                    doc="Every player.",
                    interpolate=("x", "y"),
                ),
                "coins": Table({"x": cells, "y": cells}, doc="Coins waiting to be picked up."),
            },
            values={"over": Bool(doc="the match has ended"), "winner": Int(0, 2**31 - 1, doc="the winner's id")},
        )

    def view_schema(self) -> View:
        return self._view

    # ------------------------------------------------------------ state

    def initial_state(self, seed: int) -> State:
        return {"tick": 0, "rng": rng_seed(seed), "next_id": 1, "players": {}, "coins": {}, "over": False, "winner": 0}

    def load_state(self, data: bytes) -> State:
        state: State = orjson.loads(data)
        for table in ("players", "coins"):  # JSON keys are strings; the state's ids are ints
            state[table] = {int(k): v for k, v in sorted(state[table].items(), key=lambda kv: int(kv[0]))}
        return state

    def is_over(self, state: State) -> bool:
        return bool(state["over"])

    # ------------------------------------------------------------ the tick

    def step(self, state: State, inputs: TickInputs) -> list[GameEvent]:
        events: list[GameEvent] = []
        if state["over"]:
            return events
        state["tick"] += 1
        tick = state["tick"]
        players = state["players"]
        for pid in sorted(inputs.leaves):
            if players.pop(pid, None) is not None:
                events.append({"k": "leave", "p": pid})
        for pid, name in sorted(inputs.joins):
            if pid not in players:
                x, y = self._free_cell(state)
                players[pid] = {"name": name, "x": x, "y": y, "score": 0, "dx": 0, "dy": 0}
                events.append({"k": "join", "p": pid})
        for pid in sorted(inputs.inputs):
            if pid in players:
                players[pid].update(inputs.inputs[pid])  # the controls are held until the next input
        if tick % self.config["step_ticks"] == 0:
            for pid in sorted(players):
                p = players[pid]
                p["x"] = min(self.size - 1, max(0, p["x"] + p["dx"]))
                p["y"] = min(self.size - 1, max(0, p["y"] + p["dy"]))
        coins = state["coins"]
        for cid in sorted(coins):
            c = coins[cid]
            takers = [pid for pid in sorted(players) if (players[pid]["x"], players[pid]["y"]) == (c["x"], c["y"])]
            if takers:
                players[takers[0]]["score"] += 1
                del coins[cid]
                events.append({"k": "coin", "p": takers[0]})
        while len(coins) < self.config["coins"]:
            x, y = self._free_cell(state)
            coins[state["next_id"]] = {"x": x, "y": y}
            state["next_id"] += 1
        top = max((p["score"] for p in players.values()), default=0)
        if top >= self.config["score_limit"] or tick >= self.time_limit:
            state["over"] = True
            state["winner"] = max(sorted(players), key=lambda pid: players[pid]["score"], default=0)
            events.append({"k": "over", "winner": state["winner"]})
        return events

    def _free_cell(self, state: State) -> tuple[int, int]:
        return rng_below(state, self.size), rng_below(state, self.size)

    # ------------------------------------------------------------ what a player sees

    def view(self, state: State, player_id: int) -> dict[str, Any]:
        return {
            "players": {
                str(pid): {"name": p["name"], "x": p["x"], "y": p["y"], "score": p["score"]}
                for pid, p in state["players"].items()
            },
            "coins": {str(cid): {"x": c["x"], "y": c["y"]} for cid, c in state["coins"].items()},
            "over": state["over"],
            "winner": state["winner"],
        }

    def view_key(self, state: State, player_id: int) -> Any:
        return None  # everyone sees the same: the server builds and sends one view a tick
'''

BOT = '''"""__Class__'s bot for load tests: walks to the nearest coin (``tickline bots --behaviour walker``)."""

from __future__ import annotations

from typing import Any

from tickline.bots.world import ClientWorld


class Walker:
    def __init__(self, player_id: int, seed: int, config: dict[str, Any] | None = None, rate: float = 20) -> None:
        self.player_id = player_id

    def decide(self, world: ClientWorld, now: float) -> dict[str, Any]:
        """The controls for this tick, from what this player sees."""
        me = world.view.get("players", {}).get(str(self.player_id))
        coins = list(world.view.get("coins", {}).values())
        if me is None or not coins:
            return {"dx": 0, "dy": 0}
        goal = min(coins, key=lambda c: abs(c["x"] - me["x"]) + abs(c["y"] - me["y"]))
        sign = lambda v: (v > 0) - (v < 0)  # noqa: E731 - a one-line helper reads best here
        return {"dx": sign(goal["x"] - me["x"]), "dy": sign(goal["y"] - me["y"])}
'''

TESTS = '''"""__Class__: the rules replay exactly, and a match on a real server verifies from its log."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from tickline.bots.swarm import run_swarm
from tickline.replays.reader import LogReader
from tickline.replays.verify import verify_match
from tickline.server.app import Server, ServerConfig
from tickline.server.match import MatchSettings
from tickline.shared.game import TickInputs
from tickline.testing import check_replays, tick_streams
from __name__.rules import __Class__


def test_a_scripted_match_replays_to_the_same_hashes() -> None:
    rng = random.Random(5)
    stream = [TickInputs(joins=[(1, "a"), (2, "b")])]
    stream += [TickInputs(inputs={1: {"dx": rng.choice((-1, 0, 1)), "dy": rng.choice((-1, 0, 1))}}) for _ in range(200)]
    hashes = check_replays(__Class__, {}, seed=7, stream=stream)
    assert len(set(hashes)) > 1  # something happened


@given(stream=tick_streams(__Class__(), players=3, ticks=60), seed=st.integers(0, 2**63))
@settings(max_examples=25, deadline=None)
def test_any_valid_inputs_replay_exactly(stream: list[TickInputs], seed: int) -> None:
    check_replays(__Class__, {}, seed, stream)


async def test_bots_play_a_match_on_a_real_server_and_its_log_verifies(tmp_path: Path) -> None:
    config = ServerConfig(
        port=0, data_dir=tmp_path, match=MatchSettings(game="__name__", game_config={"time_limit_s": 3},
                                                      tick_rate=20, send_rate=20),
    )
    server = Server(config)
    running = asyncio.create_task(server.run())
    await asyncio.wait_for(server.ready.wait(), 15)
    try:
        report = await run_swarm("127.0.0.1", server.port, 3, duration=20, cafile=server.cert_path,
                                 behaviour="walker")
    finally:
        server.stop()
        await asyncio.wait_for(running, 15)
    assert report["connected"] == 3 and report["errors"] == 0 and report["closed_by_server"] == {"match over": 3}
    async with await LogReader.open(config.database_url()) as reader:
        result = await verify_match(reader, report["match_ids"][0])
    assert result.verified, result.reason
'''

README = """# __Class__

A game for the tickline game server: players walk
a grid and pick up coins; the first to the score limit wins.

## Run it

```sh
pip install -e '.[dev]'                       # also makes `--game __name__` known to tickline
tickline serve --game __name__ --http-port 8080   # the lobby: http://127.0.0.1:8080/
tickline bots --server 127.0.0.1:4433 --lobby http://127.0.0.1:8080 --n 8 --behaviour walker=3,random=1
tickline replay list                          # the matches in the log
tickline replay verify MATCH_ID               # re-simulate one and check every state hash
pytest                                        # the rules replay exactly; a real match verifies
```

## Change it

- `__name__/rules.py`: the rules. `inputs` and `view_schema()` declare what a player
  sends and sees; `step` advances the game one tick and must stay deterministic
  (integers, the PRNG in the state, sorted iteration); `view` is what one player sees.
- Raise `version` whenever a change could make an old match replay differently, and
  keep the old class importable in `previous_versions`:
  `tickline replay verify MATCH_ID --rules 2` then shows the first tick a recorded
  match would play differently under the new rules.
- `__name__/bot.py`: the bot behaviour load tests use (`--behaviour walker`); every
  game also gets `idle` and `random` (random valid inputs) for free.
- `tickline game doc __name__` prints the game's wire reference from its declarations.
"""
