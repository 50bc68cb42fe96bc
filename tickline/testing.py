"""Testing a game written on tickline: property-based inputs from its declarations, and
matches played, hashed and replayed in-process (no server, no network).

    from hypothesis import given
    from tickline.testing import check_replays, tick_streams

    @given(tick_streams(MyGame()))
    def test_my_game_replays(stream):
        check_replays(MyGame, {}, seed=1, stream=stream)

Needs hypothesis (tickline's ``dev`` extra, or ``pip install hypothesis``).
"""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

from tickline.shared.game import Controls, Rules, TickInputs, state_hash
from tickline.shared.schema import Bool, Choice, Field, Inputs, Int, ListOf, Text


def field_values(spec: Field) -> st.SearchStrategy[Any]:
    """Every value a declared field accepts."""
    if isinstance(spec, Int):
        return st.integers(spec.lo, spec.hi)
    if isinstance(spec, Choice):
        return st.sampled_from(spec.values)
    if isinstance(spec, Bool):
        return st.booleans()
    if isinstance(spec, Text):
        return st.text(max_size=spec.max_len)
    assert isinstance(spec, ListOf)
    return st.lists(field_values(spec.item), max_size=spec.max_len)


def controls(inputs: Inputs) -> st.SearchStrategy[Controls]:
    """Valid inputs: any subset of the controls, each within its bounds."""
    return st.fixed_dictionaries({}, optional={name: field_values(spec) for name, spec in inputs.controls.items()})


def tick_streams(rules: Rules, players: int = 4, ticks: int = 60) -> st.SearchStrategy[list[TickInputs]]:
    """Streams of ticks: ``players`` join at the first tick, then each tick any of them sends
    valid controls (decoded as the server decodes them), joins again after leaving, or leaves."""
    ids = list(range(1, players + 1))
    one_tick = st.fixed_dictionaries(
        {
            "inputs": st.dictionaries(st.sampled_from(ids), controls(rules.input_schema()), max_size=players),
            "leaves": st.lists(st.sampled_from(ids), max_size=1, unique=True),
        }
    )

    def build(drawn: list[dict[str, Any]]) -> list[TickInputs]:
        schema = rules.input_schema()
        stream = [TickInputs(joins=[(pid, f"p{pid}") for pid in ids])]
        present = set(ids)
        for tick in drawn:
            inputs = TickInputs()
            for pid in tick["leaves"]:  # a player present leaves; one who left comes back
                if pid in present:
                    inputs.leaves.append(pid)
                    present.discard(pid)
                else:
                    inputs.joins.append((pid, f"p{pid}"))
                    present.add(pid)
            for pid, raw in sorted(tick["inputs"].items()):
                inputs.inputs[pid] = schema.decode(raw)
            stream.append(inputs)
        return stream

    return st.lists(one_tick, min_size=1, max_size=ticks).map(build)


def play(rules: Rules, seed: int, stream: list[TickInputs]) -> list[str]:
    """The state hash after each tick of ``stream`` from a fresh initial state."""
    state = rules.initial_state(seed)
    hashes = []
    for inputs in stream:
        rules.step(state, TickInputs.from_record(inputs.to_record()))
        hashes.append(state_hash(state))
    return hashes


def check_replays(cls: type[Rules], config: dict[str, Any], seed: int, stream: list[TickInputs]) -> list[str]:
    """Assert what event sourcing needs of a game: the same stream gives the same hashes from
    a fresh rules object, and a state saved mid-match (as a keyframe is) and loaded again
    goes on exactly as the original. Returns the hashes."""
    first = play(cls(config), seed, stream)
    assert play(cls(config), seed, stream) == first, "two plays of the same stream differ"
    rules = cls(config)
    state = rules.initial_state(seed)
    half = len(stream) // 2
    for inputs in stream[:half]:
        rules.step(state, TickInputs.from_record(inputs.to_record()))
    reloaded = cls(config)
    state = reloaded.load_state(rules.dump_state(state))
    assert not half or state_hash(state) == first[half - 1], "a dumped and loaded state hashes differently"
    for i, inputs in enumerate(stream[half:], start=half):
        reloaded.step(state, TickInputs.from_record(inputs.to_record()))
        assert state_hash(state) == first[i], f"after a reload, tick {i + 1} differs"
    return first
