"""The event log's record format: tick payloads and the match header row."""

from __future__ import annotations

import contextlib
import zlib
from typing import Any

import orjson
import pytest
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st

from tickline.shared.game import TickInputs
from tickline.shared.logformat import (
    HEADER_COLUMNS,
    MAX_PAYLOAD,
    CorruptRecord,
    MatchHeader,
    decode_payload,
    encode_payload,
)

# ----------------------------------------------------------------- strategies

pids = st.integers(min_value=1, max_value=10_000)
controls = st.fixed_dictionaries(
    {
        "mx": st.sampled_from((-1, 0, 1)),
        "my": st.sampled_from((-1, 0, 1)),
        "ax": st.integers(min_value=-(10**6), max_value=10**6),
        "ay": st.integers(min_value=-(10**6), max_value=10**6),
        "fire": st.booleans(),
    }
)
tick_inputs = st.builds(
    TickInputs,
    joins=st.lists(st.tuples(pids, st.text(max_size=10)), max_size=3),
    leaves=st.lists(pids, max_size=3),
    inputs=st.dictionaries(pids, controls, max_size=4),
)
game_events = st.lists(
    st.dictionaries(
        st.sampled_from(["k", "p", "by", "s", "winner"]),
        st.integers(min_value=-(2**63), max_value=2**63 - 1) | st.text(max_size=6) | st.booleans(),
        min_size=1,
        max_size=4,
    ),
    max_size=6,
)

SAMPLE_INPUTS = TickInputs(
    joins=[(2, "bo"), (1, "al")],
    leaves=[3],
    inputs={1: {"mx": 1, "my": 0, "ax": 10, "ay": -4, "fire": True}},
).to_record()
SAMPLE_EVENTS = [{"k": "join", "p": 1}, {"k": "hit", "p": 2, "by": 1}, {"k": "over", "winner": 1}]


def sample_payload() -> bytes:
    return encode_payload(SAMPLE_INPUTS, SAMPLE_EVENTS)


# ----------------------------------------------------------------- payloads


def test_payload_round_trips_inputs_and_events():
    assert decode_payload(sample_payload()) == (SAMPLE_INPUTS, SAMPLE_EVENTS)


def test_payload_of_a_quiet_tick_round_trips_to_empty_parts():
    data = encode_payload({}, [])
    assert decode_payload(data) == ({}, [])
    assert orjson.loads(data) == {"in": {}}  # small bodies stay plain; empty events are left out


def test_payload_is_compressed():
    events = [{"k": "fire", "p": 1, "s": i} for i in range(200)]
    data = encode_payload(SAMPLE_INPUTS, events)
    assert len(data) < len(orjson.dumps({"in": SAMPLE_INPUTS, "ev": events})) // 3


@given(tick_inputs, game_events)
@settings(max_examples=150)
def test_random_payloads_round_trip(inputs, events):
    record = inputs.to_record()
    got_inputs, got_events = decode_payload(encode_payload(record, events))
    assert got_inputs == record
    assert got_events == events
    assert TickInputs.from_record(got_inputs).to_record() == record


def test_payloads_of_earlier_versions_still_decode():
    body = orjson.dumps({"in": SAMPLE_INPUTS, "ev": SAMPLE_EVENTS})
    zstd_payload = zstandard.ZstdCompressor(level=1, write_checksum=True).compress(body)  # before LZ4
    zlib_payload = zlib.compress(body)  # the first logs
    for data in (zstd_payload, zlib_payload):
        assert decode_payload(data) == (SAMPLE_INPUTS, SAMPLE_EVENTS)


def test_a_payload_claiming_a_huge_size_is_refused_before_decompressing():
    block = (1 << 31).to_bytes(4, "little") + b"\x10x"
    data = b"L" + zlib.crc32(block).to_bytes(4, "little") + block  # a checksum that matches the damage
    with pytest.raises(CorruptRecord, match="size header"):
        decode_payload(data)


@pytest.mark.parametrize("cut", [0, 1, 2, 5, -5, -4, -1])
def test_truncated_payload_raises_corrupt_record(cut):
    data = sample_payload()
    with pytest.raises(CorruptRecord):
        decode_payload(data[:cut])


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"not zlib at all",
        b"\x00" * 16,
        orjson.dumps({"in": {}})[:-1],  # plain JSON, cut short
        b'{"in": []}',  # plain JSON of the wrong shape
        zlib.compress(b"not json"),
        zlib.compress(b"\xff\xfe"),
        zlib.compress(b"[1, 2]"),
        zlib.compress(b'"in"'),
        zlib.compress(b"42"),
        zlib.compress(b"null"),
        zlib.compress(b"{}"),
        zlib.compress(b'{"ev": []}'),
        zlib.compress(b'{"in": []}'),
        zlib.compress(b'{"in": 5}'),
        zlib.compress(b'{"in": {}, "ev": {}}'),
        zlib.compress(b'{"in": {}, "ev": "x"}'),
    ],
)
def test_corrupted_payload_raises_corrupt_record(data):
    with pytest.raises(CorruptRecord, match="tick payload"):
        decode_payload(data)


@given(st.data())
@settings(max_examples=300)
def test_any_flipped_byte_raises_corrupt_record_or_decodes_unchanged(data):
    original = sample_payload()
    pos = data.draw(st.integers(min_value=0, max_value=len(original) - 1))
    flip = data.draw(st.integers(min_value=1, max_value=255))
    corrupted = bytearray(original)
    corrupted[pos] ^= flip
    try:
        got = decode_payload(bytes(corrupted))
    except CorruptRecord:
        return
    # The payload's CRC-32 catches every flip: a silently different record never comes out.
    assert got == (SAMPLE_INPUTS, SAMPLE_EVENTS)


@given(st.binary(max_size=200))
@settings(max_examples=200)
def test_random_bytes_raise_only_corrupt_record(data):
    with contextlib.suppress(CorruptRecord):
        decode_payload(data)


# ----------------------------------------------------------------- match header


def header(**overrides) -> MatchHeader:
    fields = {
        "match_id": "m-0001",
        "game": "arena",
        "game_version": 1,
        "seed": 2**64 - 1,
        "config": {"width": 400, "time_limit_s": 60},
        "tick_rate": 60,
        "send_rate": 20,
        "created_at": 1_732_000_000.125,
    }
    return MatchHeader(**{**fields, **overrides})


def test_match_header_round_trips_through_its_row():
    h = header()
    row = h.to_row()
    assert set(row) == set(HEADER_COLUMNS)
    assert isinstance(row["config"], str)
    assert orjson.loads(row["config"]) == {"width": 400, "time_limit_s": 60}
    back = MatchHeader.from_row(row)
    assert back == h
    assert back.seed == 2**64 - 1
    assert back.created_at == 1_732_000_000.125


def test_match_header_row_columns_are_in_header_column_order():
    assert tuple(header().to_row()) == HEADER_COLUMNS


def test_match_header_reads_a_row_as_stored_text():
    # A database hands config back as text; from_row parses it.
    row = dict(header().to_row())
    row["config"] = '{"time_limit_s":60,"width":400}'
    assert MatchHeader.from_row(row).config == {"width": 400, "time_limit_s": 60}


@given(
    st.text(min_size=1, max_size=20),
    st.integers(min_value=0, max_value=2**64 - 1),
    st.dictionaries(st.text(max_size=8), st.integers(min_value=1, max_value=10**6) | st.booleans(), max_size=5),
    st.floats(min_value=0, max_value=4e9, allow_nan=False),
)
@settings(max_examples=100)
def test_random_match_headers_round_trip(match_id, seed, config, created_at):
    h = header(match_id=match_id, seed=seed, config=config, created_at=created_at)
    back = MatchHeader.from_row(h.to_row())
    assert back == h
    assert orjson.dumps(back.config) == orjson.dumps(h.config)


@pytest.mark.parametrize("compress", [zlib.compress, lambda raw: zstandard.ZstdCompressor().compress(raw)])
def test_a_record_that_would_inflate_past_the_cap_is_refused_not_inflated(compress: Any) -> None:
    bomb = compress(b'{"in": {}, "pad": "' + b"0" * (MAX_PAYLOAD + 10) + b'"}')
    assert len(bomb) < MAX_PAYLOAD // 100  # small on disk, or in a replay file
    with pytest.raises(CorruptRecord, match="inflates past"):
        decode_payload(bomb)
