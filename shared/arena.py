"""Arena, the reference game: a top-down 2D deathmatch.

Players move in eight directions and shoot projectiles along an aim vector;
projectiles fly straight, hit the first player they touch, and expire. Damage
kills, the killer scores, the dead respawn after a delay at a random spot.
Health pickups appear at random spots on a timer. The match ends on a time
limit or when a player reaches the score limit.

Determinism (docs/design.md): all arithmetic is on integers. Lengths are in
*fixed units*, 1/100 of a world unit (``UNIT``); speeds given per second in the
config become whole fixed units per tick. The only square root is
``math.isqrt`` on integers. Randomness comes from the splitmix64 state kept in
``state["rng"]``. Entity tables are dicts keyed by int ids, iterated in sorted
order.
"""

from __future__ import annotations

from math import isqrt
from typing import Any, ClassVar

import orjson

from tickline.shared.game import (
    ConfigError,
    Controls,
    GameEvent,
    Rules,
    State,
    TickInputs,
    rng_below,
    rng_seed,
)
from tickline.shared.schema import Bool, Choice, Draw, Inputs, Int, Table, Text, View

UNIT = 100  # fixed units per world unit
AIM_LIMIT = 1_000_000
TICK_LIMIT = 2**31

INPUTS = Inputs(
    controls={
        "mx": Choice((-1, 0, 1), default=0, doc="move left (-1) or right (1)"),
        "my": Choice((-1, 0, 1), default=0, doc="move up (-1) or down (1)"),
        "ax": Int(-AIM_LIMIT, AIM_LIMIT, doc="aim: x of a vector from the player (any length)"),
        "ay": Int(-AIM_LIMIT, AIM_LIMIT, doc="aim: y of the same vector"),
        "fire": Bool(doc="fire along the aim (at most once per fire_cooldown_ms)"),
        "vt": Int(0, TICK_LIMIT - 1, doc="the tick the player sees (hitscan rewinds to it)", unit="tick"),
    },
    optional=frozenset({"vt"}),
    doc="One input per tick (or per input_ticks); a player without a new input keeps its controls.",
)
_IDLE: Controls = INPUTS.idle()
# 181/256 ~ 1/sqrt(2): diagonal moves are no faster than straight ones.
_DIAG_NUM, _DIAG_DEN = 181, 256
_Tables = tuple[dict[str, Any], dict[str, Any], dict[str, Any]]  # players, shots, pickups: key -> view
_Placed = tuple[list[Any], list[Any], list[Any]]  # the same, each view with its key and position


class Arena(Rules):
    name = "arena"
    version = 1
    inputs = INPUTS
    marks = ("kill",)
    behaviours: ClassVar[dict[str, str]] = {
        "arena": "tickline.bots.arena_bot:ArenaBot",
        "wander": "tickline.bots.behaviours:WanderBot",
    }

    @classmethod
    def default_config(cls) -> dict[str, Any]:
        return {
            "tick_rate": 60,
            "width": 1000,  # world units
            "height": 1000,
            "max_players": 32,
            "player_radius": 15,
            "player_speed": 200,  # world units per second
            "max_hp": 100,
            "fire_cooldown_ms": 250,
            "projectile_speed": 600,
            "projectile_radius": 4,
            "projectile_damage": 20,
            "projectile_ttl_ms": 1500,
            "respawn_ms": 2000,
            "pickup_every_ms": 3000,
            "max_pickups": 4,
            "pickup_radius": 12,
            "pickup_heal": 30,
            "time_limit_s": 300,
            "score_limit": 25,
            "view_radius": 500,  # world units a player sees around itself; 0: everything
            "view_step": 10,  # positions in views are in steps of this many fixed units
            # "projectile": shots fly along the aim. "hitscan": fire hits the nearest
            # other player within hitscan_range at once, judged where the shooter saw
            # them (lag compensation, up to lag_comp_ms back).
            "weapon": "projectile",
            "hitscan_range": 150,
            "lag_comp_ms": 1000,
        }

    def validate_config(self, config: dict[str, Any]) -> dict[str, Any]:
        merged = super().validate_config(config)
        for key, value in merged.items():
            if isinstance(value, int) and value <= 0 and key not in ("view_radius", "lag_comp_ms"):
                raise ConfigError(f"arena config key {key!r} must be positive, got {value}")
        if merged["weapon"] not in ("projectile", "hitscan"):
            raise ConfigError("arena config key 'weapon' must be 'projectile' or 'hitscan'")
        return merged

    def __init__(self, config: dict[str, Any] | None = None) -> None:
        super().__init__(config)
        c = self.config
        rate: int = c["tick_rate"]

        def ticks(ms: int) -> int:
            return max(1, ms * rate // 1000)

        self.w = c["width"] * UNIT
        self.h = c["height"] * UNIT
        self.pr = c["player_radius"] * UNIT
        self.speed = c["player_speed"] * UNIT // rate
        self.shot_speed = c["projectile_speed"] * UNIT // rate
        self.hit_r2 = ((c["player_radius"] + c["projectile_radius"]) * UNIT) ** 2
        self.hit_cell = max(1, (c["player_radius"] + c["projectile_radius"]) * UNIT)  # grid cell >= reach
        self.pick_r2 = ((c["player_radius"] + c["pickup_radius"]) * UNIT) ** 2
        self.cooldown = ticks(c["fire_cooldown_ms"])
        self.shot_ttl = ticks(c["projectile_ttl_ms"])
        self.respawn = ticks(c["respawn_ms"])
        self.pickup_every = ticks(c["pickup_every_ms"])
        self.time_limit = c["time_limit_s"] * rate
        self.view_r2 = (c["view_radius"] * UNIT) ** 2
        # The last tick's views (see _entity_views): its tables of players, shots and
        # pickups (key -> view), whose views are reused while unchanged, and their places.
        self._views: tuple[_Tables, _Placed] = (({}, {}, {}), ([], [], []))
        self._keys: dict[int, str] = {}  # players' ids as the views' keys
        self._views_at: tuple[int, int, int] | None = None
        self._generation = 0  # bumped whenever a state is made or stepped
        self.hitscan = c["weapon"] == "hitscan"
        self.hitscan_reach = c["hitscan_range"] * UNIT
        self.hitscan_r2 = self.hitscan_reach**2
        self.max_rewind = c["lag_comp_ms"] * rate // 1000
        self.q = c["view_step"]  # quantization of positions in views
        self._view_schema: View | None = None

    # ------------------------------------------------------------------ state

    def initial_state(self, seed: int) -> State:
        self._generation += 1
        return {
            "tick": 0,
            "rng": rng_seed(seed),
            "next_id": 1,
            "over": False,
            "winner": 0,
            "players": {},
            "shots": {},
            "pickups": {},
            # Lag compensation's memory: [tick, [pid, x, y, ...]] for the last
            # lag_comp_ms, newest last (hitscan only).
            "past": [],
        }

    def load_state(self, data: bytes) -> State:
        self._generation += 1
        state: State = orjson.loads(data)
        for table in ("players", "shots", "pickups"):
            state[table] = {int(k): v for k, v in sorted(state[table].items(), key=lambda kv: int(kv[0]))}
        return state

    def is_over(self, state: State) -> bool:
        return bool(state["over"])

    # ------------------------------------------------------------------ input

    def view_schema(self) -> View:
        """The view's units depend on the config: positions travel in view_step fixed units."""
        if self._view_schema is None:
            self._view_schema = self._declare_view()
        return self._view_schema

    def _declare_view(self) -> View:
        c = self.config
        step = self.q / UNIT  # world units per position step
        per_tick = 1 / UNIT  # world units per fixed unit
        pos = {"unit": "world units", "scale": step}
        big = 2**31 - 1
        return View(
            tables={
                "players": Table(
                    {
                        "name": Text(32, doc="the name the player joined with"),
                        "x": Int(0, big, doc="position, from the left edge", **pos),
                        "y": Int(0, big, doc="position, from the top edge", **pos),
                        "hp": Int(0, big, doc="health; 0 while dead"),
                        "score": Int(0, big, doc="kills"),
                        "alive": Bool(doc="false while waiting to respawn"),
                    },
                    doc="Every player within view_radius (and the player itself).",
                    interpolate=("x", "y"),
                    key="player id",
                    draw=Draw(
                        size=c["player_radius"],
                        label="name",
                        bar="hp",
                        bar_max=c["max_hp"],
                        hidden_when="alive",
                    ),
                ),
                "shots": Table(
                    {
                        "x0": Int(0, big, doc="where it was fired", **pos),
                        "y0": Int(0, big, doc="where it was fired", **pos),
                        "vx": Int(-big, big, doc="velocity", unit="world units per tick", scale=per_tick),
                        "vy": Int(-big, big, doc="velocity", unit="world units per tick", scale=per_tick),
                        "born": Int(0, big, doc="the tick it was fired: it is at x0 + vx * (tick - born)", unit="tick"),
                        "owner": Int(0, big, doc="the player who fired it"),
                    },
                    doc="Projectiles in flight; each flies straight, so its entry never changes.",
                    draw=Draw(
                        x="x0", y="y0", vx="vx", vy="vy", since="born", size=c["projectile_radius"], colour_by="owner"
                    ),
                ),
                "pickups": Table(
                    {"x": Int(0, big, doc="position", **pos), "y": Int(0, big, doc="position", **pos)},
                    doc="Health pickups.",
                    draw=Draw(shape="square", size=c["pickup_radius"], colour="#2e9e44"),
                ),
            },
            values={"over": Bool(doc="the match has ended"), "winner": Int(0, big, doc="the winner's player id")},
            doc="Positions are quantized to view_step fixed units (a tenth of a world unit by default).",
            world=(c["width"], c["height"]),
        )

    # ------------------------------------------------------------------ the tick

    def step(self, state: State, inputs: TickInputs) -> list[GameEvent]:
        events: list[GameEvent] = []
        self._generation += 1
        if state["over"]:
            return events
        state["tick"] += 1
        tick = state["tick"]
        players = state["players"]

        for pid in sorted(inputs.leaves):
            if players.pop(pid, None) is not None:
                events.append({"k": "leave", "p": pid})
        for pid, name in sorted(inputs.joins):
            if pid in players:
                continue
            x, y = self._random_spot(state)
            # Keys in sorted order: the state hash's sorted dump then finds them
            # in order, a third cheaper (a player's keys never change after this).
            players[pid] = dict(
                sorted(
                    {
                        "name": name,
                        "x": x,
                        "y": y,
                        "hp": self.config["max_hp"],
                        "score": 0,
                        "deaths": 0,
                        "alive": True,
                        "respawn": 0,
                        "cool": 0,
                        **_IDLE,
                    }.items()
                )
            )
            events.append({"k": "join", "p": pid})
        for pid in sorted(inputs.inputs):
            player = players.get(pid)
            if player is not None:
                player.update(inputs.inputs[pid])

        shooters = self._move_players(state, tick, events)
        if self.hitscan:
            self._remember(state, tick)
            for pid in shooters:
                self._fire_hitscan(state, pid, tick, events)
        self._move_shots(state, tick, events)
        self._pickups(state, tick, events)
        self._check_end(state, tick, events)
        return events

    def _move_players(self, state: State, tick: int, events: list[GameEvent]) -> list[int]:
        """Move (or respawn) every player, in id order; the ids of those who fire a
        hitscan weapon this tick (a projectile is fired here). One loop rather than a
        call per player: this runs for every player every tick."""
        players, move, hitscan = state["players"], self._move, self.hitscan
        shooters: list[int] = []
        for pid in sorted(players):
            p = players[pid]
            if not p["alive"]:
                if tick >= p["respawn"]:
                    p["x"], p["y"] = self._random_spot(state)
                    p["hp"] = self.config["max_hp"]
                    p["alive"] = True
                    events.append({"k": "respawn", "p": pid})
                continue
            p["x"], p["y"] = move(p["x"], p["y"], p["mx"], p["my"])
            if not p["fire"] or tick < p["cool"]:
                continue
            if hitscan:
                p["cool"] = tick + self.cooldown
                shooters.append(pid)
                continue
            # 16 extra bits keep the direction exact enough that a short aim
            # vector such as (1, 1) fires no faster than a long one.
            ax, ay = p["ax"] << 16, p["ay"] << 16
            length = isqrt(ax * ax + ay * ay)
            if length:
                sid = state["next_id"]
                state["next_id"] = sid + 1
                state["shots"][sid] = {
                    "x": p["x"],
                    "y": p["y"],
                    "x0": p["x"],
                    "y0": p["y"],
                    "born": tick,
                    "vx": ax * self.shot_speed // length,
                    "vy": ay * self.shot_speed // length,
                    "owner": pid,
                    "expires": tick + self.shot_ttl,
                }
                p["cool"] = tick + self.cooldown
                events.append({"k": "fire", "p": pid, "s": sid})
        return shooters

    def _remember(self, state: State, tick: int) -> None:
        flat: list[int] = []
        for pid, p in state["players"].items():
            if p["alive"]:
                flat += (pid, p["x"], p["y"])
        past = state["past"]
        past.append([tick, flat])
        if len(past) > self.max_rewind + 1:
            del past[0]

    def _fire_hitscan(self, state: State, pid: int, tick: int, events: list[GameEvent]) -> None:
        """Hit the nearest other player within range, where the shooter saw them.

        The shooter's input names the tick it was looking at (``vt``: what it
        drew, some latency and interpolation behind); the targets are taken from
        that tick's entry in ``past``, at most lag_comp_ms back. The rewind is
        decided by the logged input, so replays judge every shot the same way.
        """
        players = state["players"]
        shooter = players[pid]
        seen = min(tick, max(tick - self.max_rewind, shooter.get("vt", tick)))
        positions = next((flat for t, flat in reversed(state["past"]) if t <= seen), state["past"][-1][1])
        best, best_d2 = 0, self.hitscan_r2 + 1
        sx, sy, reach = shooter["x"], shooter["y"], self.hitscan_reach
        it = iter(positions)
        for target, x, y in zip(it, it, it, strict=False):
            dx, dy = x - sx, y - sy
            if dx > reach or dx < -reach or dy > reach or dy < -reach:
                continue  # out of range on one axis alone: most players, most shots
            d2 = dx * dx + dy * dy
            if d2 < best_d2 or (d2 == best_d2 and target < best):
                victim = players.get(target)
                if target != pid and victim is not None and victim["alive"]:
                    best, best_d2 = target, d2
        events.append({"k": "fire", "p": pid, "rewind": tick - seen})
        if best:
            self._damage(state, best, pid, tick, events)

    def _damage(self, state: State, pid: int, by: int, tick: int, events: list[GameEvent]) -> None:
        p = state["players"][pid]
        p["hp"] -= self.config["projectile_damage"]
        events.append({"k": "hit", "p": pid, "by": by})
        if p["hp"] <= 0:
            p["hp"] = 0
            p["alive"] = False
            p["deaths"] += 1
            p["respawn"] = tick + self.respawn
            shooter = state["players"].get(by)
            if shooter is not None:
                shooter["score"] += 1
            events.append({"k": "kill", "p": pid, "by": by})

    def _move(self, x: int, y: int, mx: int, my: int) -> tuple[int, int]:
        """One tick of walking; the same code moves players on the server and in prediction."""
        dx, dy = mx * self.speed, my * self.speed
        if dx and dy:
            dx, dy = dx * _DIAG_NUM // _DIAG_DEN, dy * _DIAG_NUM // _DIAG_DEN
        # Clamped to the walls; comparisons rather than min(max()) calls: this runs
        # for every player every tick.
        x, y, pr = x + dx, y + dy, self.pr
        if x < pr:
            x = pr
        elif x > self.w - pr:
            x = self.w - pr
        if y < pr:
            y = pr
        elif y > self.h - pr:
            y = self.h - pr
        return x, y

    def _move_shots(self, state: State, tick: int, events: list[GameEvent]) -> None:
        """Move every shot; a shot hits the lowest-numbered other live player within reach.

        Players sit in a grid of cells as wide as the reach (built once per tick:
        nobody moves while shots do), each listed in the 3x3 cells around its own,
        so a shot looks up its one cell rather than scanning every player; the same
        player is hit as by a scan of all.
        """
        shots, players = state["shots"], state["players"]
        if not shots:
            return  # nothing to move, and no grid to build
        hit_r2, w, h = self.hit_r2, self.w, self.h
        cell = self.hit_cell
        grid: dict[tuple[int, int], list[tuple[int, dict[str, Any]]]] = {}
        for pid, p in players.items():
            if not p["alive"]:
                continue  # nothing hits the dead
            cx, cy = p["x"] // cell, p["y"] // cell
            for gx in (cx - 1, cx, cx + 1):
                for gy in (cy - 1, cy, cy + 1):
                    grid.setdefault((gx, gy), []).append((pid, p))
        for sid in sorted(shots):
            s = shots[sid]
            x, y = s["x"] + s["vx"], s["y"] + s["vy"]
            s["x"], s["y"] = x, y
            if tick >= s["expires"] or not (0 <= x <= w and 0 <= y <= h):
                del shots[sid]
                continue
            near = grid.get((x // cell, y // cell))
            if near is None:
                continue
            owner = s["owner"]
            hit: int | None = None
            for pid, p in near:
                # A player killed by an earlier shot this tick is no longer alive.
                if pid == owner or not p["alive"] or (hit is not None and pid > hit):
                    continue
                ddx, ddy = p["x"] - x, p["y"] - y
                if ddx * ddx + ddy * ddy <= hit_r2:
                    hit = pid
            if hit is not None:
                del shots[sid]
                self._damage(state, hit, owner, tick, events)

    def _pickups(self, state: State, tick: int, events: list[GameEvent]) -> None:
        pickups, players = state["pickups"], state["players"]
        if tick % self.pickup_every == 0 and len(pickups) < self.config["max_pickups"]:
            kid = state["next_id"]
            state["next_id"] = kid + 1
            x, y = self._random_spot(state)
            pickups[kid] = {"x": x, "y": y}
        if not pickups:
            return  # nothing to pick up (and no need to find who is hurt)
        max_hp = self.config["max_hp"]
        hurt = [(pid, players[pid]) for pid in sorted(players) if players[pid]["hp"] < max_hp]
        if not hurt:
            return  # pickups only heal
        for kid in sorted(pickups):
            k = pickups[kid]
            for pid, p in hurt:
                if not p["alive"] or p["hp"] >= max_hp:  # healed by an earlier pickup this tick
                    continue
                ddx, ddy = p["x"] - k["x"], p["y"] - k["y"]
                if ddx * ddx + ddy * ddy <= self.pick_r2:
                    p["hp"] = min(max_hp, p["hp"] + self.config["pickup_heal"])
                    del pickups[kid]
                    events.append({"k": "pickup", "p": pid})
                    break

    def _check_end(self, state: State, tick: int, events: list[GameEvent]) -> None:
        if tick < self.time_limit and not any(event["k"] == "kill" for event in events):
            return  # scores rise only with a kill: without one, only the clock ends a match
        players = state["players"]
        top = max([p["score"] for p in players.values()], default=0)
        if tick >= self.time_limit or top >= self.config["score_limit"]:
            # The winner: the top score, the lowest player id among equals.
            best = max(sorted(players), key=lambda pid: players[pid]["score"], default=0)
            state["over"] = True
            state["winner"] = best
            events.append({"k": "over", "winner": best})

    def _random_spot(self, state: State) -> tuple[int, int]:
        return (
            self.pr + rng_below(state, self.w - 2 * self.pr),
            self.pr + rng_below(state, self.h - 2 * self.pr),
        )

    # ------------------------------------------------------------------ what a player sees

    def view(self, state: State, player_id: int) -> dict[str, Any]:
        """What ``player_id`` sees: itself, and whatever lies within ``view_radius``.

        Positions are quantized to ``view_step`` fixed units. Entities that come
        into range appear in the next delta and those that leave it disappear:
        to the client, spawns and despawns. Views show the state as the last
        ``step`` left it (they are built once per tick for every player). Views of
        one tick share their parts: they are read, never changed.
        """
        (players, shots, pickups), placed = self._entity_views(state)
        me = state["players"].get(player_id)
        if self.view_r2 and me is not None:
            near_players, near_shots, near_pickups = placed
            cx, cy, r2 = me["x"], me["y"], self.view_r2
            return {
                "players": {
                    k: v
                    for pid, k, v, x, y in near_players
                    if pid == player_id or (x - cx) * (x - cx) + (y - cy) * (y - cy) <= r2
                },
                "shots": {k: v for k, v, x, y in near_shots if (x - cx) * (x - cx) + (y - cy) * (y - cy) <= r2},
                "pickups": {k: v for k, v, x, y in near_pickups if (x - cx) * (x - cx) + (y - cy) * (y - cy) <= r2},
                "over": state["over"],
                "winner": state["winner"],
            }
        over, winner = state["over"], state["winner"]
        return {"players": players, "shots": shots, "pickups": pickups, "over": over, "winner": winner}

    def _entity_views(self, state: State) -> tuple[_Tables, _Placed]:
        """Every entity's view at this tick, built once for all players: the three tables
        (key -> view) and, with a view radius, each entity's view with its position.

        An entity whose view did not change since the previous tick keeps the
        very same dict, so that diffing against a baseline skips it by identity
        (``old is new``) rather than comparing its fields: most entities, most ticks.
        """
        key = (id(state), state["tick"], self._generation)
        if self._views_at == key:
            return self._views
        (players_before, shots_before, pickups_before), q = self._views[0], self.q
        placed: _Placed = ([], [], [])
        near_players, near_shots, near_pickups = placed
        radius = bool(self.view_r2)  # (without one, nobody needs the positions)
        names = self._keys
        if len(names) > 2 * len(state["players"]) + 64:  # players come and go: forget the gone
            names.clear()
        players: dict[str, Any] = {}
        for pid, p in state["players"].items():
            k = names.get(pid)
            if k is None:
                k = names[pid] = str(pid)
            x, y = p["x"] // q, p["y"] // q
            v = players_before.get(k)
            if (
                v is None
                or v["x"] != x
                or v["y"] != y
                or v["hp"] != p["hp"]
                or v["score"] != p["score"]
                or v["alive"] != p["alive"]
                or v["name"] != p["name"]  # (a player's never changes, but a key may come back)
            ):
                v = {"name": p["name"], "x": x, "y": y, "hp": p["hp"], "score": p["score"], "alive": p["alive"]}
            players[k] = v
            if radius:
                near_players.append((pid, k, v, p["x"], p["y"]))
        shots: dict[str, Any] = {}
        for sid, s in state["shots"].items():
            # A shot flies straight, so a client places it at any tick from where
            # and when it was fired: x0 + vx * (tick - born). Its view never
            # changes, and costs bytes only in the delta that spawns it.
            k = str(sid)
            v = shots_before.get(k) or {
                "x0": s["x0"] // q,
                "y0": s["y0"] // q,
                "vx": s["vx"],
                "vy": s["vy"],
                "born": s["born"],
                "owner": s["owner"],
            }
            shots[k] = v
            if radius:
                near_shots.append((k, v, s["x"], s["y"]))
        pickups: dict[str, Any] = {}
        for kid, pk in state["pickups"].items():
            k = str(kid)
            v = pickups_before.get(k) or {"x": pk["x"] // q, "y": pk["y"] // q}
            pickups[k] = v
            if radius:
                near_pickups.append((k, v, pk["x"], pk["y"]))
        self._views_at = key
        self._views = ((players, shots, pickups), placed)
        return self._views

    def view_key(self, state: State, player_id: int) -> Any:
        # Without a view radius everyone sees the same world: one view per tick.
        return None if not self.view_r2 else player_id

    def predict_self(self, me: dict[str, Any], inputs: list[Controls]) -> dict[str, Any]:
        if not inputs or not me.get("alive", True):
            return me
        x, y = me["x"] * self.q, me["y"] * self.q
        for controls in inputs:
            x, y = self._move(x, y, controls.get("mx", 0), controls.get("my", 0))
        return {**me, "x": x // self.q, "y": y // self.q}
