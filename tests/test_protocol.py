"""The wire protocol: frame round trips, stream reassembly, and refusal of bad input."""

from __future__ import annotations

import contextlib
import struct
import zlib

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tickline.shared.protocol import (
    MAX_DATAGRAM,
    MAX_STREAM_FRAME,
    PACKED_DELTA,
    PACKED_INPUT,
    Bye,
    Delta,
    Event,
    FastPath,
    Frame,
    FrameTooLarge,
    Hello,
    Input,
    MalformedFrame,
    ProtocolError,
    StreamDecoder,
    UnknownFrameType,
    Welcome,
    decode,
    decode_datagram,
    encode,
    encode_packed_delta,
    encode_packed_input,
    encode_stream,
    frame_for_stream,
    input_controls,
    pack_diff,
    split_packed_input,
)

# ----------------------------------------------------------------- strategies

ints = st.integers(min_value=-(2**63), max_value=2**63 - 1)
texts = st.text(max_size=20)
json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    ints,
    texts,
    st.floats(allow_nan=False, allow_infinity=False),
)
json_values = st.recursive(
    json_scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(texts, children, max_size=4),
    ),
    max_leaves=12,
)
json_objects = st.dictionaries(texts, json_values, max_size=4)

frames = st.one_of(
    st.builds(Hello, version=ints, name=texts, token=texts),
    st.builds(
        Welcome,
        version=ints,
        player_id=ints,
        match_id=texts,
        game=texts,
        game_version=ints,
        tick_rate=ints,
        send_rate=ints,
        tick=ints,
        token=texts,
    ),
    st.builds(Input, ack=ints, inputs=st.lists(st.lists(json_values, max_size=3), max_size=4)),
    st.builds(Delta, tick=ints, base=ints, seq=ints, diff=json_objects),
    st.builds(Event, tick=ints, kind=texts, data=json_objects),
    st.builds(Bye, reason=texts),
)

# One example of every frame type, for the explicit (non-hypothesis) tests.
SAMPLES: list[Frame] = [
    Hello(version=1, name="ada", token="tok"),
    Welcome(
        version=1,
        player_id=7,
        match_id="m-1",
        game="arena",
        game_version=1,
        tick_rate=60,
        send_rate=20,
        tick=123,
        token="secret",
    ),
    Input(ack=41, inputs=[[1, {"mx": 1, "my": 0, "ax": 5, "ay": -5, "fire": True}], [2, {}]]),
    Delta(tick=42, base=40, seq=2, diff={"s": {"over": False}, "u": {"players": {"r": ["3"]}}}),
    Event(tick=99, kind="over", data={"winner": 7}),
    FastPath(sid="00" * 8, up="11" * 32, down="22" * 32, idle_ms=15000, packed=1),
    Bye(reason="match over"),
]


def canon(frame) -> bytes:
    """A type-strict canonical form (1, 1.0 and True all differ)."""
    return orjson.dumps(orjson.loads(encode(frame)), option=orjson.OPT_SORT_KEYS)


def body(**fields) -> bytes:
    return orjson.dumps(fields)


# ----------------------------------------------------------------- round trips


@pytest.mark.parametrize("frame", SAMPLES, ids=lambda f: type(f).__name__)
def test_every_frame_type_round_trips_through_encode_decode(frame):
    out = decode(encode(frame))
    assert type(out) is type(frame)
    assert out == frame
    assert canon(out) == canon(frame)


@pytest.mark.parametrize("frame", SAMPLES, ids=lambda f: type(f).__name__)
def test_every_frame_type_round_trips_as_a_datagram(frame):
    data = encode(frame)
    assert len(data) <= MAX_DATAGRAM
    assert decode_datagram(data) == frame


def test_encoded_frame_carries_its_type_tag_and_fields():
    assert orjson.loads(encode(Bye(reason="x"))) == {"t": "bye", "reason": "x"}
    assert orjson.loads(encode(Event(tick=3, kind="chat"))) == {
        "t": "ev",
        "tick": 3,
        "kind": "chat",
        "data": {},
    }


def test_a_field_added_later_is_left_out_at_its_default_so_older_decoders_still_read_the_frame():
    keys = {"sid": "00" * 8, "up": "11" * 32, "down": "22" * 32}
    assert orjson.loads(encode(FastPath(keys["sid"], keys["up"], keys["down"]))) == {"t": "fast", **keys}
    assert orjson.loads(encode(FastPath(keys["sid"], keys["up"], keys["down"], idle_ms=2500)))["idle_ms"] == 2500
    assert decode(body(t="fast", **keys)) == FastPath(keys["sid"], keys["up"], keys["down"], idle_ms=0)
    with pytest.raises(MalformedFrame, match="idle_ms"):
        decode(body(t="fast", **keys, idle_ms=1.5))
    assert orjson.loads(encode(FastPath(keys["sid"], keys["up"], keys["down"], packed=1)))["packed"] == 1
    assert "packed" not in orjson.loads(encode(FastPath(keys["sid"], keys["up"], keys["down"], idle_ms=5)))


def test_optional_fields_take_their_defaults_when_absent():
    assert decode(body(t="hello", version=1, name="n")) == Hello(version=1, name="n", token="")
    assert decode(body(t="ev", tick=1, kind="k")) == Event(tick=1, kind="k", data={})


@given(frames)
@settings(max_examples=150)
def test_random_frames_round_trip_through_encode_decode(frame):
    out = decode(encode(frame))
    assert type(out) is type(frame)
    assert out == frame
    assert canon(out) == canon(frame)


def test_stream_decoder_reassembles_every_frame_type_fed_byte_by_byte():
    stream = b"".join(encode_stream(f) for f in SAMPLES)
    dec = StreamDecoder()
    got = []
    for i in range(len(stream)):
        got.extend(dec.feed(stream[i : i + 1]))
    assert got == SAMPLES
    assert dec.pending == 0


def test_stream_decoder_returns_several_frames_from_one_chunk():
    dec = StreamDecoder()
    stream = b"".join(encode_stream(f) for f in SAMPLES)
    assert dec.feed(stream) == SAMPLES
    assert dec.pending == 0


def test_stream_decoder_holds_a_partial_frame_as_pending():
    data = encode_stream(Bye(reason="later"))
    dec = StreamDecoder()
    assert dec.feed(data[:-1]) == []
    assert dec.pending == len(data) - 1
    assert dec.feed(data[-1:]) == [Bye(reason="later")]
    assert dec.pending == 0


def test_stream_decoder_accepts_an_empty_feed():
    assert StreamDecoder().feed(b"") == []


def test_stream_frame_has_a_big_endian_length_prefix():
    data = encode_stream(Bye(reason="x"))
    (length,) = struct.unpack("!I", data[:4])
    assert length == len(data) - 4
    assert data[4:] == encode(Bye(reason="x"))


@given(
    st.lists(frames, min_size=1, max_size=6),
    st.lists(st.integers(min_value=1, max_value=64), min_size=1, max_size=50),
)
@settings(max_examples=100, suppress_health_check=[HealthCheck.too_slow])
def test_stream_decoder_reassembles_random_chunkings(frame_list, sizes):
    stream = b"".join(encode_stream(f) for f in frame_list)
    dec = StreamDecoder()
    got = []
    pos = 0
    i = 0
    while pos < len(stream):
        size = sizes[i % len(sizes)]
        got.extend(dec.feed(stream[pos : pos + size]))
        pos += size
        i += 1
    assert got == frame_list
    assert [canon(f) for f in got] == [canon(f) for f in frame_list]
    assert dec.pending == 0


# ----------------------------------------------------------------- refusal


@pytest.mark.parametrize("data", [b"", b"{", b'{"t": "bye",}', b"\xff\xfe", b"nul", b"{'t': 'bye'}"])
def test_malformed_json_raises_malformed_frame(data):
    with pytest.raises(MalformedFrame):
        decode(data)


@pytest.mark.parametrize("data", [b"[]", b'["bye"]', b"1", b'"bye"', b"null", b"true"])
def test_non_object_json_raises_malformed_frame(data):
    with pytest.raises(MalformedFrame, match="not a JSON object"):
        decode(data)


@pytest.mark.parametrize("data", [body(reason="x"), body(t=1, reason="x"), body(t=None, reason="x")])
def test_missing_or_non_string_type_tag_raises_malformed_frame(data):
    with pytest.raises(MalformedFrame, match="type tag"):
        decode(data)


def test_unknown_frame_type_raises_unknown_frame_type():
    with pytest.raises(UnknownFrameType, match="'nope'"):
        decode(body(t="nope", reason="x"))
    # The message is meant for a close reason: a huge tag is cut short.
    with pytest.raises(UnknownFrameType) as info:
        decode(body(t="x" * 5000))
    assert len(str(info.value)) < 100


def test_unknown_field_raises_malformed_frame():
    with pytest.raises(MalformedFrame, match="unknown field 'extra'"):
        decode(body(t="bye", reason="x", extra=1))


@pytest.mark.parametrize(
    ("fields", "missing"),
    [
        ({"t": "bye"}, "reason"),
        ({"t": "hello", "name": "n"}, "version"),
        ({"t": "d", "tick": 1, "base": 0, "seq": 0}, "diff"),
        ({"t": "in", "inputs": []}, "ack"),
    ],
)
def test_missing_required_field_raises_malformed_frame(fields, missing):
    with pytest.raises(MalformedFrame, match=f"lacks field '{missing}'"):
        decode(orjson.dumps(fields))


@pytest.mark.parametrize(
    "fields",
    [
        {"t": "hello", "version": "1", "name": "n"},
        {"t": "hello", "version": 1.0, "name": "n"},
        {"t": "hello", "version": True, "name": "n"},  # bool is an int in Python: refused
        {"t": "hello", "version": 1, "name": 5},
        {"t": "hello", "version": 1, "name": None},
        {"t": "in", "ack": False, "inputs": []},
        {"t": "in", "ack": 1, "inputs": {}},
        {"t": "d", "tick": 1, "base": 0, "seq": 0, "diff": []},
        {"t": "ev", "tick": 1, "kind": "k", "data": "x"},
        {"t": "bye", "reason": ["x"]},
    ],
)
def test_wrong_field_type_raises_malformed_frame(fields):
    with pytest.raises(MalformedFrame, match="wrong type"):
        decode(orjson.dumps(fields))


def test_oversized_datagram_raises_frame_too_large():
    overhead = len(encode(Bye(reason="")))
    at_cap = encode(Bye(reason="a" * (MAX_DATAGRAM - overhead)))
    assert len(at_cap) == MAX_DATAGRAM
    assert decode_datagram(at_cap) == Bye(reason="a" * (MAX_DATAGRAM - overhead))
    over = encode(Bye(reason="a" * (MAX_DATAGRAM - overhead + 1)))
    with pytest.raises(FrameTooLarge):
        decode_datagram(over)
    # The same bytes are fine on the stream, whose cap is larger.
    assert decode(over) == Bye(reason="a" * (MAX_DATAGRAM - overhead + 1))


def test_oversized_frame_body_raises_frame_too_large():
    big = b"x" * (MAX_STREAM_FRAME + 1)
    with pytest.raises(FrameTooLarge):
        decode(big)
    with pytest.raises(FrameTooLarge):
        frame_for_stream(big)


def test_oversized_stream_length_prefix_raises_before_the_body_arrives():
    dec = StreamDecoder()
    # Only the 4-byte prefix has arrived: refused at once, not buffered waiting for the body.
    with pytest.raises(FrameTooLarge):
        dec.feed(struct.pack("!I", MAX_STREAM_FRAME + 1))
    with pytest.raises(FrameTooLarge):
        StreamDecoder().feed(struct.pack("!I", 0xFFFFFFFF))


def test_half_a_length_prefix_waits_then_oversize_is_refused_on_the_rest():
    dec = StreamDecoder()
    prefix = struct.pack("!I", MAX_STREAM_FRAME + 1)
    assert dec.feed(prefix[:2]) == []
    with pytest.raises(FrameTooLarge):
        dec.feed(prefix[2:])


def test_length_prefix_at_the_cap_is_accepted_while_waiting():
    dec = StreamDecoder()
    assert dec.feed(struct.pack("!I", MAX_STREAM_FRAME) + b"{") == []
    assert dec.pending == 5


def test_stream_decoder_honours_a_custom_cap():
    dec = StreamDecoder(max_size=16)
    with pytest.raises(FrameTooLarge):
        dec.feed(struct.pack("!I", 17))
    assert StreamDecoder(max_size=64).feed(encode_stream(Bye(reason="ok"))) == [Bye(reason="ok")]


def test_bad_frame_inside_the_stream_raises_a_protocol_error():
    dec = StreamDecoder()
    with pytest.raises(UnknownFrameType):
        dec.feed(frame_for_stream(body(t="zzz")))


# ----------------------------------------------------------------- fuzz


@given(st.binary(max_size=300))
@settings(max_examples=400)
def test_random_bytes_into_decode_raise_only_protocol_errors(data):
    for fn in (decode, decode_datagram):
        with contextlib.suppress(ProtocolError):
            fn(data)


@given(json_values)
@settings(max_examples=150)
def test_random_json_into_decode_raises_only_protocol_errors(value):
    with contextlib.suppress(ProtocolError):
        decode(orjson.dumps(value))


FIELD_NAMES = sorted({name for f in SAMPLES for name in orjson.loads(encode(f))} - {"t"})


@given(
    st.sampled_from(["hello", "welcome", "in", "d", "ev", "bye"]),
    st.dictionaries(st.sampled_from(FIELD_NAMES) | texts, json_values | ints, max_size=9),
)
@settings(max_examples=150)
def test_random_fields_under_a_known_tag_raise_only_protocol_errors(tag, fields):
    try:
        frame = decode(orjson.dumps({**fields, "t": tag}))
    except ProtocolError:
        return
    # Whatever was accepted re-encodes with exactly the fields it was given.
    again = orjson.loads(encode(frame))
    assert again["t"] == tag
    assert orjson.dumps({k: again[k] for k in fields}, option=orjson.OPT_SORT_KEYS) == orjson.dumps(
        fields, option=orjson.OPT_SORT_KEYS
    )


@given(st.lists(st.binary(max_size=40), max_size=20), st.integers(min_value=4, max_value=2048))
@settings(max_examples=300)
def test_random_bytes_into_stream_decoder_raise_only_protocol_errors(chunks, cap):
    dec = StreamDecoder(max_size=cap)
    try:
        for chunk in chunks:
            dec.feed(chunk)
    except ProtocolError:
        pass


@given(st.lists(frames, min_size=1, max_size=3), st.binary(min_size=1, max_size=20))
@settings(max_examples=150)
def test_valid_frames_then_garbage_yield_the_frames_then_only_protocol_errors(frame_list, junk):
    dec = StreamDecoder()
    stream = b"".join(encode_stream(f) for f in frame_list)
    assert dec.feed(stream) == frame_list
    with contextlib.suppress(ProtocolError):
        dec.feed(junk)


# ----------------------------------------------------------------- packed deltas


def test_a_packed_delta_round_trips_and_is_smaller_than_its_json() -> None:
    diff = {"u": {"players": {"u": {str(i): {"n": {"x": i % 7 - 3, "y": 2}} for i in range(1, 50)}}}}
    diff_json = orjson.dumps(diff)
    body = encode_packed_delta(1234, 1231, 99, pack_diff(diff_json))
    assert body[:1] == PACKED_DELTA and len(body) < len(diff_json) / 3
    assert decode_datagram(body) == Delta(tick=1234, base=1231, seq=99, diff=diff)


@given(st.binary(max_size=4000))
def test_a_diff_packs_to_the_same_bytes_as_streamed_raw_deflate(diff_json: bytes) -> None:
    """What every packed delta so far was: browsers and logs of packed traffic still read them."""
    packer = zlib.compressobj(6, zlib.DEFLATED, -15)
    assert pack_diff(diff_json) == packer.compress(diff_json) + packer.flush()


def test_the_server_side_decoder_refuses_packed_deltas() -> None:
    body = encode_packed_delta(1, 0, 0, pack_diff(b"{}"))
    with pytest.raises(MalformedFrame):
        decode_datagram(body, packed=False)


def test_a_packed_delta_that_inflates_past_the_cap_is_refused() -> None:
    bomb = pack_diff(b'{"s":{"k":"' + b"a" * (MAX_STREAM_FRAME + 10) + b'"}}')
    assert len(bomb) < 2000
    with pytest.raises(FrameTooLarge):
        decode_datagram(encode_packed_delta(1, 0, 0, bomb))


@pytest.mark.parametrize(
    "body",
    [
        b"z",
        b"z" + bytes(12) + b"not deflate",
        b"z" + bytes(12) + pack_diff(b"[1]"),
        b"z" + bytes(12) + pack_diff(b"{nope"),
    ],
)
def test_broken_packed_deltas_raise_malformed_frame(body: bytes) -> None:
    with pytest.raises(MalformedFrame):
        decode_datagram(body)


@given(st.binary(max_size=200))
@settings(max_examples=300)
def test_random_bytes_after_the_packed_tag_raise_only_protocol_errors(data: bytes) -> None:
    with contextlib.suppress(ProtocolError):
        decode_datagram(PACKED_DELTA + data)


# ----------------------------------------------------------------- packed inputs

_packed_items = st.lists(
    st.tuples(
        st.integers(0, 2**32 - 1),
        st.dictionaries(st.sampled_from(["mx", "my", "fire"]), st.integers(-1, 1) | st.booleans()).map(orjson.dumps),
        st.integers(0, 255),
    ),
    max_size=8,
)


@given(st.integers(0, 2**32 - 1), _packed_items)
@settings(max_examples=200)
def test_a_packed_input_carries_what_an_in_frame_does_with_its_controls_left_unread(
    ack: int, inputs: list[tuple[int, bytes, int]]
) -> None:
    data = encode_packed_input(ack, inputs)
    assert data[:1] == PACKED_INPUT
    assert split_packed_input(data) == (ack, [[seq, controls, ticks] for seq, controls, ticks in inputs])
    assert [input_controls(controls) for _, controls, _ in inputs] == [orjson.loads(c) for _, c, _ in inputs]


def test_a_packed_input_is_smaller_than_its_in_frame() -> None:
    controls = {"mx": 1, "my": -1, "ax": 37, "ay": -80, "fire": True}
    inputs = [(seq, orjson.dumps(controls), 2) for seq in (98, 99, 100)]
    frame = encode(Input(ack=5100, inputs=[[seq, controls, 2] for seq in (98, 99, 100)]))
    assert len(encode_packed_input(5100, inputs)) < 0.85 * len(frame)


@pytest.mark.parametrize(
    ("data", "words"),
    [
        (b"{}", "not a packed input"),
        (b"i", "shorter than its header"),
        (b"i\x00\x00\x01", "shorter than its header"),
        (encode_packed_input(1, [(1, b"{}", 1)])[:-1], "ends inside an input"),
        (encode_packed_input(1, [(1, b"{}", 1)]) + b"\x00", "ends inside an input"),
        (encode_packed_input(1, [(1, b"{}" * MAX_DATAGRAM, 1)]), "exceeds"),
    ],
)
def test_a_packed_input_cut_short_or_too_long_is_refused(data: bytes, words: str) -> None:
    with pytest.raises(ProtocolError, match=words):
        split_packed_input(data)


def test_packed_controls_that_are_not_json_are_refused_with_the_reason() -> None:
    with pytest.raises(MalformedFrame, match="input controls are not valid JSON"):
        input_controls(b"{mx")
    assert input_controls(b"[1]") == [1]  # (the game's input check judges what it is)
