"""Portable replay files: one match in one self-contained, versioned, checked file.

The layout (docs/replays.md has the whole description)::

    magic            16 bytes  b"TICKLINE REPLAY\\n"
    format version    2 bytes  unsigned, little-endian (FORMAT)
    header length     4 bytes  unsigned, little-endian
    header            JSON (UTF-8): game, rules version, seed, config, players,
                      duration, result, event marks... readable without the body
    header checksum  16 bytes  BLAKE2b-128 of the header
    body length       8 bytes  unsigned, little-endian
    body              one zstd frame of JSON: every tick's input record, the first
                      64 bits of every tick's state hash, keyframes
    body checksum    16 bytes  BLAKE2b-128 of the body

Nothing follows the body checksum. A file that is truncated, damaged, or
changed is refused with the part named: the checksums catch damage; a file
rewritten with fresh checksums still cannot replay wrongly, because replaying
re-simulates every tick against its stored hash and the header's claims (its
result, its final hash) against what the replay reaches.

Encoding and decoding are pure functions of bytes; :func:`write_replay` and
:func:`read_replay` do the file I/O in a worker thread.
"""

from __future__ import annotations

import asyncio
import hashlib
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import zstandard

from tickline.replays.replay import MIN_HASH_CHARS, Frame, Replay, StoredStep
from tickline.shared.game import HASH_VERSIONS
from tickline.shared.logformat import MatchHeader

MAGIC = b"TICKLINE REPLAY\n"
FORMAT = 1
# Compression level of the body: level 12 makes files about a fifth smaller than
# level 3 and still exports a 30-minute match in well under a second of compression.
LEVEL = 12
# A keyframe every this many seconds of match: seeking re-simulates at most that long.
KEYFRAME_EVERY_S = 5
HASH_CHARS = MIN_HASH_CHARS
# Claims beyond these are damage, not size: refuse before allocating them.
MAX_HEADER = 16 << 20
MAX_BODY = 1 << 31
_CHECK = 16
_PRELUDE = struct.Struct("<16sHI")
_BODY_LENGTH = struct.Struct("<Q")


class ReplayFileError(ValueError):
    """A file that is not a replay tickline can read; the message names the broken part."""


@dataclass(slots=True)
class Contents:
    """A replay file's two parts, decoded."""

    header: dict[str, Any]
    body: dict[str, Any]


def _checksum(data: bytes) -> bytes:
    return hashlib.blake2b(data, digest_size=_CHECK).digest()


# ---------------------------------------------------------------------- writing


def export_replay(replay: Replay, keyframe_every_s: int = KEYFRAME_EVERY_S) -> bytes:
    """The replay file of ``replay``: re-simulates the whole match once (checking every tick,
    which also finds its players, marks and result), so a broken log is never exported."""
    every = max(1, keyframe_every_s * replay.tick_rate)
    records: list[dict[str, Any]] = []
    keyframes: list[list[Any]] = []

    def keep(frame: Frame) -> None:
        records.append(frame.inputs.to_record())
        if frame.tick % every == 0 and frame.tick < replay.ticks:
            dumped = replay.rules.dump_state(frame.state)
            keyframes.append([frame.tick, orjson.Fragment(dumped), replay.steps[frame.tick - 1].hash])

    summary = replay.scan(keep)
    h = replay.header
    header = {
        "format": FORMAT,
        "game": h.game,
        "rules_version": replay.rules.version,
        "match_id": h.match_id,
        "seed": h.seed,
        "config": h.config,
        "tick_rate": h.tick_rate,
        "send_rate": h.send_rate,
        "created_at": h.created_at,
        "status": replay.status,
        "ticks": replay.ticks,
        "duration_s": round(replay.duration_s, 3),
        "players": {str(pid): name for pid, name in sorted(summary.players.items())},
        "result": summary.result,
        "marks": [[mark.tick, mark.event] for mark in summary.marks],
        "final_hash": summary.final_hash,
        "keyframe_every": every,
        "hash_chars": HASH_CHARS,
        "hash_version": h.hash_version,
    }
    hashes = "".join(step.hash[:HASH_CHARS] for step in replay.steps)
    body = orjson.dumps({"inputs": records, "hashes": hashes, "keyframes": keyframes})
    return encode(header, zstandard.ZstdCompressor(level=LEVEL, write_checksum=True).compress(body))


def encode(header: dict[str, Any], body: bytes) -> bytes:
    """The file's bytes from its header and its (compressed) body."""
    return encode_raw(orjson.dumps(header, option=orjson.OPT_NON_STR_KEYS), body)


def encode_raw(head: bytes, body: bytes) -> bytes:
    """The file's bytes from its header's JSON bytes and its (compressed) body, framed and
    checksummed (what a fuzzer builds files with, to reach the parsing behind the checksums)."""
    return b"".join(
        (
            _PRELUDE.pack(MAGIC, FORMAT, len(head)),
            head,
            _checksum(head),
            _BODY_LENGTH.pack(len(body)),
            body,
            _checksum(body),
        )
    )


async def write_replay(replay: Replay, path: Path) -> int:
    """Export ``replay`` to ``path`` (written whole, then renamed into place); its size in bytes."""
    data = await asyncio.to_thread(export_replay, replay)
    await asyncio.to_thread(_write_atomically, path, data)
    return len(data)


def _write_atomically(path: Path, data: bytes) -> None:
    partial = path.with_name(path.name + ".partial")
    partial.write_bytes(data)
    partial.replace(path)


# ---------------------------------------------------------------------- reading


def decode_header(data: bytes) -> tuple[dict[str, Any], int]:
    """The header of a replay file (its first bytes will do), and where the body length starts."""
    if len(data) < _PRELUDE.size:
        if MAGIC.startswith(data[:16]) and data:
            raise ReplayFileError("truncated replay file: it ends inside its first bytes")
        raise ReplayFileError("not a tickline replay file (it does not start with TICKLINE REPLAY)")
    magic, version, length = _PRELUDE.unpack_from(data)
    if magic != MAGIC:
        raise ReplayFileError("not a tickline replay file (it does not start with TICKLINE REPLAY)")
    if version != FORMAT:
        raise ReplayFileError(
            f"replay file format {version} is not one this tickline reads (it reads format {FORMAT}); "
            "upgrade tickline to read it"
        )
    if length > MAX_HEADER:
        raise ReplayFileError(f"damaged replay file: its header claims {length} bytes")
    start, end = _PRELUDE.size, _PRELUDE.size + length
    if len(data) < end + _CHECK:
        raise ReplayFileError(f"truncated replay file: it ends inside its header ({len(data)} bytes)")
    head = data[start:end]
    if _checksum(head) != data[end : end + _CHECK]:
        raise ReplayFileError("damaged or altered replay file: the header's checksum does not match")
    try:
        header = orjson.loads(head)
    except orjson.JSONDecodeError as exc:
        raise ReplayFileError(f"damaged replay file: its header is not JSON ({exc})") from None
    missing = sorted(HEADER_FIELDS - header.keys()) if isinstance(header, dict) else ["(all)"]
    if missing:
        raise ReplayFileError(f"damaged replay file: its header lacks {', '.join(missing)}")
    return header, end + _CHECK


HEADER_FIELDS = frozenset(
    {"format", "game", "rules_version", "match_id", "seed", "config", "tick_rate", "send_rate"}
    | {"created_at", "status", "ticks", "players", "result", "marks", "final_hash", "hash_chars"}
)


def decode(data: bytes) -> Contents:
    """Both parts of a replay file, each checked; ReplayFileError names what is wrong."""
    header, at = decode_header(data)
    if len(data) < at + _BODY_LENGTH.size:
        raise ReplayFileError("truncated replay file: it ends before its body")
    (length,) = _BODY_LENGTH.unpack_from(data, at)
    start = at + _BODY_LENGTH.size
    if length > MAX_BODY:
        raise ReplayFileError(f"damaged replay file: its body claims {length} bytes")
    end = start + length
    if len(data) < end + _CHECK:
        raise ReplayFileError(
            f"truncated replay file: its body should be {length} bytes, {max(0, len(data) - start - _CHECK)} are there"
        )
    if len(data) > end + _CHECK:
        raise ReplayFileError(f"damaged replay file: {len(data) - end - _CHECK} stray bytes after its end")
    body = data[start:end]
    if _checksum(body) != data[end : end + _CHECK]:
        raise ReplayFileError("damaged or altered replay file: the body's checksum does not match")
    try:
        raw = zstandard.ZstdDecompressor().decompress(body, max_output_size=MAX_BODY)
        parsed = orjson.loads(raw)
    except (zstandard.ZstdError, orjson.JSONDecodeError) as exc:
        raise ReplayFileError(f"damaged replay file: its body cannot be read ({exc})") from None
    if not isinstance(parsed, dict) or not {"inputs", "hashes", "keyframes"} <= parsed.keys():
        raise ReplayFileError("damaged replay file: its body lacks inputs, hashes or keyframes")
    return Contents(header, parsed)


def _hash_version(value: Any) -> int:
    if value not in HASH_VERSIONS or type(value) is not int:
        raise ReplayFileError(
            f"the replay file's state hashes are of version {value!r}, which this tickline does not know "
            f"{HASH_VERSIONS}: upgrade tickline to read it"
        )
    return value


def replay_from(contents: Contents, rules_version: int | None = None) -> Replay:
    """A :class:`Replay` of a decoded file (GameNotInstalled when its game is not installed)."""
    header, body = contents.header, contents.body
    inputs, hashes, chars = body["inputs"], body["hashes"], header["hash_chars"]
    if type(chars) is not int or chars < MIN_HASH_CHARS or not isinstance(hashes, str):
        raise ReplayFileError("damaged replay file: its hashes are unreadable")
    if not isinstance(inputs, list) or len(hashes) != chars * len(inputs) or len(inputs) != header["ticks"]:
        raise ReplayFileError(
            f"damaged replay file: the header says {header['ticks']} ticks, the body holds "
            f"{len(inputs) if isinstance(inputs, list) else 0} inputs and {len(hashes) // chars} hashes"
        )
    steps = [
        StoredStep(tick, record, hashes[(tick - 1) * chars : tick * chars])
        for tick, record in enumerate(inputs, start=1)
    ]
    keyframes: dict[int, tuple[bytes, str]] = {}
    for item in body["keyframes"]:
        try:
            tick, state, digest = item
            keyframes[int(tick)] = (orjson.dumps(state), str(digest))
        except (TypeError, ValueError):
            raise ReplayFileError("damaged replay file: a keyframe is unreadable") from None
    match = MatchHeader(
        match_id=header["match_id"],
        game=header["game"],
        game_version=header["rules_version"],
        seed=header["seed"],
        config=header["config"],
        tick_rate=header["tick_rate"],
        send_rate=header["send_rate"],
        created_at=header["created_at"],
        hash_version=_hash_version(header.get("hash_version", 1)),  # (files from before it: 1)
    )
    replay = Replay(
        match,
        steps,
        keyframes,
        status=header["status"],
        last_tick=header["ticks"],
        final_hash=header["final_hash"],
        rules_version=rules_version,
    )
    replay.file_header = header
    return replay


async def read_replay(path: Path, rules_version: int | None = None) -> Replay:
    """Open the replay file at ``path`` (read and decoded in a worker thread)."""
    return await asyncio.to_thread(lambda: replay_from(decode(path.read_bytes()), rules_version))


async def read_header(path: Path) -> dict[str, Any]:
    """The header of the replay file at ``path``, without reading its body."""

    def first_bytes() -> dict[str, Any]:
        with path.open("rb") as f:
            prelude = f.read(_PRELUDE.size)
            if len(prelude) == _PRELUDE.size:
                _, _, length = _PRELUDE.unpack(prelude)
                prelude += f.read(min(length, MAX_HEADER) + _CHECK)
            return decode_header(prelude)[0]

    return await asyncio.to_thread(first_bytes)


def header_claims(replay: Replay) -> list[str]:
    """Where a replay file's header disagrees with what re-simulating it gives (empty: nowhere).
    Only for a replay read from a file; a forged header with a fresh checksum is found here."""
    claimed = replay.file_header or {}
    summary = replay.summary
    found = {
        "players": {str(pid): name for pid, name in sorted(summary.players.items())},
        "result": summary.result,
        "marks": [[mark.tick, mark.event] for mark in summary.marks],
        "final_hash": summary.final_hash,
    }
    return [
        f"the header's {key} is not what the replay gives"
        for key, value in found.items()
        if orjson.dumps(claimed.get(key), option=orjson.OPT_NON_STR_KEYS) != orjson.dumps(value)
    ]
