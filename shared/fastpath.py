"""The fast path's packet protection: tick traffic as AEAD-sealed UDP packets (sans-I/O).

QUIC carries the handshake and the control stream; once a player is in, the
server hands the client (over the TLS-protected stream) a session id and one
fresh key per direction, and inputs and deltas travel as these packets on the
same UDP port. The model is netcode.io's packet protection:

    byte  0       kind: 0x01 data, 0x02 path challenge, 0x03 path response.
                  Bit 0x40 is always clear; every QUIC v1 packet has it set
                  (the fixed bit), so one port serves both.
    bytes 1..8    session id (random, chosen by the server)
    bytes 9..16   sequence number, big-endian, per direction, starting at 1
    bytes 17..    AES-256-GCM ciphertext of the payload, then its 16-byte tag

The nonce is the sequence number (4 zero bytes, then the 8 sequence bytes);
each direction has its own key, so no (key, nonce) pair repeats. The 17 header
bytes and a protocol label are authenticated as associated data, so a packet
moved to another session, kind or sequence fails to open.

Replay protection: the receiver accepts only sequences newer than the newest
it authenticated. A :class:`ReplayWindow` remembers the last 64 below that, so
a drop is counted for what it is: a replay (seen before), a late packet
(reordered), or one too old to judge. Tick traffic loses nothing by dropping
late packets: every input packet repeats the inputs not yet confirmed, and a
delta older than the newest one held is of no use.

This module does no I/O and never imports asyncio; ``server.fastpath`` and
the client SDK drive it.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING

from tickline.shared import native

DATA = 0x01
CHALLENGE = 0x02
RESPONSE = 0x03
KINDS = frozenset((DATA, CHALLENGE, RESPONSE))

QUIC_FIXED_BIT = 0x40
HEADER = struct.Struct("!B8sQ")
HEADER_SIZE = HEADER.size  # 17
TAG_SIZE = 16
OVERHEAD = HEADER_SIZE + TAG_SIZE
KEY_SIZE = 32
SESSION_ID_SIZE = 8
CHALLENGE_SIZE = 8
# Binds every packet to this protocol and version.
LABEL = b"tickline fast path 1"
NONCE_PAD = bytes(4)
# Capability a client names in its hello to be offered the fast path.
CAPABILITY = "fastpath"
# ...and to be told the server's idle timeout with the keys (FastPath.idle_ms): a client
# that knows it keeps its connection alive on the fast path alone, without QUIC PINGs.
KEEPALIVE_CAPABILITY = "fastpath-keepalive"


class Dropped(Exception):
    """A packet that must be dropped; ``reason`` names the metric it counts under."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# Why packets are dropped, the label of the server's counter.
DROP_REASONS = ("short", "kind", "session", "auth", "replayed", "late", "too_old", "challenge")


def is_fastpath(packet: bytes) -> bool:
    """True for a fast-path packet, False for anything QUIC may own (decided by byte 0)."""
    return bool(packet) and not packet[0] & QUIC_FIXED_BIT


def session_of(packet: bytes) -> bytes:
    """The session id of a packet long enough to hold a header and tag; raises Dropped."""
    if len(packet) < OVERHEAD:
        raise Dropped("short")
    if packet[0] not in KINDS:
        raise Dropped("kind")
    return packet[1:9]


@dataclass(frozen=True, slots=True)
class FastKeys:
    """What the server gives a client over the control stream: a session id and two keys."""

    session_id: bytes
    up: bytes  # client -> server
    down: bytes  # server -> client

    @classmethod
    def generate(cls) -> FastKeys:
        return cls(os.urandom(SESSION_ID_SIZE), os.urandom(KEY_SIZE), os.urandom(KEY_SIZE))

    def to_wire(self) -> dict[str, str]:
        return {"sid": self.session_id.hex(), "up": self.up.hex(), "down": self.down.hex()}

    @classmethod
    def from_wire(cls, data: dict[str, object]) -> FastKeys:
        """Parse the control frame's fields; ValueError when they are not what the server sends."""
        try:
            sid, up, down = (bytes.fromhex(str(data[k])) for k in ("sid", "up", "down"))
        except (KeyError, ValueError):
            raise ValueError("fast-path keys must be hex fields sid, up, down") from None
        if len(sid) != SESSION_ID_SIZE or len(up) != KEY_SIZE or len(down) != KEY_SIZE:
            raise ValueError("fast-path keys have the wrong lengths")
        return cls(sid, up, down)


class ReplayWindow:
    """The newest sequence accepted and which of the 64 before it were seen."""

    SIZE = 64

    __slots__ = ("_seen", "newest")

    def __init__(self) -> None:
        self.newest = 0
        self._seen = 0  # bit i: newest - 1 - i was accepted

    def check(self, seq: int) -> None:
        """Raise Dropped unless ``seq`` is newer than every accepted one (before decrypting)."""
        if seq > self.newest:
            return
        behind = self.newest - seq
        if behind == 0:
            raise Dropped("replayed")
        if behind > self.SIZE:
            raise Dropped("too_old")
        raise Dropped("replayed" if self._seen >> (behind - 1) & 1 else "late")

    def accept(self, seq: int) -> None:
        """Record ``seq`` as authenticated (only after it decrypted)."""
        shift = seq - self.newest
        if shift >= self.SIZE + 1:
            self._seen = 0
        else:
            self._seen = ((self._seen << shift) | (1 << (shift - 1))) & ((1 << self.SIZE) - 1)
        self.newest = seq


# The sealing and opening, native where built (``_seal_c.pyx``, OpenSSL's EVP), else in pure
# Python (``_seal_py.py``, the ``cryptography`` package). Loaded here, below everything the twins
# import from this module.
if TYPE_CHECKING:  # (both twins have the pure one's interface)
    from tickline.shared._seal_py import Opener as Opener
    from tickline.shared._seal_py import Sealer as Sealer
else:
    _seal = native.load("tickline.shared", "seal")
    Sealer, Opener = _seal.Sealer, _seal.Opener


def client_ends(keys: FastKeys) -> tuple[Sealer, Opener]:
    """The client's sealer (up key) and opener (down key)."""
    return Sealer(keys.up, keys.session_id), Opener(keys.down, keys.session_id)


def server_ends(keys: FastKeys) -> tuple[Sealer, Opener]:
    """The server's sealer (down key) and opener (up key)."""
    return Sealer(keys.down, keys.session_id), Opener(keys.up, keys.session_id)
