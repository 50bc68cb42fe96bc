"""Every decoder that reads bytes someone else chose, as a fuzz target.

A target takes one input (bytes) and returns normally when the decoder accepted it or
refused it the way it promises to (its own error types, each with a reason; a session
closes the connection with the reason); any other exception is a crash, which the
fuzzer reports and the corpus keeps. The targets run the product's own code: a player's
session fed its control stream and datagrams (arena's input schema behind them), a
client's datagram decoder (packed deltas inflated), the fast path's opener and the server's `FastPath` as the endpoint
feeds it, connect tokens, Retry tokens and QUIC headers at the gate, replay files, and
the event log's tick records replayed into arena's rules.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any, cast

import zstandard

from tickline.replays.file import ReplayFileError, replay_from
from tickline.replays.file import decode as decode_replay_file
from tickline.replays.file import encode_raw as encode_replay_file_raw
from tickline.server.fastpath import FastPath
from tickline.server.gate import RetryTokens, initial_decrypts, payload_offset
from tickline.server.match import Match
from tickline.server.session import Session
from tickline.shared import fastpath, tokens
from tickline.shared.arena import Arena
from tickline.shared.game import HASH_VERSION
from tickline.shared.games import UnknownGame
from tickline.shared.logformat import Divergence, replay_stored_tick
from tickline.shared.protocol import ProtocolError, decode_datagram

KEY = bytes(range(32))
SESSION = bytes(range(8))
ADDR = "127.0.0.1:4433"
NOW = 1_700_000_000.0
_arena = Arena({})


class _Channel:
    """Where a session under test sends: nothing is kept but whether it closed."""

    peer = "fuzz"

    def __init__(self) -> None:
        self.closed: str | None = None

    def send_reliable(self, body: bytes) -> None:
        pass

    def send_datagram(self, body: bytes) -> None:
        pass

    def close(self, reason: str, error: bool = False) -> None:
        self.closed = reason

    def offer_fastpath(self) -> None:
        return None

    def fast_sender(self) -> None:
        return None


class _Match:
    """What a session reads of its match: the rules and the tick."""

    def __init__(self) -> None:
        self.rules = _arena
        self.tick = 0


def _player() -> tuple[Session, _Match]:
    match = _Match()
    session = Session(_Channel())
    session.join(cast(Match, match), 1)
    return session, match


def session_stream(data: bytes) -> None:
    """A player's control stream, in two pieces, then the ticks that take its inputs: a
    session refuses by closing the connection with a reason, never by raising."""
    session, match = _player()
    session.on_stream_data(data[: len(data) // 2])
    session.on_stream_data(data[len(data) // 2 :])
    for tick in range(1, 6):
        match.tick = tick
        session.take_input(tick)


def session_datagram(data: bytes) -> None:
    """A player's datagram (an input frame, redundant copies and all), then the ticks."""
    session, match = _player()
    session.on_datagram(data)
    session.on_datagram(data)  # the same again: a duplicate
    for tick in range(1, 6):
        match.tick = tick
        session.take_input(tick)


def datagram(data: bytes) -> None:
    """A datagram as a client reads one: a delta, packed (deflated) or not."""
    with contextlib.suppress(ProtocolError):
        decode_datagram(data)


def fastpath_packet(data: bytes) -> None:
    """A fast-path packet, opened with a session's keys (what an attacker cannot forge is
    checked after what it can)."""
    opener = fastpath.Opener(KEY, SESSION)
    try:
        fastpath.session_of(data)
        opener.open(data)
    except fastpath.Dropped:
        pass


class _Recorder:
    def __init__(self) -> None:
        self.sent = 0

    def sendto(self, data: bytes, addr: Any = None) -> None:
        self.sent += len(data)


def _server_fastpath() -> tuple[FastPath, _Recorder]:
    async def make() -> tuple[FastPath, _Recorder]:
        fast, recorder = FastPath(), _Recorder()
        fast.transport = recorder  # type: ignore[assignment]  # (a datagram transport, as the endpoint's)
        fast.open_route(lambda _body: None, lambda: ("127.0.0.1", 1000))
        return fast, recorder

    return asyncio.run(make())  # (FastPath reads its clock from the loop that made it)


_fast: tuple[FastPath, _Recorder] | None = None


def server_fastpath(data: bytes) -> None:
    """What the endpoint hands the server's fast path: it never raises, and never answers
    more bytes than it was sent."""
    global _fast
    if _fast is None:
        _fast = _server_fastpath()
    fast, recorder = _fast
    before = recorder.sent
    fast.datagram_received(b"\x01" + data, ("127.0.0.1", 2000))
    if recorder.sent - before > len(data) + 1:
        raise AssertionError("the fast path answered with more bytes than it was sent")


def connect_token(data: bytes) -> None:
    with contextlib.suppress(tokens.TokenRefused):
        tokens.verify(KEY, data.decode("utf-8", errors="replace"), NOW, ADDR)


_retry = RetryTokens(KEY, lambda: NOW)


def retry_token(data: bytes) -> None:
    with contextlib.suppress(ValueError):
        _retry.validate_token(address=("127.0.0.1", 5000), destination_cid=data[:8], token=data[8:], now=0.0)


def quic_initial(data: bytes) -> None:
    """The gate's reading of a datagram that would open a connection."""
    parsed = payload_offset(data, 8)
    if parsed is not None:
        initial_decrypts(data, *parsed)


def replay_file(data: bytes) -> None:
    """A replay file someone sends: ``header JSON \\0 body JSON``, framed and checksummed as a
    file is (a fuzzer cannot forge checksums, and what lies behind them is the parser worth
    reaching), decoded, then re-simulated under arena."""
    head, _, body = data.partition(b"\0")
    packed = encode_replay_file_raw(head, zstandard.ZstdCompressor().compress(body))
    with contextlib.suppress(ReplayFileError, Divergence, UnknownGame):
        replay_from(decode_replay_file(packed))


def log_tick(data: bytes) -> None:
    """A stored tick (from the log, or an imported replay file) replayed into arena."""
    state = _arena.initial_state(7)
    with contextlib.suppress(Divergence):
        replay_stored_tick(_arena, state, 1, 1, data, "", HASH_VERSION)


TARGETS: dict[str, Callable[[bytes], None]] = {
    "session_stream": session_stream,
    "session_datagram": session_datagram,
    "datagram": datagram,
    "fastpath_packet": fastpath_packet,
    "server_fastpath": server_fastpath,
    "connect_token": connect_token,
    "retry_token": retry_token,
    "quic_initial": quic_initial,
    "replay_file": replay_file,
    "log_tick": log_tick,
}
