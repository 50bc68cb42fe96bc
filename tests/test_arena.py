"""Arena, the reference game: determinism, state round trips, and the game's behaviours."""

from __future__ import annotations

import copy
import hashlib
import os
import random
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tickline.shared.arena import AIM_LIMIT, UNIT, Arena
from tickline.shared.delta import apply, diff
from tickline.shared.game import (
    HASH_VERSION,
    HASH_VERSIONS,
    ConfigError,
    GameEvent,
    InvalidInput,
    State,
    TickInputs,
    rng_below,
    rng_seed,
    state_hash,
)
from tickline.shared.games import UnknownGame, make_rules

ROOT = Path(__file__).resolve().parent.parent

# A small, fast-paced arena where hits, kills, respawns and pickups all happen
# within a few hundred ticks.
BUSY = {
    "width": 150,
    "height": 150,
    "respawn_ms": 300,
    "pickup_every_ms": 200,
    "projectile_damage": 40,
    "fire_cooldown_ms": 50,
    "max_pickups": 3,
}


# ----------------------------------------------------------------- helpers


def run(rules, seed, stream, reload_at=None, hash_version=HASH_VERSION):
    """Play ``stream`` from ``seed``: (hash per tick from tick 0, events per tick, final state)."""
    state = rules.initial_state(seed)
    hashes = [state_hash(state, hash_version)]
    events = []
    for tick, inputs in enumerate(stream, 1):
        events.append(rules.step(state, inputs))
        if tick == reload_at:
            state = rules.load_state(rules.dump_state(state))
        hashes.append(state_hash(state, hash_version))
    return hashes, events, state


def reordered(inputs: TickInputs) -> TickInputs:
    """The same tick inputs built in another order (and sharing nothing with the original)."""
    return TickInputs(
        joins=list(reversed(inputs.joins)),
        leaves=list(reversed(inputs.leaves)),
        inputs={pid: dict(inputs.inputs[pid]) for pid in reversed(list(inputs.inputs))},
    )


def busy_stream(rules, rng: random.Random, ticks: int, players: int = 4) -> list[TickInputs]:
    """A seeded random stream: players join, wander, shoot in all directions, leave, rejoin."""
    stream = []
    present: set[int] = set()
    for tick in range(ticks):
        ti = TickInputs()
        for pid in range(1, players + 1):
            if pid not in present:
                if tick == 0 or rng.random() < 0.05:
                    ti.joins.append((pid, f"p{pid}"))
                    present.add(pid)
                continue
            if tick > 20 and rng.random() < 0.005:
                ti.leaves.append(pid)
                present.discard(pid)
                continue
            if rng.random() < 0.2:
                ti.inputs[pid] = rules.validate_input(
                    {
                        "mx": rng.choice((-1, 0, 1)),
                        "my": rng.choice((-1, 0, 1)),
                        "ax": rng.randint(-AIM_LIMIT, AIM_LIMIT),
                        "ay": rng.randint(-AIM_LIMIT, AIM_LIMIT),
                        "fire": rng.random() < 0.7,
                    }
                )
        stream.append(ti)
    return stream


def two_players(rules, seed=7, shooter_at=(500, 500), target_at=(600, 500)):
    """A state with player 1 (shooter) and 2 (target) placed at the given world positions."""
    state = rules.initial_state(seed)
    events = rules.step(state, TickInputs(joins=[(1, "shooter"), (2, "target")]))
    assert [e["k"] for e in events] == ["join", "join"]
    for pid, (x, y) in ((1, shooter_at), (2, target_at)):
        state["players"][pid]["x"], state["players"][pid]["y"] = x * UNIT, y * UNIT
    return state


def fire_right(rules, fire=True):
    return rules.validate_input({"ax": 1000, "ay": 0, "fire": fire})


def step_until(rules, state, kind, inputs=None, limit=2000):
    """Step until an event of ``kind`` happens; returns that tick's events."""
    first = inputs or TickInputs()
    for i in range(limit):
        events = rules.step(state, first if i == 0 else TickInputs())
        if any(e["k"] == kind for e in events):
            return events
    raise AssertionError(f"no {kind!r} event within {limit} ticks")


def predicted_spot(rules, rng_state: int) -> tuple[int, int]:
    """Where the next random spot lands, computed from the PRNG state independently."""
    box = {"rng": rng_state}
    return (
        rules.pr + rng_below(box, rules.w - 2 * rules.pr),
        rules.pr + rng_below(box, rules.h - 2 * rules.pr),
    )


# ----------------------------------------------------------------- strategies

pids = st.integers(min_value=1, max_value=5)
aims = st.integers(min_value=-AIM_LIMIT, max_value=AIM_LIMIT)
raw_controls = st.fixed_dictionaries(
    {},
    optional={
        "mx": st.sampled_from((-1, 0, 1)),
        "my": st.sampled_from((-1, 0, 1)),
        "ax": aims,
        "ay": aims,
        "fire": st.booleans(),
    },
)
full_controls = st.fixed_dictionaries(
    {
        "mx": st.sampled_from((-1, 0, 1)),
        "my": st.sampled_from((-1, 0, 1)),
        "ax": aims,
        "ay": aims,
        "fire": st.booleans(),
    }
)
actions = st.one_of(
    st.tuples(st.just("join"), pids),
    st.tuples(st.just("leave"), pids),
    st.tuples(st.just("ctl"), pids, raw_controls),
    st.tuples(st.just("ctl"), pids, full_controls),
    st.tuples(st.just("ctl"), pids, full_controls),
)
# (quiet ticks before, actions of the tick); players keep their last controls in between.
segments = st.tuples(st.integers(min_value=0, max_value=10), st.lists(actions, max_size=4))


@st.composite
def input_streams(draw, rules):
    """50-200 ticks: some players join at tick 1, then random joins, leaves and controls."""
    length = draw(st.integers(min_value=50, max_value=200))
    first = draw(st.lists(pids, min_size=1, max_size=5, unique=True))
    stream = [TickInputs(joins=[(pid, f"p{pid}") for pid in first])]
    for gap, acts in draw(st.lists(segments, min_size=1, max_size=25)):
        stream.extend(TickInputs() for _ in range(gap))
        ti = TickInputs()
        for act in acts:
            if act[0] == "join":
                ti.joins.append((act[1], f"p{act[1]}"))
            elif act[0] == "leave":
                ti.leaves.append(act[1])
            else:
                ti.inputs[act[1]] = rules.validate_input(act[2])
        stream.append(ti)
    stream.extend(TickInputs() for _ in range(length - len(stream)))
    return stream[:length]


# ----------------------------------------------------------------- determinism


@pytest.mark.parametrize(
    "config", [{}, BUSY, {**BUSY, "weapon": "hitscan", "hitscan_range": 400}], ids=["default", "busy", "hitscan"]
)
@given(data=st.data(), seed=st.integers(min_value=0, max_value=2**64 - 1))
@settings(max_examples=50, deadline=None)
def test_same_seed_and_inputs_give_identical_hashes_every_tick(config, data, seed):
    stream = data.draw(input_streams(Arena(config)))
    hashes_a, events_a, state_a = run(Arena(config), seed, stream)
    hashes_b, events_b, state_b = run(Arena(config), seed, [reordered(t) for t in stream])
    assert hashes_a == hashes_b
    assert events_a == events_b
    assert state_a == state_b
    assert len(hashes_a) == len(stream) + 1
    assert state_a["tick"] == len(stream) or state_a["over"]


@given(data=st.data(), seed=st.integers(min_value=0, max_value=2**64 - 1))
@settings(max_examples=30, deadline=None)
def test_dump_and_load_mid_match_keeps_every_later_hash(data, seed):
    rules = Arena(BUSY)
    stream = data.draw(input_streams(rules))
    reload_at = data.draw(st.integers(min_value=0, max_value=len(stream)))
    plain, plain_events, _ = run(rules, seed, stream)
    reloaded, reloaded_events, _ = run(rules, seed, stream, reload_at=reload_at)
    assert plain == reloaded
    assert plain_events == reloaded_events


def test_busy_scenario_exercises_every_event_kind_deterministically():
    rules = Arena(BUSY)
    stream = busy_stream(rules, random.Random(1234), 900)
    hashes_a, events_a, _ = run(rules, 99, stream)
    hashes_b, events_b, _ = run(Arena(BUSY), 99, [reordered(t) for t in stream])
    assert hashes_a == hashes_b
    assert events_a == events_b
    kinds = {e["k"] for tick in events_a for e in tick}
    assert {"join", "leave", "fire", "hit", "kill", "respawn", "pickup"} <= kinds
    assert len(set(hashes_a)) == len(hashes_a)  # every tick changes the state (the tick counter)


# Digests of every tick's hash over a 600-tick busy match, recorded with arena version 1,
# under each state hash version (1: BLAKE2b, 2: xxh3). Logs written by earlier releases must
# still verify: a change to the rules' code that moves any hash needs a new rules version,
# and a change to how a state is hashed a new hash version, not a new pin.
RECORDED = {
    "projectile": ({}, {1: "e9964c65db622cb73c6e6da47ce4c28a", 2: "f29479cbcff210a5652930a77aab7c64"}),
    "hitscan": (
        {"weapon": "hitscan", "hitscan_range": 60, "lag_comp_ms": 100},
        {1: "3bbd312f806e2f502c8e644582e5d2b2", 2: "933899b2c548ab054eeb42d7d1704e52"},
    ),
    "hitscan, no rewind, time limit": (
        {"weapon": "hitscan", "hitscan_range": 60, "lag_comp_ms": 0, "time_limit_s": 8},
        {1: "53afff10d06444207ea483b7fd99bf2e", 2: "6795c8b7ecfc50471edd625168fdaf05"},
    ),
}


@pytest.mark.parametrize("version", HASH_VERSIONS)
@pytest.mark.parametrize("name", sorted(RECORDED))
def test_the_arena_reproduces_the_hashes_its_version_recorded(name: str, version: int) -> None:
    extra, recorded = RECORDED[name]
    rules = make_rules("arena", {**BUSY, **extra})
    assert rules.version == 1
    stream = busy_stream(rules, random.Random(2024), 600, players=6)
    hashes, events, _ = run(rules, 99, stream, hash_version=version)
    assert {"hit", "kill", "respawn"} <= {e["k"] for tick in events for e in tick}
    assert hashlib.blake2b("".join(hashes).encode(), digest_size=16).hexdigest() == recorded[version]


def test_an_unknown_hash_version_is_refused_with_what_to_do() -> None:
    with pytest.raises(ValueError, match=r"state hash version 3 is not one this tickline knows \(1, 2\); upgrade"):
        state_hash({"tick": 1}, 3)


def test_different_seed_gives_different_hashes_and_spawn_spots():
    rules = Arena(BUSY)
    stream = busy_stream(rules, random.Random(5), 120)
    hashes_1, _, _ = run(rules, 1, stream[:1])
    hashes_2, _, _ = run(rules, 2, stream[:1])
    assert hashes_1[0] != hashes_2[0]
    assert hashes_1[1] != hashes_2[1]
    s1, s2 = rules.initial_state(1), rules.initial_state(2)
    rules.step(s1, stream[0])
    rules.step(s2, stream[0])
    spots_1 = [(p["x"], p["y"]) for _, p in sorted(s1["players"].items())]
    spots_2 = [(p["x"], p["y"]) for _, p in sorted(s2["players"].items())]
    assert len(spots_1) == 4
    assert spots_1 != spots_2
    full_1, _, _ = run(rules, 1, stream)
    full_2, _, _ = run(rules, 2, stream)
    assert all(a != b for a, b in zip(full_1, full_2, strict=False))


def test_state_hash_is_independent_of_dict_insertion_order():
    rules = Arena()
    state = rules.initial_state(3)
    rules.step(state, TickInputs(joins=[(2, "b"), (1, "a"), (10, "c")]))
    shuffled = {k: state[k] for k in reversed(list(state))}
    shuffled["players"] = {pid: dict(reversed(list(p.items()))) for pid, p in reversed(list(state["players"].items()))}
    assert state_hash(shuffled) == state_hash(state)
    shuffled["players"][1]["x"] += 1
    assert state_hash(shuffled) != state_hash(state)


_SUBPROCESS_SCENARIO = textwrap.dedent(
    """
    import random, sys
    sys.path.insert(0, {tests!r})
    from test_arena import BUSY, busy_stream, run
    from tickline.shared.arena import Arena
    rules = Arena(BUSY)
    hashes, _, _ = run(rules, 2024, busy_stream(rules, random.Random(77), 300))
    print(hashes[-1], len(set(hashes)))
    """
)


def test_hashes_do_not_depend_on_the_python_hash_seed():
    rules = Arena(BUSY)
    hashes, _, _ = run(rules, 2024, busy_stream(rules, random.Random(77), 300))
    expected = f"{hashes[-1]} {len(set(hashes))}"
    code = _SUBPROCESS_SCENARIO.format(tests=str(ROOT / "tests"))
    for hash_seed in ("0", "4242"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        out = subprocess.run(
            [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
        )
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip() == expected


# ----------------------------------------------------------------- state and input records


def test_dump_state_load_state_round_trip_keeps_hash_and_later_simulation():
    rules = Arena(BUSY)
    stream = busy_stream(rules, random.Random(8), 400)
    state = rules.initial_state(11)
    for ti in stream[:200]:
        rules.step(state, ti)
    assert state["players"] and state["shots"] and state["pickups"]
    data = rules.dump_state(state)
    loaded = rules.load_state(data)
    assert state_hash(loaded) == state_hash(state)
    assert loaded == state
    assert all(type(k) is int for t in ("players", "shots", "pickups") for k in loaded[t])
    assert rules.dump_state(loaded) == data
    for ti in stream[200:]:
        events = rules.step(state, ti)
        assert rules.step(loaded, copy.deepcopy(ti)) == events
        assert state_hash(loaded) == state_hash(state)


@given(
    st.lists(st.tuples(pids, st.text(max_size=8)), max_size=4, unique_by=lambda j: j[0]),
    st.lists(pids, max_size=3, unique=True),
    st.dictionaries(pids, raw_controls, max_size=4),
)
@settings(max_examples=100)
def test_tick_inputs_record_round_trips_through_orjson(joins, leaves, raw):
    rules = Arena()
    ti = TickInputs(joins=joins, leaves=leaves, inputs={p: rules.validate_input(c) for p, c in raw.items()})
    record = ti.to_record()
    back = TickInputs.from_record(orjson.loads(orjson.dumps(record)))
    assert back.joins == sorted(joins)
    assert back.leaves == sorted(leaves)
    assert back.inputs == ti.inputs
    assert back.to_record() == record
    assert back.is_empty() == ti.is_empty() == (not record)


def test_tick_inputs_record_is_canonical_and_sorted():
    ti = TickInputs(joins=[(3, "c"), (1, "a")], leaves=[5, 2], inputs={9: {"mx": 1}, 4: {"mx": 0}})
    assert ti.to_record() == {
        "j": [[1, "a"], [3, "c"]],
        "l": [2, 5],
        "i": [[4, {"mx": 0}], [9, {"mx": 1}]],
    }
    assert TickInputs().to_record() == {}
    assert TickInputs().is_empty()


# ----------------------------------------------------------------- behaviours


def test_projectile_hit_damages_target():
    rules = Arena()
    state = two_players(rules)
    fire_tick = state["tick"] + 1
    events = rules.step(state, TickInputs(inputs={1: fire_right(rules)}))
    assert {"k": "fire", "p": 1, "s": 1} in events
    shot = state["shots"][1]
    assert (shot["vx"], shot["vy"]) == (rules.shot_speed, 0)
    events = step_until(rules, state, "hit")
    # 100 world units apart, hit radius 15+4: the shot (moving in its first tick too)
    # needs ceil((100-19)*UNIT / speed) moves.
    moves = -(-(100 - 19) * UNIT // rules.shot_speed)
    assert state["tick"] == fire_tick + moves - 1
    assert {"k": "hit", "p": 2, "by": 1} in events
    assert state["players"][2]["hp"] == 100 - 20
    assert state["players"][1]["hp"] == 100  # the shooter's own shot never hits it
    assert 1 not in state["shots"]


def test_projectile_that_misses_expires_without_damage():
    rules = Arena()
    state = two_players(rules, target_at=(500, 600))
    rules.step(state, TickInputs(inputs={1: fire_right(rules)}))
    rules.step(state, TickInputs(inputs={1: fire_right(rules, fire=False)}))
    for _ in range(rules.shot_ttl + 5):
        events = rules.step(state, TickInputs())
        assert not any(e["k"] == "hit" for e in events)
    assert state["shots"] == {}
    assert state["players"][2]["hp"] == 100


def test_fire_respects_the_cooldown():
    rules = Arena()
    state = two_players(rules, target_at=(500, 900))
    fire_ticks = []
    for i in range(40):
        events = rules.step(state, TickInputs(inputs={1: fire_right(rules)} if i == 0 else {}))
        fire_ticks += [state["tick"] for e in events if e["k"] == "fire"]
    assert rules.cooldown == 15
    assert fire_ticks == [2, 17, 32]


def test_enough_hits_kill_shooter_scores_and_victim_respawns_with_full_hp():
    rules = Arena()
    state = two_players(rules)
    step_until(rules, state, "kill", TickInputs(inputs={1: fire_right(rules)}))
    kill_tick = state["tick"]
    target, shooter = state["players"][2], state["players"][1]
    assert (target["alive"], target["hp"], target["deaths"]) == (False, 0, 1)
    assert target["respawn"] == kill_tick + rules.respawn
    assert shooter["score"] == 1 and shooter["deaths"] == 0
    rules.step(state, TickInputs(inputs={1: fire_right(rules, fire=False)}))
    while state["tick"] < kill_tick + rules.respawn - 1:
        assert not any(e["k"] == "respawn" for e in rules.step(state, TickInputs()))
        assert state["players"][2]["alive"] is False
    assert rules.respawn == 120  # respawn_ms 2000 at 60 ticks/s
    expected_spot = predicted_spot(rules, state["rng"])
    events = rules.step(state, TickInputs())
    assert state["tick"] == kill_tick + rules.respawn
    assert {"k": "respawn", "p": 2} in events
    target = state["players"][2]
    assert target["alive"] is True
    assert target["hp"] == rules.config["max_hp"]
    assert (target["x"], target["y"]) == expected_spot


def test_kill_takes_max_hp_over_damage_hits():
    rules = Arena({"max_hp": 50, "projectile_damage": 20})
    state = two_players(rules)
    rules.step(state, TickInputs(inputs={1: fire_right(rules)}))
    hits = kills = 0
    while not kills:
        for e in rules.step(state, TickInputs()):
            hits += e["k"] == "hit"
            kills += e["k"] == "kill"
    assert hits == 3
    assert state["players"][2]["hp"] == 0


def test_pickups_spawn_at_spots_drawn_from_the_seeded_prng():
    first_spots = []
    for seed in (42, 43):
        rules = Arena({"max_pickups": 2})
        state = rules.initial_state(seed)
        for _ in range(rules.pickup_every - 1):
            rules.step(state, TickInputs())
        assert state["pickups"] == {}
        expected = predicted_spot(rules, rng_seed(seed))
        rules.step(state, TickInputs())
        assert state["pickups"] == {1: {"x": expected[0], "y": expected[1]}}
        first_spots.append(expected)
        for _ in range(3 * rules.pickup_every):
            rules.step(state, TickInputs())
        assert len(state["pickups"]) == 2  # capped at max_pickups
    assert first_spots[0] != first_spots[1]


def test_pickup_heals_a_damaged_player_and_disappears():
    rules = Arena()
    state = rules.initial_state(5)
    rules.step(state, TickInputs(joins=[(1, "a")]))
    while not state["pickups"]:
        rules.step(state, TickInputs())
    ((kid, spot),) = state["pickups"].items()
    player = state["players"][1]
    player["x"], player["y"], player["hp"] = spot["x"], spot["y"], 50
    events = rules.step(state, TickInputs())
    assert {"k": "pickup", "p": 1} in events
    assert player["hp"] == 50 + rules.config["pickup_heal"]
    assert kid not in state["pickups"]


def test_pickup_heal_is_capped_and_a_full_hp_player_leaves_it():
    rules = Arena()
    state = rules.initial_state(5)
    rules.step(state, TickInputs(joins=[(1, "a")]))
    state["pickups"][99] = {"x": state["players"][1]["x"], "y": state["players"][1]["y"]}
    rules.step(state, TickInputs())
    assert 99 in state["pickups"]  # full hp: not taken
    state["players"][1]["hp"] = 90
    events = rules.step(state, TickInputs())
    assert {"k": "pickup", "p": 1} in events
    assert state["players"][1]["hp"] == 100
    assert 99 not in state["pickups"]


def test_match_ends_at_the_time_limit_with_the_top_scorer_winning():
    rules = Arena({"time_limit_s": 1})
    state = rules.initial_state(9)
    rules.step(state, TickInputs(joins=[(1, "a"), (2, "b"), (3, "c")]))
    state["players"][2]["score"] = 3
    state["players"][3]["score"] = 1
    while state["tick"] < 59:
        rules.step(state, TickInputs())
        assert not rules.is_over(state)
    events = rules.step(state, TickInputs())
    assert state["tick"] == 60
    assert {"k": "over", "winner": 2} in events
    assert rules.is_over(state) and state["winner"] == 2
    assert rules.view(state, 1)["over"] is True and rules.view(state, 1)["winner"] == 2
    before = state_hash(state)
    assert rules.step(state, TickInputs(joins=[(4, "late")])) == []
    assert state_hash(state) == before  # a finished match no longer changes


def test_match_ends_at_the_score_limit_with_the_scorer_winning():
    rules = Arena({"score_limit": 2, "projectile_damage": 100, "respawn_ms": 100})
    state = two_players(rules)
    events = step_until(rules, state, "kill", TickInputs(inputs={1: fire_right(rules)}))
    assert state["players"][1]["score"] == 1
    assert not rules.is_over(state)
    assert not any(e["k"] == "over" for e in events)
    rules.step(state, TickInputs(inputs={1: fire_right(rules, fire=False)}))
    step_until(rules, state, "respawn")
    for _ in range(rules.shot_ttl):  # let old shots expire, then line the target up again
        rules.step(state, TickInputs())
    state["players"][2]["x"], state["players"][2]["y"] = 600 * UNIT, 500 * UNIT
    state["players"][1]["x"], state["players"][1]["y"] = 500 * UNIT, 500 * UNIT
    events = step_until(rules, state, "kill", TickInputs(inputs={1: fire_right(rules)}))
    assert {"k": "over", "winner": 1} in events
    assert rules.is_over(state) and state["winner"] == 1
    assert state["tick"] < rules.time_limit


def test_leave_removes_the_player_and_join_is_idempotent():
    rules = Arena()
    state = rules.initial_state(1)
    events = rules.step(state, TickInputs(joins=[(1, "a")]))
    spot = (state["players"][1]["x"], state["players"][1]["y"])
    assert rules.step(state, TickInputs(joins=[(1, "again")])) == []
    assert state["players"][1]["name"] == "a"
    assert (state["players"][1]["x"], state["players"][1]["y"]) == spot
    events = rules.step(state, TickInputs(leaves=[1, 7]))
    assert events == [{"k": "leave", "p": 1}]
    assert state["players"] == {}


def test_players_move_at_config_speed_and_stay_inside_the_walls():
    rules = Arena()
    state = two_players(rules, shooter_at=(500, 500), target_at=(100, 100))
    rules.step(
        state, TickInputs(inputs={1: rules.validate_input({"mx": 1}), 2: rules.validate_input({"mx": 1, "my": 1})})
    )
    assert state["players"][1]["x"] == 500 * UNIT + 200 * UNIT // 60
    diag = (200 * UNIT // 60) * 181 // 256
    assert state["players"][2]["x"] == state["players"][2]["y"] == 100 * UNIT + diag
    rules.step(state, TickInputs(inputs={1: rules.validate_input({"mx": -1, "my": -1})}))
    for _ in range(400):
        rules.step(state, TickInputs())
    assert state["players"][1]["x"] == state["players"][1]["y"] == 15 * UNIT
    assert state["players"][2]["x"] == state["players"][2]["y"] == 1000 * UNIT - 15 * UNIT


def test_view_is_json_with_string_keys_and_deltas_rebuild_it():
    rules = Arena(BUSY)
    stream = busy_stream(rules, random.Random(3), 200)
    state = rules.initial_state(3)
    client: dict[str, Any] = {}
    previous: dict[str, Any] = {}
    for ti in stream:
        rules.step(state, ti)
        view = rules.view(state, 1)
        client = apply(client, orjson.loads(orjson.dumps(diff(previous, view))))
        previous = view
        assert client == orjson.loads(orjson.dumps(view))
    assert set(client) == {"players", "shots", "pickups", "over", "winner"}


@pytest.mark.parametrize("radius", [0, 60], ids=["whole room", "view radius"])
def test_views_reuse_exactly_the_entities_that_did_not_change(radius: int) -> None:
    config = {**BUSY, "view_radius": radius}
    rules = Arena(config)
    state = rules.initial_state(5)
    previous: dict[str, Any] = {}
    reused = 0
    for ti in busy_stream(rules, random.Random(5), 200):
        rules.step(state, ti)
        view = rules.view(state, 1)
        # The same as a view built with nothing cached...
        assert view == Arena(config).view(copy.deepcopy(state), 1)
        # ...whose unchanged entities are the very dicts of the tick before (diffs skip them
        # by identity), and whose changed ones are new.
        for table in ("players", "shots", "pickups"):
            for key, entity in view[table].items():
                before = previous.get(table, {}).get(key)
                if before is not None:
                    assert (entity is before) == (entity == before), (table, key)
                    reused += entity is before
        previous = view
    assert reused  # (dead players, shots and pickups stay put)


# ----------------------------------------------------------------- validation


@pytest.mark.parametrize(
    "raw",
    [
        {"jump": True},
        {"mx": 1, "MX": 1},
        {"mx": 2},
        {"my": -2},
        {"mx": True},  # bool for int
        {"my": False},
        {"mx": 1.0},
        {"mx": "1"},
        {"ax": AIM_LIMIT + 1},
        {"ay": -AIM_LIMIT - 1},
        {"ax": True},
        {"ay": 0.5},
        {"fire": 1},
        {"fire": None},
        {"fire": "yes"},
        [],
        None,
        "mx",
        5,
        [["mx", 1]],
    ],
)
def test_validate_input_rejects_bad_controls(raw):
    with pytest.raises(InvalidInput):
        Arena().validate_input(raw)


def test_validate_input_normalises_partial_controls():
    rules = Arena()
    assert rules.validate_input({}) == {"mx": 0, "my": 0, "ax": 0, "ay": 0, "fire": False}
    raw = {"mx": -1, "ay": AIM_LIMIT, "fire": True}
    out = rules.validate_input(raw)
    assert out == {"mx": -1, "my": 0, "ax": 0, "ay": AIM_LIMIT, "fire": True}
    assert out is not raw and raw == {"mx": -1, "ay": AIM_LIMIT, "fire": True}


@pytest.mark.parametrize(
    ("config", "key"),
    [
        ({"nope": 1}, "nope"),
        ({"width": "1000"}, "width"),
        ({"width": 1000.0}, "width"),
        ({"width": True}, "width"),  # bool for int
        ({"score_limit": None}, "score_limit"),
        ({"max_hp": 0}, "max_hp"),
        ({"respawn_ms": -5}, "respawn_ms"),
    ],
)
def test_validate_config_rejects_unknown_keys_wrong_types_and_nonpositive_values(config, key):
    with pytest.raises(ConfigError, match=key):
        Arena(config)


def test_validate_config_merges_defaults():
    rules = Arena({"width": 400, "tick_rate": 30})
    assert rules.config == {**Arena.default_config(), "width": 400, "tick_rate": 30}
    assert rules.w == 400 * UNIT
    assert rules.respawn == 60
    assert Arena().config == Arena.default_config()


def test_make_rules_binds_a_known_game_and_refuses_unknown_games_and_versions():
    rules = make_rules("arena", {"width": 300}, version=Arena.version)
    assert isinstance(rules, Arena) and rules.config["width"] == 300
    assert isinstance(make_rules("arena"), Arena)
    with pytest.raises(UnknownGame, match="chess"):
        make_rules("chess")
    with pytest.raises(UnknownGame, match="version"):
        make_rules("arena", version=Arena.version + 1)
    with pytest.raises(ConfigError):
        make_rules("arena", {"bogus": 1})


def test_shared_imports_without_asyncio():
    code = (
        "import shared.protocol, shared.delta, shared.arena, shared.games, shared.logformat, sys; "
        "assert 'asyncio' not in sys.modules, 'asyncio was imported'"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr


@pytest.mark.parametrize("aim", [(1, 1), (3, 4), (1000, 1000), (-7, 2), (0, 1)])
def test_shot_speed_does_not_depend_on_aim_vector_length(aim):
    rules = make_rules("arena")
    assert isinstance(rules, Arena)
    state = rules.initial_state(3)
    rules.step(state, TickInputs(joins=[(1, "a")]))
    rules.step(state, TickInputs(inputs={1: rules.validate_input({"ax": aim[0], "ay": aim[1], "fire": True})}))
    [shot] = state["shots"].values()
    speed2 = shot["vx"] ** 2 + shot["vy"] ** 2
    assert abs(speed2**0.5 - rules.shot_speed) <= 2


def _move_shots_by_scanning_everyone(rules: Arena, state: State, tick: int, events: list[GameEvent]) -> None:
    """The projectile step as it was before its grid: every shot against every player, in id order."""
    shots, players = state["shots"], state["players"]
    targets = sorted(players.items())
    for sid in sorted(shots):
        s = shots[sid]
        x, y = s["x"] + s["vx"], s["y"] + s["vy"]
        s["x"], s["y"] = x, y
        if tick >= s["expires"] or not (0 <= x <= rules.w and 0 <= y <= rules.h):
            del shots[sid]
            continue
        for pid, p in targets:
            if pid == s["owner"] or not p["alive"]:
                continue
            if (p["x"] - x) ** 2 + (p["y"] - y) ** 2 <= rules.hit_r2:
                del shots[sid]
                rules._damage(state, pid, s["owner"], tick, events)
                break


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 2**32), st.integers(2, 40), st.sampled_from([1, 4, 30]))
def test_the_projectile_grid_hits_whom_a_scan_of_every_player_hits(seed: int, n: int, player_radius: int) -> None:
    rules = make_rules(
        "arena",
        {"width": 300, "height": 300, "player_radius": player_radius, "fire_cooldown_ms": 50, "max_players": 64},
    )
    assert isinstance(rules, Arena)
    state = rules.initial_state(seed)
    rules.step(state, TickInputs(joins=[(pid, f"p{pid}") for pid in range(1, n + 1)]))
    rng = random.Random(seed)
    hits = 0
    for tick in range(2, 90):
        controls = {
            pid: {
                "mx": rng.choice((-1, 0, 1)),
                "my": rng.choice((-1, 0, 1)),
                "fire": True,
                "ax": rng.randint(-5, 5) or 1,
                "ay": rng.randint(-5, 5),
            }
            for pid in range(1, n + 1)
        }
        rules.step(state, TickInputs(inputs=controls))
        grid, scan = copy.deepcopy(state), copy.deepcopy(state)
        grid_events: list[GameEvent] = []
        scan_events: list[GameEvent] = []
        rules._move_shots(grid, tick + 1, grid_events)
        _move_shots_by_scanning_everyone(rules, scan, tick + 1, scan_events)
        assert grid == scan and grid_events == scan_events
        hits += sum(1 for e in scan_events if e["k"] == "hit")
    assert hits > 0 or n < 10  # the comparison saw shots land, not only misses
