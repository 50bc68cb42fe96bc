"""Seed inputs for each fuzz target, made by the product's own encoders from a real match:
arena played for a few seconds by scripted players, what their clients would send, what
the server stored, and the replay file exported from it. A seed gives the fuzzer valid
structure to mutate from; without seeds it spends its time rediscovering the framing."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import orjson

from fuzz.targets import KEY, NOW, SESSION, _retry
from tickline.replays.file import HASH_CHARS
from tickline.shared import delta, fastpath, tokens
from tickline.shared.arena import Arena
from tickline.shared.game import TickInputs, state_hash
from tickline.shared.logformat import encode_payload
from tickline.shared.protocol import (
    PROTOCOL_VERSION,
    Bye,
    Hello,
    Input,
    encode,
    encode_delta,
    encode_packed_delta,
    encode_packed_input,
    encode_stream,
    pack_diff,
)


def _match(ticks: int = 120) -> tuple[list[dict[str, object]], list[bytes], list[bytes], list[str]]:
    """(inputs records, tick payloads, packed diffs, state hashes) of arena played by three
    walking players."""
    rules = Arena({})
    state = rules.initial_state(7)
    records, payloads, diffs, hashes = [], [], [], []
    before: dict[str, object] = {}
    for tick in range(1, ticks + 1):
        joins = [(pid, f"p{pid}") for pid in (1, 2, 3)] if tick == 1 else []
        controls = {pid: {"mx": (tick // 20 + pid) % 3 - 1, "my": 1, "ax": 100, "ay": -50, "fire": tick % 7 == 0}
                    for pid in (1, 2, 3)}  # fmt: skip
        inputs = TickInputs(inputs=controls, joins=joins, leaves=[])
        events = rules.step(state, inputs)
        record = inputs.to_record()
        records.append(record)
        payloads.append(encode_payload(record, events))
        hashes.append(state_hash(state))
        view = rules.view(state, 1)
        diffs.append(pack_diff(orjson.dumps(delta.diff(before, view))))
        before = view
    return records, payloads, diffs, hashes


def seeds() -> dict[str, list[bytes]]:
    records, payloads, diffs, hashes = _match()
    inputs = [
        Input(ack=t, inputs=[[t * 2 + i, {"mx": 1, "my": -1, "ax": 5, "ay": 5, "fire": i == 0}] for i in range(3)])
        for t in range(1, 6)
    ]
    hello = Hello(version=PROTOCOL_VERSION, name="alice", caps=["deflate", "fastpath"])
    sealer = fastpath.Sealer(KEY, SESSION)
    client = fastpath.Sealer(os.urandom(32), SESSION)
    initial = _client_initial()
    replay_header = {
        "format": 1, "game": "arena", "rules_version": 1, "match_id": "m" * 32, "seed": 7, "config": {},
        "tick_rate": 60, "send_rate": 30, "created_at": NOW, "status": "finished", "ticks": len(records),
        "players": {"1": "p1", "2": "p2", "3": "p3"}, "result": {}, "marks": [], "final_hash": hashes[-1],
        "hash_chars": HASH_CHARS,
    }  # fmt: skip
    stored = "".join(h[:HASH_CHARS] for h in hashes)
    body = orjson.dumps({"inputs": records, "hashes": stored, "keyframes": []})
    return {
        "session_stream": [encode_stream(hello) + encode_stream(i) for i in inputs]
        + [encode_stream(Bye(reason="done"))],
        "session_datagram": [encode(i) for i in inputs]
        + [encode_packed_input(i.ack, [(seq, orjson.dumps(c), 1) for seq, c in i.inputs]) for i in inputs],
        "datagram": [encode_packed_delta(t, t - 1, t, d) for t, d in enumerate(diffs[:20], 1)]
        + [encode_delta(1, 0, 1, orjson.dumps({"s": {"tick": 1}}))],
        "fastpath_packet": [sealer.seal(fastpath.DATA, encode(i)) for i in inputs] + [client.seal(fastpath.DATA, b"x")],
        "server_fastpath": [sealer.seal(fastpath.DATA, encode(i))[1:] for i in inputs],
        "connect_token": [tokens.issue(KEY, m, "alice", "127.0.0.1:4433", NOW - 10).encode() for m in ("", "ab" * 16)],
        "retry_token": [
            b"rscid456"
            + _retry.create_token(
                address=("127.0.0.1", 5000),
                original_destination_connection_id=b"odcid123",
                retry_source_connection_id=b"rscid456",
                now=0,
            )
        ],
        "quic_initial": [initial],
        "replay_file": [orjson.dumps(replay_header) + b"\0" + body],
        "log_tick": payloads[:10],
    }


def _client_initial() -> bytes:
    from aioquic.quic.configuration import QuicConfiguration
    from aioquic.quic.connection import QuicConnection

    quic = QuicConnection(configuration=QuicConfiguration(is_client=True, alpn_protocols=["tickline/1"]))
    quic.connect(("127.0.0.1", 4433), now=time.monotonic())
    return quic.datagrams_to_send(now=time.monotonic())[0][0]


def write_seeds(corpus: Path) -> dict[str, int]:
    """Each target's seeds into ``corpus/TARGET/seed-*`` (named by content); the counts."""
    counts = {}
    for target, inputs in seeds().items():
        folder = corpus / target
        folder.mkdir(parents=True, exist_ok=True)
        for data in inputs:
            (folder / f"seed-{hashlib.sha1(data).hexdigest()[:16]}").write_bytes(data)
        counts[target] = len(inputs)
    return counts
