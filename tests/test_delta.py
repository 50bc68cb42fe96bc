"""Snapshot deltas: diff/apply laws on random nested views, and refusal of bad deltas.

Every test runs on each implementation (the native module where it is built, and its pure-
Python twin), and hypothesis checks that the two agree on every diff, apply and refusal.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tickline.shared import delta, native
from tickline.shared.delta import DeltaError

TWINS = native.twins("tickline.shared", "delta")
diff, diff_json, apply = delta.diff, delta.diff_json, delta.apply  # replaced for each implementation below


@pytest.fixture(scope="module", autouse=True, params=sorted(TWINS))
def implementation(request: pytest.FixtureRequest) -> Iterator[str]:
    """The module's tests, once on each implementation (module-scoped, as hypothesis wants)."""
    global diff, diff_json, apply
    module = TWINS[request.param]
    diff, diff_json, apply = module.diff, module.diff_json, module.apply
    yield request.param
    diff, diff_json, apply = delta.diff, delta.diff_json, delta.apply


def test_the_native_module_is_built_where_the_build_was_required() -> None:
    if native.REQUIRE_EXTENSIONS:
        assert "native" in TWINS and delta.diff is TWINS["native"].diff
    if native.NO_EXTENSIONS:
        assert delta.diff is TWINS["pure"].diff and native.report()["delta"] is False


# ----------------------------------------------------------------- strategies

# Few, short keys so that two random views share many keys and the diff has
# sets, updates and removals all at once.
keys = st.text(alphabet="abcd", min_size=1, max_size=2)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-2, max_value=2),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.text(alphabet="xy", max_size=2),
)
leaves = scalars | st.lists(scalars, max_size=3)


def views(depth: int = 3) -> st.SearchStrategy:
    """Dicts nested at most ``depth`` deep, leaves being JSON scalars or lists of them."""
    if depth == 1:
        return st.dictionaries(keys, leaves, max_size=5)
    return st.dictionaries(keys, leaves | views(depth - 1), max_size=5)


def mutated(view: dict[str, Any], draw, depth: int = 3) -> dict[str, Any]:
    """A copy of ``view`` with a few random changes: views that are near each other."""
    out: dict[str, Any] = {}
    for key, value in view.items():
        choice = draw(st.integers(min_value=0, max_value=5))
        if choice == 0:
            continue  # removed
        if choice == 1:
            out[key] = draw(leaves if depth == 1 else leaves | views(depth - 1))
        elif choice == 2 and isinstance(value, dict) and depth > 1:
            out[key] = mutated(value, draw, depth - 1)
        elif choice == 3:
            out[key] = retyped(value)
        else:
            out[key] = copy.deepcopy(value)
    for key, value in draw(st.dictionaries(keys, leaves, max_size=2)).items():
        out.setdefault(key, value)
    return out


def retyped(value):
    """An equal value (by Python's ==) of other types: 1 <-> True, 2 -> 2.0, deep in lists."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return bool(value) if value in (0, 1) else float(value)
    if isinstance(value, list):
        return [retyped(v) for v in value]
    if isinstance(value, dict):
        return {k: retyped(v) for k, v in value.items()}
    return value


def canon(value) -> bytes:
    """Type-strict equality: 1, 1.0 and True, or [1] and [True], all differ."""
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)


def typed(value):
    """``value`` with every scalar's type beside it: type-strict equality for any integer."""
    if isinstance(value, dict):
        return {k: typed(v) for k, v in value.items()}
    if isinstance(value, list):
        return [typed(v) for v in value]
    return (type(value).__name__, value)


def wire(value):
    return orjson.loads(orjson.dumps(value))


view_pairs = st.tuples(views(), views())


@st.composite
def near_pairs(draw):
    a = draw(views())
    return a, mutated(a, draw)


pairs = view_pairs | near_pairs()


# ----------------------------------------------------------------- laws


@given(pairs)
@settings(max_examples=200)
def test_apply_of_diff_gives_the_new_view(pair):
    a, b = pair
    d = diff(a, b)
    out = apply(a, d)
    assert out == b
    assert canon(out) == canon(b)


@given(views())
@settings(max_examples=150)
def test_diff_of_a_view_with_itself_is_empty(a):
    assert diff(a, a) == {}
    assert diff(a, copy.deepcopy(a)) == {}
    assert apply(a, {}) == a


@given(pairs)
@settings(max_examples=150)
def test_diff_survives_an_orjson_round_trip_and_still_applies(pair):
    a, b = pair
    d = wire(diff(a, b))
    out = apply(wire(a), d)
    assert canon(out) == canon(b)


@given(pairs)
@settings(max_examples=100)
def test_apply_and_diff_never_mutate_their_inputs(pair):
    a, b = pair
    a_before, b_before = copy.deepcopy(a), copy.deepcopy(b)
    d = diff(a, b)
    d_before = copy.deepcopy(d)
    apply(a, d)
    assert canon(a) == canon(a_before)
    assert canon(b) == canon(b_before)
    assert canon(d) == canon(d_before)


@given(views())
@settings(max_examples=150)
def test_full_snapshot_is_the_diff_from_empty(b):
    d = diff({}, b)
    assert set(d) <= {"s"}
    assert canon(apply({}, d)) == canon(b)
    assert canon(apply({}, wire(d))) == canon(b)


@given(pairs)
@settings(max_examples=100)
def test_delta_parts_are_nonempty_and_well_formed(pair):
    a, b = pair
    d = diff(a, b)
    assert set(d) <= {"s", "n", "u", "r"}
    assert all(d[part] for part in d)
    for key, inc in d.get("n", {}).items():
        assert type(a[key]) is int and type(b[key]) is int and a[key] + inc == b[key] and inc
    for key in d.get("r", []):
        assert key in a and key not in b
    for key in d.get("u", {}):
        assert isinstance(a[key], dict) and isinstance(b[key], dict)


# ----------------------------------------------------------------- concrete cases


def test_diff_has_sets_increments_updates_and_removals():
    a = {"players": {"1": {"x": 1, "y": 2, "name": "a"}, "2": {"x": 0}}, "over": False, "gone": 1, "w": None}
    b = {"players": {"1": {"x": 5, "y": 2, "name": "b"}, "3": {"x": 9}}, "over": True, "w": 4}
    d = diff(a, b)
    assert d == {
        "s": {"over": True, "w": 4},
        "u": {"players": {"s": {"3": {"x": 9}}, "u": {"1": {"s": {"name": "b"}, "n": {"x": 4}}}, "r": ["2"]}},
        "r": ["gone"],
    }
    assert apply(a, d) == b


def test_integers_travel_as_increments_but_bools_and_floats_do_not():
    a = {"x": 12345, "flag": False, "f": 1.5, "i": 3}
    b = {"x": 12274, "flag": True, "f": 2.5, "i": 3.0}
    d = diff(a, b)
    assert d == {"s": {"flag": True, "f": 2.5, "i": 3.0}, "n": {"x": -71}}
    assert apply(a, d) == b and type(apply(a, d)["i"]) is float


@pytest.mark.parametrize(
    ("base", "bad"),
    [
        ({"x": "s"}, {"n": {"x": 1}}),
        ({}, {"n": {"x": 1}}),
        ({"x": True}, {"n": {"x": 1}}),
        ({"x": 1}, {"n": {"x": 1.5}}),
    ],
)
def test_an_increment_to_something_not_an_integer_is_refused(base, bad):
    with pytest.raises(DeltaError):
        apply(base, bad)


def test_apply_shares_unchanged_subtrees_with_the_base():
    a = {"big": {"k": [1, 2, 3]}, "n": 1}
    out = apply(a, diff(a, {"big": {"k": [1, 2, 3]}, "n": 2}))
    assert out == {"big": {"k": [1, 2, 3]}, "n": 2}
    assert out["big"] is a["big"]


@pytest.mark.parametrize(
    ("old", "new"),
    [
        (1, True),
        (True, 1),
        (0, False),
        (1, 1.0),
        (1.0, 1),
        ([1], [True]),
        ([1, 2], [1.0, 2]),
        ([0], [False]),
        ([{"a": 1}], [{"a": True}]),
        ({"x": 1}, 1),
        (1, {"x": 1}),
        (None, 0),
        ("1", 1),
    ],
)
def test_type_changes_are_carried(old, new):
    a, b = {"k": old}, {"k": new}
    d = diff(a, b)
    assert d, f"{old!r} -> {new!r} produced an empty delta"
    out = apply(a, wire(d))
    assert canon(out) == canon(b)
    assert type(out["k"]) is type(new)


def test_type_change_inside_a_nested_dict_is_carried():
    a = {"p": {"q": {"hp": 1, "alive": True}}}
    b = {"p": {"q": {"hp": True, "alive": 1}}}
    assert canon(apply(a, wire(diff(a, b)))) == canon(b)


# ----------------------------------------------------------------- malformed deltas


@pytest.mark.parametrize(
    ("base", "delta"),
    [
        ({}, {"u": {"missing": {}}}),
        ({"k": 5}, {"u": {"k": {"s": {"x": 1}}}}),
        ({"k": [1]}, {"u": {"k": {}}}),
        ({"k": {}}, {"u": {"k": 5}}),
        ({"k": {}}, {"u": {"k": []}}),
        ({"k": {"j": 1}}, {"u": {"k": {"u": {"j": {}}}}}),
        ({}, {"s": []}),
        ({}, {"s": 1}),
        ({}, {"u": []}),
        ({}, {"r": {}}),
        ({}, {"r": "k"}),
        ({}, {"x": {}}),
        ({}, {"s": {}, "extra": 1}),
        ({}, []),
        ({}, None),
        ({}, "delta"),
        ({"a": 1}, {"r": [["a"]]}),
        ({"a": 1}, {"r": [{"a": 1}]}),
        ({"a": 1}, {"r": [None]}),
    ],
)
def test_malformed_delta_raises_delta_error(base, delta):
    before = copy.deepcopy(base)
    with pytest.raises(DeltaError):
        apply(base, delta)
    assert base == before


json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.text(alphabet="suraxk", max_size=2)),
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(st.sampled_from(["s", "u", "r", "k", "a"]), children, max_size=3)
    ),
    max_leaves=10,
)


@given(views(2), json_values)
@settings(max_examples=300)
def test_random_deltas_apply_or_raise_only_delta_error(base, delta):
    before = copy.deepcopy(base)
    try:
        out = apply(base, delta)
    except DeltaError:
        pass
    else:
        assert isinstance(out, dict)
    assert canon(base) == canon(before)


# ----------------------------------------------------------------- the twins agree

needs_both = pytest.mark.skipif(len(TWINS) < 2, reason="the native module is not built here")


# Every kind of value orjson writes or refuses: the native diff_json writes most of them itself
# and must fall back on orjson for the rest, byte for byte and error for error.
wide_scalars = st.one_of(
    scalars,
    st.floats(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.text(max_size=3),  # any character: escapes, non-ASCII, lone surrogates (orjson refuses those)
    st.sampled_from(['"', "\\", "\x00", "\x1f", "\x7f", "é", "\u2028", "a\nb", "x y"]),
    st.tuples(st.integers(-2, 2)),
)
wide_keys = keys | st.sampled_from(['"', "\\", "é", "a b", "\n"]) | st.integers(0, 2)  # (int keys: refused)
wide_leaves = wide_scalars | st.lists(wide_scalars, max_size=3) | st.dictionaries(wide_keys, wide_scalars, max_size=2)


def wide_views(depth: int = 3) -> st.SearchStrategy:
    if depth == 1:
        return st.dictionaries(wide_keys, wide_leaves, max_size=4)
    return st.dictionaries(wide_keys, wide_leaves | wide_views(depth - 1), max_size=4)


@st.composite
def wide_pairs(draw):
    """Two views, often near each other (a view and the same with a few of its keys changed)."""
    a = draw(wide_views())
    if draw(st.booleans()):
        return a, draw(wide_views())
    b = mutated(a, draw)
    if a:
        for key in draw(st.lists(st.sampled_from(list(a)), max_size=2)):
            b[key] = draw(wide_leaves)
    return a, b


@given(pairs | wide_pairs())
@settings(max_examples=500)
def test_diff_json_is_the_diff_as_orjson_writes_it_byte_for_byte_and_error_for_error(pair):
    a, b = pair
    outcomes: list[tuple[Any, Any]] = []
    for encode in (lambda: diff_json(a, b), lambda: orjson.dumps(diff(a, b))):
        try:
            outcomes.append(("written", encode()))
        except orjson.JSONEncodeError as exc:  # (orjson's refusals: a key not a str, an int past 64 bits)
            outcomes.append((type(exc), str(exc)))
    assert outcomes[0] == outcomes[1]


def test_diff_json_writes_a_rooms_delta_as_the_server_sends_it():
    a = {"players": {"1": {"x": 10, "hp": 5, "name": "ann"}, "2": {"x": 3}}, "over": False}
    b = {"players": {"1": {"x": 12, "hp": 5, "name": "ann"}, "3": {"x": 1, "alive": True}}, "over": False}
    assert diff_json(a, b) == b'{"u":{"players":{"s":{"3":{"x":1,"alive":true}},"u":{"1":{"n":{"x":2}}},"r":["2"]}}}'
    assert diff_json(b, b) == b"{}" and diff_json({}, {"k": None}) == b'{"s":{"k":null}}'
    assert diff_json({"x": -(2**63)}, {"x": 2**63 - 1}) == b'{"s":{"x":9223372036854775807}}'
    with pytest.raises(TypeError, match="diff takes two views"):
        diff_json([], {})  # type: ignore[arg-type]


def test_an_increment_too_big_for_a_64_bit_integer_travels_as_the_new_value():
    a, b = {"x": -(2**63), "y": 1}, {"x": 2**63 - 1, "y": 2**63 - 1}
    d = diff(a, b)
    assert d == {"s": {"x": 2**63 - 1}, "n": {"y": 2**63 - 2}}
    assert apply(wire(a), wire(d)) == b
    # Either side of the edge, from either sign, and with values past 64 bits themselves.
    a = {"p": 1, "q": -1, "r": 0, "s": -1, "t": 2**64, "u": -(2**70)}
    b = {"p": -(2**63), "q": 2**63 - 1, "r": -(2**63), "s": 2**63 - 2, "t": 2**64 + 5, "u": 0}
    assert diff(a, b) == {
        "s": {"p": -(2**63), "q": 2**63 - 1, "u": 0},
        "n": {"r": -(2**63), "s": 2**63 - 1, "t": 5},
    }


@needs_both
@given(pairs)
@settings(max_examples=300)
def test_the_twins_make_byte_identical_diffs_that_each_other_applies(pair):
    a, b = pair
    native_diff, pure_diff = TWINS["native"].diff(a, b), TWINS["pure"].diff(a, b)
    assert orjson.dumps(native_diff) == orjson.dumps(pure_diff)
    assert canon(TWINS["pure"].apply(a, native_diff)) == canon(b)
    assert canon(TWINS["native"].apply(a, wire(pure_diff))) == canon(b)


@needs_both
@given(views(2), json_values)
@settings(max_examples=300)
def test_the_twins_refuse_the_same_deltas_with_the_same_reason(base, delta_):
    outcomes = []
    for twin in (TWINS["native"], TWINS["pure"]):
        try:
            outcomes.append(("applied", typed(twin.apply(base, delta_))))
        except DeltaError as exc:
            outcomes.append(("refused", str(exc)))
    assert outcomes[0] == outcomes[1]


@needs_both
@pytest.mark.parametrize("bad", [None, [], "view", 5])
def test_the_twins_refuse_what_is_not_a_view_alike(bad):
    for twin in TWINS.values():
        with pytest.raises(TypeError, match="diff takes two views"):
            twin.diff(bad, {})
        with pytest.raises(TypeError, match="diff takes two views"):
            twin.diff({}, bad)
