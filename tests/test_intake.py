"""The input queue and the input datagram's decoder (server/intake.py), on both twins: the
native one (server/_intake_c.pyx) and the pure one, which must agree on everything, refusals
and their words included."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tickline.server.intake import INPUT_BUFFER, JITTER_TICKS, MAX_SEQ
from tickline.server.ratelimit import InputLimits
from tickline.shared import native
from tickline.shared.game import InvalidInput
from tickline.shared.protocol import (
    MAX_DATAGRAM,
    Input,
    MalformedFrame,
    ProtocolError,
    encode,
    encode_packed_input,
)
from tickline.shared.schema import Bool, Choice, Inputs, Int, ListOf, Text

INTAKE = native.twins("tickline.server", "intake")


@pytest.fixture(params=sorted(INTAKE))
def twin(request: pytest.FixtureRequest) -> Any:
    return INTAKE[request.param]


def _validate(raw: Any) -> dict[str, Any]:
    if not isinstance(raw, dict) or raw.get("bad"):
        raise InvalidInput("input control 'bad' is refused")
    return raw


def test_each_input_is_queued_once_and_taken_in_order(twin: Any) -> None:
    queue = twin.InputQueue(_validate)
    assert queue.put([[1, {"a": 1}], [2, {"a": 2}]], 5) == 0
    assert queue.put([[1, {"a": 1}], [2, {"a": 2}], [3, {"a": 3}, 2]], 5) == 0  # 1 and 2 again: redundant
    assert len(queue) == 4 and queue.received_seq == 3
    assert [queue.take(t) for t in range(6, 11)] == [(1, {"a": 1}), (2, {"a": 2}), (3, {"a": 3}), None, None]
    assert queue.applied_seq == 3 and queue.input_underruns == 1


def test_a_full_queue_drops_its_oldest_and_says_how_many(twin: Any) -> None:
    queue = twin.InputQueue(_validate)
    for seq in range(1, INPUT_BUFFER + 1):
        assert queue.put([[seq, {}]], 0) == 0
    assert queue.put([[INPUT_BUFFER + 1, {}], [INPUT_BUFFER + 2, {}]], 0) == 2
    assert len(queue) == INPUT_BUFFER and queue.inputs_dropped == 2
    assert queue.take(JITTER_TICKS) is not None  # (then the oldest surplus is merged away)


@pytest.mark.parametrize(
    ("items", "words"),
    [
        ([[0, {}]], "positive integer seq"),
        ([[True, {}]], "positive integer seq"),
        ([[1]], "positive integer seq"),
        ([(1, {})], "positive integer seq"),
        ([[1, {}, 9]], "1 to 8 ticks, not 9"),
        ([[1, {}, False]], "not False"),
        ([[MAX_SEQ + 1, {}]], f"is over {MAX_SEQ}"),
        ([[2**70, {}]], f"input seq {2**70} is over"),
        ([[1, {}]] * 17, "more than 16 inputs"),
        ([[1, {"bad": 1}]], "'bad' is refused"),
    ],
)
def test_a_bad_input_is_refused_with_its_reason(twin: Any, items: list[Any], words: str) -> None:
    with pytest.raises((MalformedFrame, InvalidInput), match=words):
        twin.InputQueue(_validate).put(items, 0)


def test_a_sequence_may_not_jump_far_past_the_last_one(twin: Any) -> None:
    queue = twin.InputQueue(_validate)
    queue.put([[10, {}]], 0)
    with pytest.raises(MalformedFrame, match=r"input seq 5000 jumps more than 4096 past the last one \(10\)"):
        queue.put([[5000, {}]], 0)


def test_an_input_datagram_is_read_and_anything_else_refused(twin: Any) -> None:
    assert twin.decode_input(encode(Input(ack=7, inputs=[[1, {"mx": 1}]]))) == (7, [[1, {"mx": 1}]])
    for bad, words in [
        (b"{", "not valid JSON"),
        (b"[]", "not a JSON object"),
        (b'{"t":"in","ack":true,"inputs":[]}', "'ack' has the wrong type"),
        (b'{"t":"in","ack":1,"inputs":[],"x":1}', "unknown field"),
        (b'{"t":"bye","reason":"x"}', "bye frame is not allowed"),
        (b'{"t":"in","ack":1,"inputs":[' + b"1," * MAX_DATAGRAM + b"1]}", "exceeds"),
        (b"i\x00\x00", "shorter than its header"),
        (encode_packed_input(7, [(1, b"{}", 1)])[:-1], "ends inside an input"),
        (encode_packed_input(7, [(1, b"{}" * MAX_DATAGRAM, 1)]), "exceeds"),
    ]:
        with pytest.raises(ProtocolError, match=words):
            twin.decode_input(bad)


def test_a_packed_datagram_is_read_with_its_controls_left_as_json(twin: Any) -> None:
    data = encode_packed_input(7, [(1, b'{"mx":1}', 1), (2, b"{}", 3)])
    assert twin.decode_input(data) == (7, [[1, b'{"mx":1}', 1], [2, b"{}", 3]])


def test_a_packed_datagram_queues_what_its_in_frame_queues(twin: Any) -> None:
    inputs: list[tuple[int, dict[str, Any], int]] = [(1, {"a": 1}, 1), (2, {"a": 2}, 3), (3, {}, 1)]
    items = [[seq, controls] if ticks == 1 else [seq, controls, ticks] for seq, controls, ticks in inputs]
    packed = encode_packed_input(9, [(seq, json.dumps(controls).encode(), ticks) for seq, controls, ticks in inputs])
    queues = [twin.InputQueue(_validate) for _ in range(2)]
    assert queues[0].receive(_datagram(9, items), 0.0, 0) and queues[1].receive(packed, 0.0, 0)
    assert queues[0].ack == queues[1].ack == 9
    taken = [[q.take(tick) for tick in range(8)] for q in queues]
    assert taken[0] == taken[1] and taken[0][:2] == [(1, {"a": 1}), (2, {"a": 2})]


def test_only_the_new_inputs_of_a_packed_datagram_have_their_controls_read(twin: Any) -> None:
    queue = twin.InputQueue(_validate)
    assert queue.receive(encode_packed_input(0, [(1, b'{"a":1}', 1)]), 0.0, 0)
    # Input 1 again, its copy garbled: it was taken already, so its controls are never read.
    assert queue.receive(encode_packed_input(0, [(1, b"{garbled", 1), (2, b'{"a":2}', 1)]), 0.0, 0)
    assert queue.received_seq == 2 and len(queue) == 2
    with pytest.raises(MalformedFrame, match="input controls are not valid JSON"):
        queue.receive(encode_packed_input(0, [(3, b"{garbled", 1)]), 0.0, 0)
    with pytest.raises(InvalidInput, match="'bad' is refused"):
        queue.receive(encode_packed_input(0, [(3, b'{"bad":1}', 1)]), 0.0, 0)
    with pytest.raises(MalformedFrame, match="holds for 1 to"):
        queue.receive(encode_packed_input(0, [(3, b"{}", 0)]), 0.0, 0)


# ------------------------------------------------------------------ the twins agree

_json = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**64), 2**64) | st.text(max_size=3),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=2),
    max_leaves=6,
)
_item = st.one_of(
    st.tuples(st.integers(-2, 40), st.sampled_from([{}, {"a": 1}, {"bad": 1}])).map(list),
    st.tuples(st.integers(1, 40), st.just({}), st.integers(-1, 10) | st.booleans()).map(list),
    _json,
)
_step: st.SearchStrategy[tuple[str, list[Any], int]] = st.one_of(
    st.tuples(st.just("put"), st.lists(_item, max_size=18), st.integers(0, 50)),
    st.tuples(st.just("take"), st.just([]), st.integers(0, 50)),
)


def _outcome(queue: Any, op: str, items: list[Any], tick: int) -> Any:
    try:
        return ("ok", queue.put(items, tick) if op == "put" else queue.take(tick))
    except (MalformedFrame, InvalidInput) as exc:
        return (type(exc).__name__, str(exc))


@pytest.mark.skipif(len(INTAKE) < 2, reason="the native module is not built here")
@settings(max_examples=300, deadline=None)
@given(st.lists(_step, max_size=40))
def test_the_native_and_pure_queues_agree_on_any_datagrams_and_ticks(steps: list[Any]) -> None:
    queues = [INTAKE[kind].InputQueue(_validate) for kind in ("native", "pure")]
    for op, items, tick in steps:
        outcomes = [_outcome(queue, op, items, tick) for queue in queues]
        assert outcomes[0] == outcomes[1]
        figures = [
            (len(q), q.received_seq, q.applied_seq, q.inputs_dropped, q.input_underruns, q.inputs_merged)
            for q in queues
        ]
        assert figures[0] == figures[1]


def _dumps(value: Any) -> bytes:
    return json.dumps(value).encode()  # (integers of any size, as a client may send them)


_packed_item = st.tuples(
    st.integers(0, 40),
    st.sampled_from([b"{}", b'{"a":1}', b'{"bad":1}', b"[1]", b"{garbled", b""]),
    st.integers(0, 10),
)


@pytest.mark.skipif(len(INTAKE) < 2, reason="the native module is not built here")
@settings(max_examples=300, deadline=None)
@given(
    st.one_of(
        st.binary(max_size=40),
        st.dictionaries(st.sampled_from(["t", "ack", "inputs", "x"]), _json | st.just("in"), max_size=4).map(_dumps),
        st.builds(lambda ack, inputs: _dumps({"t": "in", "ack": ack, "inputs": inputs}), _json, _json),
        st.binary(max_size=40).map(lambda rest: b"i" + rest),
        st.builds(encode_packed_input, st.integers(0, 2**32 - 1), st.lists(_packed_item, max_size=4)),
    )
)
def test_the_native_and_pure_decoders_read_and_refuse_alike(data: bytes) -> None:
    outcomes = []
    for kind in ("native", "pure"):
        try:
            outcomes.append(("ok", INTAKE[kind].decode_input(data)))
        except ProtocolError as exc:
            outcomes.append((type(exc).__name__, str(exc)))
    assert outcomes[0] == outcomes[1]


def _datagram(ack: int, items: list[Any]) -> bytes:
    return _dumps({"t": "in", "ack": ack, "inputs": items})  # (as any client may write it)


def test_a_datagram_is_budgeted_read_and_queued_in_one_call(twin: Any) -> None:
    budget = twin.InputBudget(InputLimits(messages_per_s=1, bytes_per_s=1200, burst_s=2), 0.0)
    queue = twin.InputQueue(_validate, budget)
    assert queue.receive(_datagram(7, [[1, {"a": 1}]]), 0.0, 3) is True
    assert (queue.ack, queue.dropped_now, len(queue), queue.received_seq) == (7, 0, 1, 1)
    assert queue.receive(_datagram(8, [[2, {}]]), 0.0, 3) is True  # the burst: two messages
    assert queue.receive(_datagram(9, [[3, {}]]), 0.0, 3) is False
    assert (queue.refusal, queue.ack, queue.received_seq) == ("messages", 8, 2)  # refused: not read
    assert queue.receive(_datagram(9, [[3, {}]]), 1.0, 4) is True  # a second later, one more


def test_a_datagram_before_the_match_is_budgeted_and_not_read(twin: Any) -> None:
    budget = twin.InputBudget(InputLimits(messages_per_s=1, bytes_per_s=1200, burst_s=1), 0.0)
    queue = twin.InputQueue(None, budget)
    assert queue.receive(b"not even JSON", 0.0, 0) is True and len(queue) == 0
    assert queue.receive(b"not even JSON", 0.0, 0) is False and queue.refusal == "messages"
    with pytest.raises(InvalidInput, match="no inputs before the session joins a match"):
        queue.put([[1, {}]], 0)


def test_a_spectator_may_acknowledge_but_not_send_inputs(twin: Any) -> None:
    queue = twin.InputQueue(_validate, spectating=True)
    assert queue.receive(_datagram(5, []), 0.0, 0) is True and queue.ack == 5
    with pytest.raises(MalformedFrame, match="spectators cannot send inputs"):
        queue.receive(_datagram(6, [[1, {}]]), 0.0, 0)


def test_a_datagram_that_overfills_the_queue_says_how_many_it_pushed_out(twin: Any) -> None:
    queue = twin.InputQueue(_validate)
    for seq in range(1, INPUT_BUFFER + 1, 8):
        assert queue.receive(_datagram(0, [[s, {}] for s in range(seq, seq + 8)]), 0.0, 0)
    assert queue.receive(_datagram(0, [[INPUT_BUFFER + 1, {}], [INPUT_BUFFER + 2, {}]]), 0.0, 0)
    assert queue.dropped_now == 2 and queue.inputs_dropped == 2
    assert queue.receive(_datagram(0, [[INPUT_BUFFER + 2, {}]]), 0.0, 0) and queue.dropped_now == 0


_LIMITS = InputLimits(messages_per_s=20, bytes_per_s=2000, burst_s=0.5)
_receive_step = st.tuples(
    st.one_of(
        st.builds(_datagram, st.integers(-5, 2**70), st.lists(_item, max_size=6)),
        st.builds(encode_packed_input, st.integers(0, 2**32 - 1), st.lists(_packed_item, max_size=6)),
        st.binary(max_size=30),
        st.binary(min_size=900, max_size=1400),
    ),
    st.floats(0, 0.2) | st.just(0.0),
    st.integers(0, 50),
    st.booleans(),
)


@pytest.mark.skipif(len(INTAKE) < 2, reason="the native module is not built here")
@settings(max_examples=300, deadline=None)
@given(st.lists(_receive_step, max_size=60), st.booleans())
def test_the_native_and_pure_intakes_agree_on_any_datagrams_budgets_and_ticks(
    steps: list[Any], spectating: bool
) -> None:
    twins = [INTAKE[kind] for kind in ("native", "pure")]
    budgets = [t.InputBudget(_LIMITS, 0.0) for t in twins]
    queues = [t.InputQueue(_validate, b, spectating) for t, b in zip(twins, budgets, strict=True)]
    now = 0.0
    for data, gap, tick, take in steps:
        now += gap
        outcomes: list[Any] = []
        for queue in queues:
            try:
                outcome: Any = ("ok", queue.receive(data, now, tick), queue.ack, queue.refusal, queue.dropped_now)
            except (ProtocolError, InvalidInput) as exc:
                outcome = (type(exc).__name__, str(exc))
            outcomes.append((outcome, queue.take(tick) if take else None))
        assert outcomes[0] == outcomes[1]
        assert budgets[0].exhausted == budgets[1].exhausted
        figures = [(len(q), q.received_seq, q.applied_seq, q.inputs_dropped) for q in queues]
        assert figures[0] == figures[1]


# ------------------------------------------------------------------ declared inputs, read natively

_fields = st.one_of(
    st.tuples(st.integers(-(2**70), 2**70), st.integers(0, 2**70)).map(lambda b: Int(b[0], b[0] + b[1])),
    st.tuples(st.integers(-100, 100), st.integers(0, 200)).map(lambda b: Int(b[0], b[0] + b[1])),
    st.builds(Bool, st.booleans()),
    st.builds(Text, st.integers(0, 8)),
    st.lists(st.integers(-3, 3), min_size=1, max_size=4, unique=True).map(lambda v: Choice(tuple(v))),
    st.lists(st.sampled_from(["a", "b", "up"]), min_size=1, max_size=3, unique=True).map(lambda v: Choice(tuple(v))),
    st.just(Choice((1, "one", True))),
    st.builds(lambda n: ListOf(Int(0, 9), n), st.integers(0, 3)),
)
_names = st.sampled_from(["mx", "my", "fire", "name", "vt", "hand"])
_declarations = st.dictionaries(_names, _fields, min_size=1, max_size=5).flatmap(
    lambda controls: st.builds(
        lambda optional: Inputs(controls, frozenset(optional)), st.sets(st.sampled_from(sorted(controls)))
    )
)
_values = st.one_of(
    st.integers(-5, 5),
    st.integers(-(2**80), 2**80),
    st.booleans(),
    st.text(max_size=10),
    st.sampled_from(["a", "b", "up", "one"]),
    st.floats(allow_nan=False),
    st.none(),
    st.lists(st.integers(-2, 12), max_size=4),
    st.dictionaries(st.text(max_size=2), st.integers(), max_size=2),
)
_raw = st.one_of(
    st.dictionaries(st.one_of(_names, st.text(max_size=4)), _values, max_size=6),
    _values,
)


@pytest.mark.skipif(len(INTAKE) < 2, reason="the native module is not built here")
@settings(max_examples=500, deadline=None)
@given(_declarations, st.lists(_raw, min_size=1, max_size=5))
def test_the_native_decoder_reads_any_declared_inputs_as_the_declaration_does(
    declared: Inputs, raws: list[Any]
) -> None:
    native_decode = INTAKE["native"].InputDecoder(declared)
    for raw in raws:
        outcomes: list[Any] = []
        for decode in (native_decode, declared.decode):
            try:
                out = decode(raw)
                outcomes.append(("ok", [(k, type(v), v) for k, v in out.items()]))
            except InvalidInput as exc:
                outcomes.append(("refused", str(exc)))
        assert outcomes[0] == outcomes[1]


def test_a_queue_given_the_declaration_reads_inputs_by_it(twin: Any) -> None:
    declared = Inputs({"mx": Choice((-1, 0, 1), default=0), "fire": Bool(), "vt": Int(0, 100)}, frozenset({"vt"}))
    queue = twin.InputQueue(declared)
    queue.put([[1, {"fire": True}], [2, {"mx": -1, "vt": 7}]], 0)
    assert [queue.take(t) for t in (2, 3)] == [(1, {"mx": 0, "fire": True}), (2, {"mx": -1, "fire": False, "vt": 7})]
    with pytest.raises(InvalidInput, match="input control 'mx' must be -1, 0 or 1"):
        queue.put([[3, {"mx": 2}]], 3)


# A packed input's controls as clients write them (compact, as both SDKs do), and as they may:
# spaced, escaped, a key twice, numbers JSON or orjson reads otherwise.
_controls_json = st.one_of(
    st.builds(
        lambda raw, separators, ascii: json.dumps(raw, separators=separators, ensure_ascii=ascii).encode(),
        _raw,
        st.sampled_from([(",", ":"), (", ", ": ")]),
        st.booleans(),
    ),
    st.sampled_from(
        [
            b"{}",
            b'{"mx":-0}',
            b'{"mx":01}',
            b'{"mx":1.0}',
            b'{"mx":1e0}',
            b'{"mx":1,"mx":-1}',
            b'{"fire":true }',
            b' {"fire":true}',
            b'{"fire":tru}',
            b'{"fire":nul}',
            b'{"vt":123456789012345678}',
            b'{"vt":1234567890123456789}',
            b'{"vt":-9223372036854775809}',
            b'{"name":"a\\"b"}',
            b'{"name":"\\u0041"}',
            b'{"name":"\xc3\xa9"}',
            b'{"m\\u0078":1}',
            b'{"mx":1,}',
            b'{"mx":1',
            b'{"mx"1}',
            b'{"mx":-}',
        ]
    ),
)


def _fitting(spec: Any) -> st.SearchStrategy[Any]:
    """Values a declared control takes, and some near misses."""
    if isinstance(spec, Int):
        return st.integers(spec.lo, spec.hi) | st.sampled_from([spec.lo - 1, spec.hi + 1])
    if isinstance(spec, Bool):
        return st.booleans() | st.sampled_from([0, 1, None])
    if isinstance(spec, Text):
        ascii = st.characters(max_codepoint=0x7F)
        longest = spec.max_len
        return st.text(ascii, max_size=longest) | st.text(ascii, min_size=longest + 1, max_size=longest + 1) | st.text()
    if isinstance(spec, Choice):
        return st.sampled_from(spec.values) | st.sampled_from([2, "down", 1.0, True])
    return _values


@st.composite
def _controls_for(draw: st.DrawFn, declared: Inputs) -> bytes:
    """A packed input's controls for ``declared``: mostly what an SDK writes of them, at times
    written otherwise (spaced, escaped, a key twice, an unknown one) or anything at all."""
    names = draw(st.lists(st.sampled_from(sorted(declared.controls)), unique=True))
    raw = {name: draw(_fitting(declared.controls[name])) for name in names}
    if draw(st.integers(0, 9)) == 0:
        raw[draw(st.text(max_size=3))] = 1
    form = draw(st.integers(0, 9))
    if form == 0:
        return draw(_controls_json)
    if form == 1 and raw:
        first = next(iter(raw))  # the first key again, with another value
        return json.dumps(raw, separators=(",", ":"))[:-1].encode() + b"," + json.dumps({first: 0})[1:].encode()
    separators = (", ", ": ") if form == 2 else (",", ":")
    return json.dumps(raw, separators=separators, ensure_ascii=form != 3).encode()


@pytest.mark.skipif(len(INTAKE) < 2, reason="the native module is not built here")
@settings(max_examples=500, deadline=None)
@given(_declarations, st.data())
def test_the_native_queue_reads_packed_controls_in_place_as_the_pure_one_reads_them(
    declared: Inputs, data: st.DataObject
) -> None:
    queues = [INTAKE[kind].InputQueue(declared) for kind in ("native", "pure")]
    seq = 0
    for tick in range(4):
        controls = data.draw(st.lists(_controls_for(declared), min_size=1, max_size=3))
        # each datagram repeats the one before's last input: a redundant copy, never read
        first = max(seq, 1)
        datagram = encode_packed_input(tick, [(first + i, c, 1) for i, c in enumerate(controls)])
        outcomes: list[Any] = []
        for queue in queues:
            try:
                outcome: Any = ("ok", queue.receive(datagram, 0.0, tick), queue.ack, queue.dropped_now)
            except (ProtocolError, InvalidInput) as exc:
                outcome = (type(exc).__name__, str(exc))
            taken = [queue.take(t) for t in range(tick * 8, tick * 8 + 8)]
            outcomes.append((outcome, [(s, [(k, type(v), v) for k, v in c.items()]) for s, c in filter(None, taken)]))
        assert outcomes[0] == outcomes[1]
        native_figures, pure_figures = [(len(q), q.received_seq) for q in queues]
        assert native_figures == pure_figures
        seq = queues[0].received_seq


def test_a_packed_input_is_read_by_the_declaration_whatever_json_writes_it(twin: Any) -> None:
    declared = Inputs({"mx": Choice((-1, 0, 1), default=0), "fire": Bool(), "vt": Int(0, 100)}, frozenset({"vt"}))
    queue = twin.InputQueue(declared)
    compact, spaced = b'{"vt":7,"mx":-1}', b'{ "mx" : -1, "vt": 7 }'
    queue.receive(encode_packed_input(0, [(1, compact, 1), (2, spaced, 1), (3, b"{}", 1)]), 0.0, 0)
    taken = [queue.take(t) for t in range(2, 6)]
    assert taken[:3] == [
        (1, {"mx": -1, "fire": False, "vt": 7}),
        (2, {"mx": -1, "fire": False, "vt": 7}),
        (3, {"mx": 0, "fire": False}),
    ]
    assert [list(c) for _, c in filter(None, taken)] == [["mx", "fire", "vt"]] * 2 + [["mx", "fire"]]
    with pytest.raises(InvalidInput, match="input has unknown control 'aim'"):
        queue.receive(encode_packed_input(0, [(4, b'{"aim":1}', 1)]), 0.0, 6)
    with pytest.raises(InvalidInput, match="input control 'mx' must be -1, 0 or 1"):
        queue.receive(encode_packed_input(0, [(4, b'{"mx":2}', 1)]), 0.0, 6)
    with pytest.raises(MalformedFrame, match="input controls are not valid JSON"):
        queue.receive(encode_packed_input(0, [(4, b'{"mx":01}', 1)]), 0.0, 6)
    assert queue.received_seq == 3
