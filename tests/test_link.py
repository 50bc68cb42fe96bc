"""A client's link (server/link.py) on both twins: the native one (server/_link_c.pyx) and the
pure one, which must agree on everything: the bytes sent, the baselines kept, the acks taken,
and what they leave to the session."""

from __future__ import annotations

import sys
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tickline.server.intake import MAX_SEQ
from tickline.server.link import BASELINE_RING
from tickline.shared import delta, native
from tickline.shared.fastpath import DATA, FastKeys, client_ends
from tickline.shared.protocol import (
    MAX_DATAGRAM,
    PACKED_DELTA,
    Delta,
    Input,
    decode,
    decode_datagram,
    encode,
    split_packed_delta,
)

LINK = native.twins("tickline.server", "link")
INTAKE = native.twins("tickline.server", "intake")
UDPBATCH = native.twins("tickline.server", "udpbatch")
KINDS = sorted(LINK)


class Owner:
    """What the link leaves to its session, written down."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []

    def fail(self, reason: str) -> None:
        self.calls.append(("fail", reason))

    def input_refused(self, reason: str) -> None:
        self.calls.append(("refused", reason))

    def inputs_overflowed(self, dropped: int) -> None:
        self.calls.append(("overflowed", dropped))

    def acks_stopped(self) -> None:
        self.calls.append(("acks_stopped", None))


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class StandIn:
    tick = 0


def _validate(raw: Any) -> dict[str, Any]:
    return dict(raw)


def _link(kind: str, packed: bool = False, ack_timeout_s: float = 15.0) -> tuple[Any, list[bytes], Owner, Clock]:
    sent: list[bytes] = []
    owner, clock = Owner(), Clock()
    queue = INTAKE[kind].InputQueue(_validate)
    link = LINK[kind].Link(queue, clock, owner, sent.append, ack_timeout_s)
    link.match = StandIn()
    link.packed = packed
    return link, sent, owner, clock


def _ack(tick: int, *inputs: list[Any]) -> bytes:
    return encode(Input(ack=tick, inputs=list(inputs)))


@pytest.fixture(params=KINDS)
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def test_a_delta_is_against_the_newest_view_the_client_acknowledged(kind: str) -> None:
    link, sent, owner, _ = _link(kind)
    for tick in (2, 4, 6):
        link.send_view(tick, {"a": tick}, {}, False, None)
    link.deliver(_ack(4))
    link.send_view(8, {"a": 8}, {}, False, None)
    frames = [decode(body) for body in sent]
    assert all(isinstance(f, Delta) for f in frames)
    assert [(f.base, f.diff) for f in frames if isinstance(f, Delta)][-1] == (4, {"n": {"a": 4}})
    assert link.acked == 4 and owner.calls == []


def test_an_ack_of_a_view_never_sent_or_older_than_the_last_is_ignored(kind: str) -> None:
    link, _, _, _ = _link(kind)
    for tick in (2, 4, 6):
        link.send_view(tick, {"a": tick}, {}, False, None)
    link.deliver(_ack(5))  # never sent
    assert link.acked == 0
    link.deliver(_ack(6))
    link.deliver(_ack(4))  # older than the newest acknowledged
    link.deliver(_ack(2**64 - 1))  # any integer a client writes
    link.deliver(_ack(-(2**63)))
    assert link.acked == 6


def test_only_the_last_ring_of_views_are_baselines(kind: str) -> None:
    link, sent, _, _ = _link(kind)
    for tick in range(1, BASELINE_RING + 6):
        link.send_view(tick, {"a": tick}, {}, False, None)
    assert link.sent_ticks() == list(range(6, BASELINE_RING + 6))
    link.deliver(_ack(5))  # gone from the ring
    assert link.acked == 0
    link.deliver(_ack(6))
    assert link.acked == 6
    assert link.deltas_sent == BASELINE_RING + 5 and link.bytes_down == sum(map(len, sent))


def test_views_older_than_the_acknowledged_one_are_let_go(kind: str) -> None:
    """Acks only rise, so a view older than the newest acknowledged is never a baseline
    again: the link lets it go at once, not a ring of sends later."""
    link, sent, _, _ = _link(kind)
    views = {tick: {"a": tick} for tick in range(2, 12, 2)}
    for tick, view in views.items():
        link.send_view(tick, view, {}, False, None)
    held = [sys.getrefcount(views[t]) for t in views]
    link.deliver(_ack(6))
    assert link.sent_ticks() == [6, 8, 10]
    assert [a - sys.getrefcount(views[t]) for a, t in zip(held, views, strict=True)] == [1, 1, 0, 0, 0]
    link.deliver(_ack(4))  # older than the newest acknowledged: nothing changes
    assert link.sent_ticks() == [6, 8, 10] and link.acked == 6
    link.deliver(_ack(10))
    assert link.sent_ticks() == [10]
    link.send_view(12, {"a": 12}, {}, False, None)
    last = decode(sent[-1])
    assert isinstance(last, Delta) and last.base == 10 and link.sent_ticks() == [10, 12]


def test_a_client_that_acknowledges_nothing_for_the_timeout_is_left_to_the_session(kind: str) -> None:
    link, _, owner, clock = _link(kind, ack_timeout_s=1.0)
    link.send_view(2, {"a": 1}, {}, False, None)
    link.deliver(_ack(0))
    assert owner.calls == []
    for tick in (4, 6):  # sending goes on, more often than the timeout: the clock runs on
        clock.now += 0.6
        link.send_view(tick, {"a": tick}, {}, False, None)
    link.deliver(_ack(0))
    assert owner.calls == [("acks_stopped", None)]


def test_a_pause_in_sending_restarts_the_ack_clock(kind: str) -> None:
    link, _, owner, clock = _link(kind, ack_timeout_s=1.0)
    link.send_view(2, {"a": 1}, {}, False, None)
    clock.now += 5.0  # nothing sent for longer than the timeout (a paused match)
    link.send_view(4, {"a": 2}, {}, False, None)
    link.deliver(_ack(0))
    assert owner.calls == []


def test_what_the_queue_refuses_goes_to_the_session_word_for_word(kind: str) -> None:
    link, _, owner, _ = _link(kind)
    link.deliver(b'{"t":"in","ack":0,"inputs":[[0,{}]]}')
    link.deliver(b"not json")
    assert [c[0] for c in owner.calls] == ["fail", "fail"]
    assert "positive integer seq" in owner.calls[0][1]


def test_a_closed_link_takes_and_sends_nothing(kind: str) -> None:
    link, sent, _, _ = _link(kind)
    link.closed = True
    link.deliver(_ack(0, [1, {"mx": 1}]))
    assert link.send_view(2, {"a": 1}, {}, False, None) is None
    assert sent == [] and link.bytes_up == 0 and len(link.queue) == 0


def test_a_delta_too_big_for_a_datagram_comes_back_to_the_session(kind: str) -> None:
    link, sent, _, _ = _link(kind)
    big = {"players": {str(i): {"name": f"player-{i:04d}", "x": i, "y": i} for i in range(40)}}
    body = link.send_view(2, big, {}, False, None)
    assert body is not None and len(body) > MAX_DATAGRAM and sent == [] and link.deltas_sent == 0
    link.sent(2, big, len(body))  # the session sent it on the stream: a baseline now
    assert link.sent_ticks() == [2] and link.bytes_down == len(body)


def test_a_packed_delta_names_the_newest_input_applied(kind: str) -> None:
    link, sent, _, _ = _link(kind, packed=True)
    link.deliver(_ack(0, [MAX_SEQ, {"mx": 1}]))  # the largest sequence number a client may use
    link.take(1)
    link.take(2)
    assert link.queue.applied_seq == MAX_SEQ
    link.send_view(3, {"a": 1}, {}, False, None)
    tick, base, seq, _ = split_packed_delta(sent[0])
    assert (tick, base, seq) == (3, 0, MAX_SEQ)


def test_the_fast_sender_carries_what_it_can_and_the_channel_the_rest(kind: str) -> None:
    link, sent, _, _ = _link(kind)
    carried: list[bytes] = []
    open_route = [True]

    def fast(body: bytes) -> bool:
        if open_route[0]:
            carried.append(body)
        return open_route[0]

    link.fast_send = fast
    link.send_view(2, {"a": 1}, {}, False, None)
    open_route[0] = False
    link.send_view(4, {"a": 2}, {}, False, None)
    assert len(carried) == 1 and len(sent) == 1 and link.deltas_sent == 2


_flat_views = st.dictionaries(st.sampled_from("abc"), st.integers(-9, 9))


def _ported(kind: str, keys: FastKeys) -> tuple[Any, list[bytes], Any, Any]:
    """A packed link whose fast sender is the fast path's port: its twin's outbox and route."""
    link, sent, _, _ = _link(kind, packed=True)
    udpbatch = UDPBATCH[kind if kind in UDPBATCH else "pure"]
    outbox = udpbatch.Outbox(lambda: None)
    route = udpbatch.Route(keys, lambda payload: None, lambda: None)
    route.addr, route.active = ("127.0.0.1", 9), True
    link.fast_send = udpbatch.Port(outbox, route)
    return link, sent, outbox, route


@settings(max_examples=60, deadline=None)
@given(steps=st.lists(st.tuples(_flat_views, st.booleans(), st.booleans()), max_size=12))
def test_deltas_through_the_fast_paths_port_are_the_channels_bodies_sealed(steps: list[tuple[Any, bool, bool]]) -> None:
    keys = FastKeys.generate()
    packets = {}
    for kind in KINDS:
        opener = client_ends(keys)[1]  # (each twin's packets are new to it)
        link, sent, outbox, route = _ported(kind, keys)
        plain, bodies, _, _ = _link(kind, packed=True)  # (the same sends, every body to its channel)
        carried: list[Any] = []
        for tick, (view, active, acked) in enumerate(steps, start=1):
            route.active = active
            link.send_view(tick, view, {}, False, None)
            plain.send_view(tick, view, {}, False, None)
            carried.append(outbox.take() if active else sent.pop())
            if acked:
                link.deliver(_ack(tick))
                plain.deliver(_ack(tick))
        assert sent == [] and link.bytes_down == plain.bytes_down and link.deltas_sent == len(steps)
        for was, body in zip(carried, bodies, strict=True):
            assert was == body if isinstance(was, bytes) else [opener.open(p) for p, _ in was] == [(DATA, body)]
        packets[kind] = carried
    assert packets.get("native", packets["pure"]) == packets["pure"]  # (byte for byte: the same keys and sequences)


# ------------------------------------------------------------------ the twins agree

_views = st.dictionaries(
    st.sampled_from(["a", "b", "c"]),
    st.one_of(st.integers(-5, 5), st.dictionaries(st.sampled_from("xy"), st.integers(0, 9))),
    max_size=3,
)
_steps = st.lists(
    st.one_of(
        st.tuples(st.just("send"), _views, st.booleans(), st.one_of(st.none(), st.integers(0, 2**32 - 1))),
        st.tuples(st.just("again"), _views, st.integers(0, 3)),
        st.tuples(st.just("ack"), st.integers(-3, 80), st.lists(st.integers(1, 40), max_size=3)),
        st.tuples(st.just("take"), st.integers(0, 3)),
        st.tuples(st.just("wait"), st.floats(0.0, 3.0)),
        st.tuples(st.just("junk"), st.binary(max_size=40)),
    ),
    max_size=60,
)


def _run(kind: str, packed: bool, steps: list[tuple[Any, ...]]) -> list[Any]:
    link, sent, owner, clock = _link(kind, packed=packed, ack_timeout_s=2.0)
    tick, out = 0, list[Any]()
    for step in steps:
        if step[0] == "send":
            tick += 1 + len(step[1]) % 2  # (sends skip ticks, as phases do)
            body = link.send_view(tick, step[1], {}, step[2], step[3])
            out.append(("body", body))
        elif step[0] == "again":  # a view for a tick already sent, or older (the ring's order holds)
            body = link.send_view(max(1, tick - step[2]), step[1], {}, False, None)
            out.append(("body", body))
        elif step[0] == "ack":
            link.deliver(_ack(step[1], *[[s, {"mx": s}] for s in step[2]]))
        elif step[0] == "take":
            out.append(("taken", link.take(step[1] + tick)))
        elif step[0] == "wait":
            clock.now += step[1]
        else:
            link.deliver(step[1])
        out.append((link.acked, link.acked_at, link.sent_at, link.bytes_up, link.bytes_down, link.deltas_sent))
    return [*out, sent, owner.calls, link.sent_ticks(), link.diffs_encoded]


@pytest.mark.skipif(len(LINK) < 2, reason="the native twin is not built")
@settings(max_examples=300, deadline=None)
@given(steps=_steps, packed=st.booleans())
def test_the_twins_send_the_same_bytes_and_take_the_same_acks(steps: list[tuple[Any, ...]], packed: bool) -> None:
    assert _run("native", packed, steps) == _run("pure", packed, steps)


@pytest.mark.skipif(len(LINK) < 2, reason="the native twin is not built")
@settings(max_examples=100, deadline=None)
@given(views=st.lists(_views, min_size=1, max_size=8), acks=st.lists(st.booleans(), min_size=8, max_size=8))
def test_deltas_from_either_twin_rebuild_the_view(views: list[dict[str, Any]], acks: list[bool]) -> None:
    for kind in KINDS:
        link, sent, _, _ = _link(kind, packed=True)
        shown: dict[int, Any] = {0: {}}
        for i, view in enumerate(views):
            tick = 2 * (i + 1)
            link.send_view(tick, view, {}, False, None)
            frame = decode_datagram(sent[-1])
            assert isinstance(frame, Delta) and sent[-1][:1] == PACKED_DELTA
            shown[tick] = delta.apply(shown[frame.base], frame.diff)
            assert shown[tick] == view
            if acks[i]:
                link.deliver(_ack(tick))


# ------------------------------------------------------------------ a whole match's players in one call


class Player:
    """A player's link, what it sent and its owner (a stand-in for its session)."""

    def __init__(self, kind: str, packed: bool = True) -> None:
        self.link, self.sent, self.owner, self.clock = _link(kind, packed=packed)


def test_every_players_next_input_is_taken_in_one_call_with_who_has_refusals_to_report(kind: str) -> None:
    players = {pid: Player(kind) for pid in (3, 5, 8)}
    links = {pid: player.link for pid, player in players.items()}
    players[3].link.deliver(_ack(0, [1, {"mx": 1}]))
    players[8].link.deliver(_ack(0, [1, {"mx": -1}], [2, {"mx": 0}]))
    assert not players[5].link.refused  # (a new link has none)
    players[5].link.refused["bytes"] = 2
    seqs: dict[int, int] = {}
    inputs: dict[int, Any] = {}
    applied, refused = LINK[kind].take_inputs(links, 9, seqs, inputs)
    assert applied == 2 and seqs == {3: 1, 8: 1} and inputs == {3: {"mx": 1}, 8: {"mx": -1}}
    assert refused == [5]
    players[5].link.refused.clear()
    applied, refused = LINK[kind].take_inputs(links, 10, seqs, inputs)
    assert applied == 1 and seqs == {3: 1, 8: 2} and inputs[8] == {"mx": 0} and refused == []


def test_a_view_goes_to_every_player_who_shares_it_and_the_oversized_come_back(kind: str) -> None:
    players = [Player(kind), Player(kind), Player(kind, packed=False)]
    players[1].link.closed = True
    view = {"players": {str(i): {"name": f"player-{i:04d}", "x": 1000 + i, "y": i} for i in range(40)}}
    cache: dict[Any, bytes] = {}
    oversized = LINK[kind].send_views([p.link for p in players], 2, view, cache, False)
    assert [p.sent for p in players[:2]] == [[players[0].sent[0]], []] and len(players[0].sent[0]) <= MAX_DATAGRAM
    assert len(oversized) == 1 and oversized[0][0] is players[2].link and len(oversized[0][1]) > MAX_DATAGRAM
    assert players[2].link.owner is players[2].owner  # (whom the match gives it to)
    assert players[0].link.diffs_encoded + players[2].link.diffs_encoded == 1  # one diff, for all


@pytest.mark.skipif(len(LINK) < 2, reason="the native twin is not built")
@settings(max_examples=100, deadline=None)
@given(
    inputs=st.lists(st.tuples(st.integers(0, 3), st.lists(st.integers(1, 30), max_size=3)), max_size=20),
    ticks=st.lists(st.integers(1, 3), min_size=1, max_size=10),
)
def test_the_twins_take_the_same_inputs_for_a_whole_match(
    inputs: list[tuple[int, list[int]]], ticks: list[int]
) -> None:
    results = []
    for kind in KINDS:
        links = {pid: Player(kind).link for pid in range(4)}
        for pid, seqs in inputs:
            links[pid].deliver(_ack(0, *[[s, {"mx": s % 3 - 1}] for s in seqs]))
        out, tick = [], 0
        for step in ticks:
            tick += step
            got: tuple[dict[int, int], dict[int, Any]] = ({}, {})
            out.append((LINK[kind].take_inputs(links, tick, *got)[0], got))
        results.append(out)
    assert results[0] == results[1]
