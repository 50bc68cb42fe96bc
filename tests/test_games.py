"""Games as plug-ins: the registry, declared schemas, a second game unlike arena, and
property tests that any game gets from its declarations."""

from __future__ import annotations

import random
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tickline.shared.arena import Arena
from tickline.shared.game import GameEvent, InvalidInput, Rules, State, TickInputs
from tickline.shared.games import GameNotInstalled, UnknownGame, game_class, load, names, unregister, versions
from tickline.shared.goofspiel import Goofspiel
from tickline.shared.schema import Choice, Inputs, Int, Table, describe
from tickline.testing import check_replays, controls, tick_streams

# ----------------------------------------------------------------- the registry


@pytest.fixture(autouse=True)
def _forget_registered_games() -> Iterator[None]:
    """Games these tests load by module stay known by name only within the test."""
    yield
    for name in ("tally", "arena"):
        unregister(name)


def test_built_in_games_are_found_by_name_through_their_entry_points() -> None:
    assert {"arena", "goofspiel"} <= set(names())
    assert load("arena") is Arena and load("goofspiel") is Goofspiel


def test_a_game_given_as_module_and_class_is_loaded_and_then_known_by_name() -> None:
    tally = load("tests.games:Tally")
    assert tally.name == "tally" and load("tally") is tally and "tally" in names()


def test_unknown_games_and_missing_versions_say_what_there_is() -> None:
    with pytest.raises(UnknownGame, match=r"unknown game 'chess'; installed games: .*arena.*goofspiel"):
        load("chess")
    with pytest.raises(UnknownGame, match=r"cannot load game 'no\.such\.module:Game'"):
        load("no.such.module:Game")
    with pytest.raises(UnknownGame, match="is not a tickline Rules class"):
        load("tickline.shared.arena:UNIT")
    with pytest.raises(GameNotInstalled, match="needs game 'chess' at rules version 3, which is not installed"):
        game_class("chess", 3)
    with pytest.raises(GameNotInstalled, match="installed with rules versions 1 only"):
        game_class("arena", 7)


def test_a_chain_of_versions_needs_each_to_name_only_the_one_before() -> None:
    class V3(Arena):
        version = 3
        previous_versions: ClassVar[tuple[type[Rules], ...]] = (load("tests.games:ArenaV2"),)

    assert sorted(versions(V3)) == [1, 2, 3] and versions(V3)[1] is Arena


def test_a_game_module_in_the_folder_the_command_runs_in_is_found_without_pythonpath() -> None:
    script = Path(sys.executable).parent / "tickline"  # the console script: its folder, not ours, on sys.path
    ran = subprocess.run(
        [str(script), "game", "doc", "tests.games:Tally"],
        capture_output=True,
        text=True,
        cwd=Path(__file__).parent.parent,
        timeout=60,
    )
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.startswith("# tally (rules version 1): inputs and views")


def test_older_versions_of_a_game_stay_reachable_by_version() -> None:
    v2 = load("tests.games:ArenaV2")
    assert versions(v2) == {1: Arena, 2: v2}
    assert game_class("arena", 1) is Arena and game_class("arena", 2) is v2
    assert v2().config == Arena().config  # a change of rules, not of config


# ----------------------------------------------------------------- declared schemas


def test_inputs_are_decoded_by_their_declaration_and_refused_naming_the_control() -> None:
    schema = Inputs({"dir": Choice((-1, 0, 1), default=0), "power": Int(0, 10)}, optional=frozenset({"power"}))
    assert schema.decode({}) == {"dir": 0} == schema.idle()
    assert schema.decode({"power": 3, "dir": 1}) == {"dir": 1, "power": 3}
    refusals = {
        "no object": ([1], "an input must be an object"),
        "out of range": ({"power": 11}, "'power' must be an integer from 0 to 10"),
        "bool is no int": ({"power": True}, "'power' must be an integer"),
        "a float is no choice": ({"dir": 1.0}, "'dir' must be -1, 0 or 1"),
        "unknown": ({"dir": 0, "warp": 1}, "unknown control 'warp'"),
    }
    for case, (raw, words) in refusals.items():
        with pytest.raises(InvalidInput, match=words):
            schema.decode(raw)
        assert case


@given(data=st.data())
@settings(max_examples=200, deadline=None)
def test_every_input_a_declaration_allows_decodes_and_every_random_one_too(data: st.DataObject) -> None:
    for rules in (Arena(), Goofspiel()):
        schema = rules.input_schema()
        raw = data.draw(controls(schema))
        decoded = schema.decode(raw)
        assert set(decoded) >= set(raw) and decoded == rules.validate_input(raw)
        assert schema.decode(schema.random(random.Random(data.draw(st.integers())))) is not None


def test_arena_keeps_its_decoded_inputs_exactly_as_before_schemas() -> None:
    rules = Arena()
    assert rules.validate_input({"mx": 1, "fire": True, "vt": 9}) == {
        "mx": 1,
        "my": 0,
        "ax": 0,
        "ay": 0,
        "fire": True,
        "vt": 9,
    }
    assert list(rules.idle_input()) == ["mx", "my", "ax", "ay", "fire"]


def test_a_declaration_refuses_defaults_its_own_checks_would_refuse() -> None:
    assert Int(1, 9).default == 1 and Int(-5, 5).default == 0 and Int(-9, -2).default == -9
    with pytest.raises(ValueError, match="default 12 is outside its bounds"):
        Int(0, 9, default=12)
    with pytest.raises(ValueError, match="default 2 is not one of its values"):
        Choice((-1, 0, 1), default=2)
    with pytest.raises(ValueError, match="interpolated fields"):
        Table({"x": Int(0, 9)}, interpolate=("y",))


def test_a_games_wire_reference_is_generated_from_its_declarations() -> None:
    text = describe("arena", 1, Arena().input_schema(), Arena({"view_step": 10}).view_schema())
    assert "| `mx` | one of -1, 0 or 1 | 0 |" in text and "| `vt` | integer 0 to 2147483647 | absent |" in text
    assert "### `players` (keyed by player id)" in text and "world units (value x 0.1)" in text
    hidden = describe("goofspiel", 1, Goofspiel().input_schema(), Goofspiel().view_schema())
    assert "`hand`" in hidden and "only you see them" in hidden


# ----------------------------------------------------------------- any game, fuzzed from its declarations


@given(stream=tick_streams(Arena({"time_limit_s": 60}), players=4, ticks=40), seed=st.integers(0, 2**63))
@settings(max_examples=15, deadline=None)
def test_arena_replays_from_any_valid_inputs(stream: list[TickInputs], seed: int) -> None:
    check_replays(Arena, {"time_limit_s": 60}, seed, stream)


@given(stream=tick_streams(Goofspiel({"cards": 5, "round_ms": 500}), players=3, ticks=60), seed=st.integers(0, 2**63))
@settings(max_examples=30, deadline=None)
def test_goofspiel_replays_from_any_valid_inputs(stream: list[TickInputs], seed: int) -> None:
    check_replays(Goofspiel, {"cards": 5, "round_ms": 500}, seed, stream)


# ----------------------------------------------------------------- goofspiel


def _goofspiel(**config: int) -> tuple[Goofspiel, State]:
    rules = Goofspiel({"cards": 5, "round_ms": 300, **config})  # 3 ticks a round at 10 Hz
    state = rules.initial_state(11)
    rules.step(state, TickInputs(joins=[(1, "ann"), (2, "bob")]))
    return rules, state


def _until_resolved(rules: Goofspiel, state: State, bids: dict[int, int]) -> list[GameEvent]:
    events = rules.step(state, TickInputs(inputs={pid: {"bid": b} for pid, b in bids.items()}))
    while not any(e["k"] == "resolved" for e in events):
        events = rules.step(state, TickInputs())
    return events


def test_goofspiel_deals_a_seeded_prize_deck_and_shows_the_first_prize() -> None:
    rules, state = _goofspiel()
    assert state["round"] == 1 and 1 <= state["prize"] <= 5
    assert sorted([*state["deck"], state["prize"]]) == [1, 2, 3, 4, 5]
    assert rules.initial_state(11)["deck"] == rules.initial_state(11)["deck"] != rules.initial_state(12)["deck"]


def test_the_highest_bid_wins_the_prize_and_a_tie_at_the_top_wins_nothing() -> None:
    rules, state = _goofspiel()
    prize = state["prize"]
    events = _until_resolved(rules, state, {1: 5, 2: 3})
    assert {"k": "resolved", "prize": prize, "winner": 1} in events
    assert state["players"][1]["score"] == prize and 5 not in state["players"][1]["hand"]
    tie_prize = state["prize"]
    events = _until_resolved(rules, state, {1: 4, 2: 4})
    assert {"k": "resolved", "prize": tie_prize, "winner": 0} in events
    assert state["players"][2]["score"] == 0


def test_no_choice_or_a_card_not_in_hand_plays_the_lowest_card() -> None:
    rules, state = _goofspiel()
    _until_resolved(rules, state, {1: 5})  # 2 chose nothing: plays its 1
    assert state["revealed"] == {1: {"bid": 5}, 2: {"bid": 1}}
    _until_resolved(rules, state, {1: 5, 2: 1})  # 5 and 1 are gone: 1 plays 1, 2 plays 2
    assert state["revealed"] == {1: {"bid": 1}, 2: {"bid": 2}}


def test_each_player_sees_its_own_hand_and_bid_and_only_that_others_are_ready() -> None:
    rules, state = _goofspiel()
    rules.step(state, TickInputs(inputs={1: {"bid": 4}}))
    ann, bob = rules.view(state, 1), rules.view(state, 2)
    assert ann["hand"] == bob["hand"] == [1, 2, 3, 4, 5] and ann["bid"] == 4 and bob["bid"] == 0
    assert ann["players"] == bob["players"]  # the shared part is the same for both
    assert ann["players"]["1"] == {"name": "ann", "score": 0, "cards": 5, "ready": True}
    assert "hand" not in ann["players"]["2"] and "bid" not in ann["players"]["2"]


def test_goofspiel_ends_after_the_last_prize_with_the_top_score() -> None:
    rules, state = _goofspiel()
    rounds, ties = 0, 0
    while not rules.is_over(state):
        for event in rules.step(state, TickInputs(inputs={1: {"bid": max(state["players"][1]["hand"], default=0)}})):
            if event["k"] == "resolved":
                rounds += 1
                ties += event["prize"] if event["winner"] == 0 else 0
    scores = {pid: p["score"] for pid, p in state["players"].items()}
    assert rounds == 5 and sum(scores.values()) + ties == 1 + 2 + 3 + 4 + 5
    top = max(scores.values())
    assert state["winner"] == min(pid for pid, s in scores.items() if s == top) == rules.result(state)["winner"]
    assert rules.result(state)["scores"] == {str(pid): s for pid, s in scores.items()}
