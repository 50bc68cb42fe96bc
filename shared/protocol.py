"""The wire protocol: typed frames, their orjson encoding, and sans-I/O decoders.

Every frame is one orjson object ``{"t": <type tag>, ...fields}``. Frames travel
two ways and the same codec serves both:

- on the reliable, ordered control stream, each frame is prefixed by its length
  (4 bytes, big-endian); :class:`StreamDecoder` reassembles them from any
  chunking of the bytes;
- as an unreliable datagram, one frame per datagram, no prefix.

One datagram has a binary form besides: a *packed delta* (server to client,
for clients whose hello names the ``deflate`` capability) is the byte ``z``,
then tick, base and seq as three big-endian u32, then the diff's JSON
compressed with raw deflate (RFC 1951, what browsers' ``DecompressionStream
("deflate-raw")`` reads). A delta of 50 moving players shrinks about 4x.

The other way, a *packed input* (client to server, once the server said it reads them:
``FastPath.packed``) is the byte ``i``, the ack as a big-endian u32, then each input as its
seq (u32), the ticks it holds (u8), the length of its controls' JSON (u16) and that JSON.
It carries what an ``in`` frame does; the server reads an input's controls only when the
input is new to it, so the copies every datagram repeats cost it nothing to parse.

The protocol version is agreed once, in ``hello``/``welcome``; frames after that
carry no version. Decoders never raise anything but :class:`ProtocolError`
subclasses, each with a one-line message meant for a close reason.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import MISSING, dataclass, field, fields
from typing import Any, ClassVar

import orjson

PROTOCOL_VERSION = 1
# Application protocol negotiated in the TLS handshake of native clients.
ALPN = "tickline/1"
# Browsers come in on the same UDP port over WebTransport (HTTP/3, ALPN "h3"):
# an extended CONNECT to this path opens a session that carries the same frames.
H3_ALPN = "h3"
WEBTRANSPORT_PATH = "/tickline"

# A control-stream frame larger than this is refused (a full snapshot of a big
# match still fits with ample room).
MAX_STREAM_FRAME = 256 * 1024
# What a client sends on its control stream (a hello, a goodbye) is small: the server
# reads it with this cap, so a client can make it hold no more than this of half a frame.
MAX_CLIENT_FRAME = 4096
# UDP payload size both ends configure for QUIC (aioquic's default is the
# protocol's minimum, 1200). 1350 is what browsers and most QUIC stacks use on
# the internet; it lets a 50-player room's delta travel as one datagram.
QUIC_PACKET_SIZE = 1350
# aioquic silently never sends a DATAGRAM frame that does not fit one packet, and
# then blocks later datagrams (aioquic 1.7): anything bigger than this
# goes on the reliable stream instead.
MAX_DATAGRAM = QUIC_PACKET_SIZE - 100
# The WebSocket fallback (on the HTTP port, at this path) carries both on one
# WebSocket: each binary message is a kind byte, then a control-stream chunk
# (length-prefixed frames, as a QUIC control stream carries them) or one datagram.
WEBSOCKET_PATH = "/ws"
WS_CONTROL = b"\x00"
WS_DATAGRAM = b"\x01"
# A connection that brings its peer no packet for this long is closed (the server's default;
# ``tickline serve --idle-timeout``). Each end decides this itself, counting every packet it
# gets, QUIC or fast path: a fast-path client's QUIC connection may carry nothing for a whole
# match, so QUIC's own idle timer, which counts only QUIC packets, cannot be the judge.
IDLE_TIMEOUT_S = 15.0
# QUIC's idle timeout as both ends advertise it: a backstop far beyond IDLE_TIMEOUT_S. (A peer
# that advertises less, such as a browser, gets its own; QUIC takes the smaller.)
QUIC_IDLE_S = 24 * 3600.0

_LENGTH = struct.Struct("!I")
PACKED_DELTA = b"z"
_PACKED_HEADER = struct.Struct("!III")
_PACKED_PREFIX = struct.Struct("!BIII")  # the tag byte, then the header
_PACKED_TAG = PACKED_DELTA[0]
# Capability a client names in its hello to be sent packed deltas.
DEFLATE = "deflate"
# The packed input datagram (the module's docstring), and the capability a client names in
# its hello to be told whether the server reads it.
PACKED_INPUT = b"i"
PACKED_INPUTS = "packed-inputs"
_PACKED_INPUT_ACK = struct.Struct("!I")
_PACKED_INPUT_ITEM = struct.Struct("!IBH")  # seq, ticks, the controls' length
# Capability a client names in its hello when it acks on the welcome's ``ack_every`` grid.
ACK_GRID = "ack-grid"
# zlib's level 6: the smallest packets for about 10 us a diff (level 1: +25 % bytes, -30 % time).
_DEFLATE_LEVEL = 6


class ProtocolError(Exception):
    """A peer sent something this protocol does not allow; the message is a close reason."""


class MalformedFrame(ProtocolError):
    pass


class UnknownFrameType(ProtocolError):
    pass


class FrameTooLarge(ProtocolError):
    pass


class UnsupportedVersion(ProtocolError):
    pass


def _too_large(size: int, cap: int) -> FrameTooLarge:
    return FrameTooLarge(f"frame of {size} bytes exceeds the {cap}-byte cap")


# --------------------------------------------------------------------------- frames


# Ticks one input may hold, at most (a client reading its controls at 7.5 Hz
# against 60 Hz ticks); longer would only hide a client that stopped sending.
MAX_INPUT_TICKS = 8


@dataclass(slots=True)
class Hello:
    """Client -> server, first frame on the control stream."""

    TAG: ClassVar[str] = "hello"
    version: int
    name: str
    # Empty for a new player; the token of an earlier welcome to come back as that player.
    token: str = ""
    # What the client can do beyond the base protocol: "fastpath" asks for the
    # fast path's keys (shared/fastpath.py).
    caps: list[Any] = field(default_factory=list)  # decoded as a list; the server checks each is a short str
    # A match id (or a unique prefix of one) to watch as a spectator rather than play;
    # ``follow`` then names the player whose views to watch (0: the whole match).
    spectate: str = ""
    follow: int = 0
    # A lobby's connect token (shared/tokens.py): what a server that requires them
    # seats a new player or spectator by.
    connect_token: str = ""


@dataclass(slots=True)
class Welcome:
    """Server -> client: the player is in the match (``player_id`` 0: a spectator is watching it)."""

    TAG: ClassVar[str] = "welcome"
    version: int
    player_id: int
    match_id: str
    game: str
    game_version: int
    tick_rate: int
    send_rate: int
    tick: int
    # Secret that identifies this player on a later reconnect.
    token: str = ""
    # The game's config, so that the client can predict with the same rules.
    config: dict[str, Any] = field(default_factory=dict)
    # For a spectator: ticks its views are held back (each is of a tick at least this
    # far behind the server's). 0 for players.
    spectator_delay: int = 0
    # To a hello that names "ack-grid": the client acks the newest tick it holds that is a
    # multiple of this (unless that one is more than twice this behind its newest), so that
    # the players of a room ack the same ticks and share one diff. 0 (left out): the newest.
    ack_every: int = 0


@dataclass(slots=True)
class Input:
    """Client -> server datagram: the newest inputs, repeated until the server applied them.

    ``inputs`` is a list of ``[seq, controls]`` in increasing ``seq``; ``ack`` is
    the newest tick whose snapshot the client holds (0 for none). An input may
    name how many ticks it holds, ``[seq, controls, ticks]`` (1 to
    ``MAX_INPUT_TICKS``; default 1), for a client that reads its controls less
    often than the server ticks. A spectator's carry only the ack: ``inputs`` empty.
    """

    TAG: ClassVar[str] = "in"
    ack: int
    inputs: list[Any]  # decoded as a list; the server checks each item's shape


@dataclass(slots=True)
class Delta:
    """Server -> client: the player's view at ``tick`` as a delta against ``base``.

    ``base`` 0 means a full snapshot. ``seq`` is the newest input sequence the
    server has applied for this player; a spectator sends no inputs, and its
    deltas carry in ``seq`` the server's tick when the (delayed) view was sent.
    """

    TAG: ClassVar[str] = "d"
    tick: int
    base: int
    seq: int
    diff: dict[str, Any]


@dataclass(slots=True)
class Event:
    """Server -> client on the control stream: something that must arrive (match over, chat)."""

    TAG: ClassVar[str] = "ev"
    tick: int
    kind: str
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class FastPath:
    """Server -> client on the control stream: the fast path's session id and keys (hex).

    Sent right after the welcome to a client whose hello named the "fastpath"
    capability; from then on the client may send inputs as fast-path packets,
    and the server answers on the path the client's inputs last came by.

    ``idle_ms`` (sent to a hello that also names "fastpath-keepalive"): the server's
    idle timeout, in which any fast-path packet counts as hearing from the client, so
    that it needs no QUIC packets to stay connected. 0 (left out): it needs them.

    ``packed`` (1, to a hello that also names "packed-inputs"): the client may send its
    input datagrams packed (:func:`encode_packed_input`), on either path. 0 (left out):
    as ``in`` frames.
    """

    TAG: ClassVar[str] = "fast"
    sid: str
    up: str
    down: str
    idle_ms: int = 0
    packed: int = 0


@dataclass(slots=True)
class Bye:
    """Either way on the control stream: the sender is closing, and why."""

    TAG: ClassVar[str] = "bye"
    reason: str


Frame = Hello | Welcome | Input | Delta | Event | FastPath | Bye

_TYPES: dict[str, type] = {cls.TAG: cls for cls in (Hello, Welcome, Input, Delta, Event, FastPath, Bye)}
# Field name -> the Python types its value may have, checked on decode so that
# a frame that parses is also well-typed.
_FIELD_TYPES: dict[type, dict[str, tuple[type, ...]]] = {
    Hello: {
        "version": (int,),
        "name": (str,),
        "token": (str,),
        "caps": (list,),
        "spectate": (str,),
        "follow": (int,),
        "connect_token": (str,),
    },
    Welcome: {
        "version": (int,),
        "player_id": (int,),
        "match_id": (str,),
        "game": (str,),
        "game_version": (int,),
        "tick_rate": (int,),
        "send_rate": (int,),
        "tick": (int,),
        "token": (str,),
        "config": (dict,),
        "spectator_delay": (int,),
        "ack_every": (int,),
    },
    Input: {"ack": (int,), "inputs": (list,)},
    Delta: {"tick": (int,), "base": (int,), "seq": (int,), "diff": (dict,)},
    Event: {"tick": (int,), "kind": (str,), "data": (dict,)},
    FastPath: {"sid": (str,), "up": (str,), "down": (str,), "idle_ms": (int,), "packed": (int,)},
    Bye: {"reason": (str,)},
}


def _required_fields(cls: type) -> frozenset[str]:
    return frozenset(f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING)


_REQUIRED = {cls: _required_fields(cls) for cls in _TYPES.values()}
# Fields added after version 1 shipped: left out while at their defaults, so that a peer
# whose decoder predates them (it refuses unknown fields) still reads what it knows.
_NEWER_FIELDS: dict[type, dict[str, Any]] = {
    Hello: {"spectate": "", "follow": 0, "connect_token": ""},
    Welcome: {"spectator_delay": 0, "ack_every": 0},
    FastPath: {"idle_ms": 0, "packed": 0},
}


# --------------------------------------------------------------------------- encode


def encode(frame: Frame) -> bytes:
    """One frame as its orjson body (a datagram's whole payload)."""
    # asdict() deep-copies; a delta's diff can be large and is never mutated.
    body = {f.name: getattr(frame, f.name) for f in fields(frame)}
    newer = _NEWER_FIELDS.get(type(frame))
    if newer:
        for name, default in newer.items():
            if body[name] == default:
                del body[name]
    body["t"] = frame.TAG
    return orjson.dumps(body)


def encode_delta(tick: int, base: int, seq: int, diff_json: bytes) -> bytes:
    """A Delta frame around an already-encoded diff: the server encodes a diff once
    for every client with the same view and baseline, and only the numbers differ."""
    return b'{"tick":%d,"base":%d,"seq":%d,"diff":%s,"t":"d"}' % (tick, base, seq, diff_json)


def pack_diff(diff_json: bytes) -> bytes:
    """A diff's JSON, raw-deflated for a packed delta (encoded once, shared like the JSON).
    (One call: the same bytes as a compressobj's compress and flush, without the object.)"""
    return zlib.compress(diff_json, _DEFLATE_LEVEL, -15)


def encode_packed_delta(tick: int, base: int, seq: int, packed_diff: bytes) -> bytes:
    """A packed delta datagram around a diff from :func:`pack_diff`."""
    return _PACKED_PREFIX.pack(_PACKED_TAG, tick, base, seq) + packed_diff


def split_packed_delta(data: bytes) -> tuple[int, int, int, bytes]:
    """(tick, base, seq, packed diff) of a packed delta datagram; the diff stays packed,
    so that a client can skip one it does not need or has decoded before."""
    if data[:1] != PACKED_DELTA:
        raise MalformedFrame("not a packed delta")
    if len(data) < 1 + _PACKED_HEADER.size:
        raise MalformedFrame("packed delta is shorter than its header")
    tick, base, seq = _PACKED_HEADER.unpack_from(data, 1)
    return tick, base, seq, data[1 + _PACKED_HEADER.size :]


def encode_packed_input(ack: int, inputs: list[tuple[int, bytes, int]]) -> bytes:
    """A packed input datagram: ``ack`` and each input as (seq, its controls' JSON, ticks)."""
    parts = [PACKED_INPUT, _PACKED_INPUT_ACK.pack(ack)]
    for seq, controls, ticks in inputs:
        parts += (_PACKED_INPUT_ITEM.pack(seq, ticks, len(controls)), controls)
    return b"".join(parts)


def split_packed_input(data: bytes) -> tuple[int, list[list[Any]]]:
    """(ack, inputs) of a packed input datagram, each input ``[seq, controls' JSON, ticks]``
    as an ``in`` frame lists them, but with the controls left unread (:func:`input_controls`
    reads them)."""
    if len(data) > MAX_DATAGRAM:
        raise _too_large(len(data), MAX_DATAGRAM)
    if data[:1] != PACKED_INPUT:
        raise MalformedFrame("not a packed input")
    if len(data) < 1 + _PACKED_INPUT_ACK.size:
        raise MalformedFrame("packed input datagram is shorter than its header")
    (ack,) = _PACKED_INPUT_ACK.unpack_from(data, 1)
    at = 1 + _PACKED_INPUT_ACK.size
    inputs: list[list[Any]] = []
    while at < len(data):
        if len(data) - at < _PACKED_INPUT_ITEM.size:
            raise MalformedFrame("packed input datagram ends inside an input")
        seq, ticks, size = _PACKED_INPUT_ITEM.unpack_from(data, at)
        at += _PACKED_INPUT_ITEM.size
        if len(data) - at < size:
            raise MalformedFrame("packed input datagram ends inside an input")
        inputs.append([seq, data[at : at + size], ticks])
        at += size
    return ack, inputs


def input_controls(raw: bytes) -> Any:
    """The controls of a packed input, from their JSON (any value: the game's input check
    judges it, as it judges an ``in`` frame's)."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise MalformedFrame(f"input controls are not valid JSON ({exc.msg})") from None


def unpack_diff(packed: bytes, max_size: int = MAX_STREAM_FRAME) -> dict[str, Any]:
    """The diff inside a packed delta (:func:`pack_diff`'s inverse), checked as a JSON object."""
    inflater = zlib.decompressobj(-15)
    try:
        raw = inflater.decompress(packed, max_size)
    except zlib.error as exc:
        raise MalformedFrame(f"packed delta does not inflate ({exc})") from None
    if inflater.unconsumed_tail:
        raise FrameTooLarge(f"packed delta inflates past the {max_size}-byte cap")
    return _json_object(raw, "packed delta")


def _decode_packed_delta(data: bytes, max_size: int) -> Delta:
    tick, base, seq, packed = split_packed_delta(data)
    return Delta(tick=tick, base=base, seq=seq, diff=unpack_diff(packed, max_size))


def _json_object(data: bytes, what: str) -> dict[str, Any]:
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise MalformedFrame(f"{what} is not valid JSON ({exc.msg})") from None
    if not isinstance(obj, dict):
        raise MalformedFrame(f"{what} is not a JSON object")
    return obj


def frame_for_stream(body: bytes) -> bytes:
    """A length prefix plus ``body``, ready for the control stream."""
    if len(body) > MAX_STREAM_FRAME:
        raise _too_large(len(body), MAX_STREAM_FRAME)
    return _LENGTH.pack(len(body)) + body


def encode_stream(frame: Frame) -> bytes:
    return frame_for_stream(encode(frame))


# --------------------------------------------------------------------------- decode


def decode(data: bytes, max_size: int = MAX_STREAM_FRAME) -> Frame:
    """Parse one frame body; raise a :class:`ProtocolError` subclass on anything wrong."""
    if len(data) > max_size:
        raise _too_large(len(data), max_size)
    obj = _json_object(data, "frame")
    tag = obj.pop("t", None)
    if not isinstance(tag, str):
        raise MalformedFrame("frame has no type tag 't'")
    cls = _TYPES.get(tag)
    if cls is None:
        raise UnknownFrameType(f"unknown frame type {tag[:32]!r}")
    types = _FIELD_TYPES[cls]
    unknown = obj.keys() - types.keys()
    if unknown:
        raise MalformedFrame(f"{tag} frame has unknown field {sorted(unknown)[0][:32]!r}")
    missing = _REQUIRED[cls] - obj.keys()
    if missing:
        raise MalformedFrame(f"{tag} frame lacks field {sorted(missing)[0]!r}")
    for name, value in obj.items():
        # bool is an int in Python; no field of this protocol is a bool.
        if not isinstance(value, types[name]) or isinstance(value, bool):
            raise MalformedFrame(f"{tag} frame field {name!r} has the wrong type")
    frame: Frame = cls(**obj)
    return frame


def decode_datagram(data: bytes, packed: bool = True) -> Frame:
    """One datagram's frame; ``packed`` also takes a packed delta (clients do, the server does not)."""
    if packed and data[:1] == PACKED_DELTA:
        return _decode_packed_delta(data, MAX_STREAM_FRAME)
    return decode(data, max_size=MAX_DATAGRAM)


class StreamDecoder:
    """Reassembles length-prefixed frames from a byte stream, in any chunking.

    ``feed(data)`` returns the frames completed by ``data``. A length over the
    cap raises :class:`FrameTooLarge` at once, before the body is buffered.
    """

    def __init__(self, max_size: int = MAX_STREAM_FRAME) -> None:
        self._buffer = bytearray()
        self._max_size = max_size

    def feed(self, data: bytes) -> list[Frame]:
        self._buffer += data
        frames: list[Frame] = []
        while len(self._buffer) >= _LENGTH.size:
            (length,) = _LENGTH.unpack_from(self._buffer)
            if length > self._max_size:
                raise _too_large(length, self._max_size)
            end = _LENGTH.size + length
            if len(self._buffer) < end:
                break
            body = bytes(self._buffer[_LENGTH.size : end])
            del self._buffer[:end]
            frames.append(decode(body, self._max_size))
        return frames

    @property
    def pending(self) -> int:
        """Bytes received that do not yet make a whole frame."""
        return len(self._buffer)
