"""The event log's record format: what the log's writer and its readers agree on.

One row per (match, tick) holds that tick's inputs and events, compressed
together (smaller and cheaper to write than a row per event; docs/design.md).
Tick payloads are compressed with LZ4, which costs a fifth of zstd's time for
rows a little larger, and carry a CRC-32 of the compressed bytes, so a damaged
payload fails to decode rather than decoding wrong; keyframes, one a second,
use zstd and its checksum.
The tables themselves are the server's (``server/schema.py``, created and
migrated there); readers name only the columns they read.
"""

from __future__ import annotations

import io
import threading
import zlib
from dataclasses import dataclass
from typing import Any

import lz4.block
import orjson
import zstandard

from tickline.shared.game import HASH_VERSION, Rules, State, TickInputs, state_hash


class CorruptRecord(ValueError):
    """A stored tick payload that cannot be decoded."""


# The databases an event log lives in, as SQLAlchemy URL schemes (async drivers only:
# the server never blocks its event loop on the database).
LOG_URL_SCHEMES = ("sqlite+aiosqlite", "postgresql+asyncpg")


class UnsupportedLogUrl(ValueError):
    """An event log URL of a database (or driver) tickline cannot use."""


def check_log_url(url: str) -> None:
    """Raise :class:`UnsupportedLogUrl`, saying what would work, unless ``url`` names a supported database."""
    scheme, sep, _ = url.partition("://")
    if sep and scheme.lower() in LOG_URL_SCHEMES:
        return
    shown = f"{scheme}://..." if sep else repr(url)
    raise UnsupportedLogUrl(
        f"--db {shown} is not a database tickline can log to; use sqlite+aiosqlite:///PATH/FILE.db or "
        "postgresql+asyncpg://USER:PASSWORD@HOST/DATABASE"
    )


# Bodies shorter than this are stored as plain JSON: no compressor shrinks a few
# dozen bytes, and skipping it keeps the writer's per-row cost down.
COMPRESS_FROM = 160
# A tick payload is b"L", the CRC-32 of the rest (4 bytes, little-endian), then
# an LZ4 block (its first 4 bytes: the little-endian size of what it holds).
# zstd frames (earlier tick payloads, and every keyframe) start with their magic.
_LZ4_MARK = b"L"
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
# A payload that claims to hold more than this is damaged, not big: refuse it
# before allocating what it claims.
MAX_PAYLOAD = 16 << 20
# zstd (de)compressors are not safe to share between threads (readers may decode
# in worker threads): one of each per thread. The checksum makes a damaged
# record fail to decode rather than decode wrong.
_local = threading.local()


def _zstd() -> tuple[zstandard.ZstdCompressor, zstandard.ZstdDecompressor]:
    pair = getattr(_local, "zstd", None)
    if pair is None:
        pair = _local.zstd = (zstandard.ZstdCompressor(level=1, write_checksum=True), zstandard.ZstdDecompressor())
    return pair


def _pack(raw: bytes) -> bytes:
    # A plain orjson object starts with b"{", an LZ4 payload with b"L", a zstd
    # frame with its magic number, and a zlib stream (tickline 0.1's logs) with
    # 0x78: each decodes as it is.
    if len(raw) < COMPRESS_FROM:
        return raw
    block: bytes = lz4.block.compress(raw)
    return _LZ4_MARK + zlib.crc32(block).to_bytes(4, "little") + block


def _unpack(data: bytes) -> Any:
    if data[:1] == b"{":
        return orjson.loads(data)
    if data[:1] == _LZ4_MARK:
        block = data[5:]
        if len(data) < 9 or zlib.crc32(block) != int.from_bytes(data[1:5], "little"):
            raise CorruptRecord("tick payload cannot be decoded: its checksum does not match")
        if int.from_bytes(block[:4], "little") > MAX_PAYLOAD:
            raise CorruptRecord("tick payload cannot be decoded: its size header is damaged")
        return orjson.loads(lz4.block.decompress(block))
    # A record can come from an imported replay file: inflate at most MAX_PAYLOAD bytes of
    # it, so that a small record cannot claim gigabytes (a decompression bomb).
    if data[:4] == _ZSTD_MAGIC:
        raw = _zstd()[1].stream_reader(io.BytesIO(data)).read(MAX_PAYLOAD + 1)
    else:
        raw = zlib.decompressobj().decompress(data, MAX_PAYLOAD + 1)
    if len(raw) > MAX_PAYLOAD:
        raise CorruptRecord(f"tick payload cannot be decoded: it inflates past {MAX_PAYLOAD} bytes")
    return orjson.loads(raw)


def encode_payload(inputs: dict[str, Any], events: list[dict[str, Any]]) -> bytes:
    body: dict[str, Any] = {"in": inputs}
    if events:
        body["ev"] = events
    return _pack(orjson.dumps(body))


def decode_payload(data: bytes) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(inputs record, events) of one stored tick."""
    try:
        body = _unpack(data)
        inputs, events = body["in"], body.get("ev", [])
    except CorruptRecord:
        raise
    except (
        zlib.error,
        zstandard.ZstdError,
        lz4.block.LZ4BlockError,
        orjson.JSONDecodeError,
        KeyError,
        TypeError,
        AttributeError,
    ) as exc:
        raise CorruptRecord(f"tick payload cannot be decoded: {exc}") from None
    if not isinstance(inputs, dict) or not isinstance(events, list):
        raise CorruptRecord("tick payload cannot be decoded: its inputs or events have the wrong type")
    return inputs, events


def encode_state(dumped: bytes) -> bytes:
    """A keyframe's stored form, from ``Rules.dump_state``."""
    return _zstd()[0].compress(dumped)


def decode_state(data: bytes) -> bytes:
    """The ``Rules.dump_state`` bytes of a stored keyframe."""
    try:
        return _zstd()[1].decompress(data) if data[:4] == _ZSTD_MAGIC else zlib.decompress(data)
    except (zlib.error, zstandard.ZstdError) as exc:
        raise CorruptRecord(f"keyframe cannot be decoded: {exc}") from None


@dataclass(slots=True, frozen=True)
class MatchHeader:
    """Everything a replay needs besides the inputs: the match's identity and its rules."""

    match_id: str
    game: str
    game_version: int
    seed: int
    config: dict[str, Any]
    tick_rate: int
    send_rate: int
    created_at: float
    hash_version: int = HASH_VERSION  # how its state hashes are computed (game.state_hash)

    def to_row(self) -> dict[str, Any]:
        """The header as the columns of its ``matches`` row."""
        return {
            "match_id": self.match_id,
            "game": self.game,
            "game_version": self.game_version,
            "seed": self.seed,
            "config": orjson.dumps(self.config).decode(),
            "tick_rate": self.tick_rate,
            "send_rate": self.send_rate,
            "created_at": self.created_at,
            "hash_version": self.hash_version,
        }

    @classmethod
    def from_row(cls, row: Any) -> MatchHeader:
        """From a mapping with the ``matches`` row's columns."""
        return cls(
            match_id=row["match_id"],
            game=row["game"],
            game_version=row["game_version"],
            seed=row["seed"],
            config=orjson.loads(row["config"]),
            tick_rate=row["tick_rate"],
            send_rate=row["send_rate"],
            created_at=row["created_at"],
            hash_version=row["hash_version"],
        )


HEADER_COLUMNS = (
    "match_id",
    "game",
    "game_version",
    "seed",
    "config",
    "tick_rate",
    "send_rate",
    "created_at",
    "hash_version",
)


class Divergence(ValueError):
    """A stored tick that does not replay to its stored hash (or is missing, or unreadable)."""

    def __init__(self, tick: int, reason: str) -> None:
        super().__init__(reason)
        self.tick = tick


def replay_stored_tick(
    rules: Rules, state: State, expected: int, tick: int, payload: bytes, stored_hash: str, hash_version: int
) -> None:
    """Step ``state`` by one stored tick and check its hash (of ``hash_version``, the match
    header's); raise Divergence if it does not hold.

    The one definition of "a stored tick replays correctly", shared by the
    replay verifier and the server's crash recovery.
    """
    if tick != expected:
        raise Divergence(expected, f"tick {expected} is missing from the log (next stored is {tick})")
    try:
        inputs, _events = decode_payload(payload)
        rules.step(state, TickInputs.from_record(inputs))
    except (CorruptRecord, ValueError, KeyError, TypeError) as exc:
        raise Divergence(tick, f"tick record cannot be replayed: {exc}") from None
    computed = state_hash(state, hash_version)
    if computed != stored_hash:
        raise Divergence(tick, f"state hash differs at tick {tick}: stored {stored_hash}, replayed {computed}")
