"""Input admission: what one client may send, what happens past it, and where the refusals show.

A client over its datagram budget is slowed (the excess refused), then closed once it keeps
on; each refusal is counted in /metrics and written to the match's log with its reason, where
a replay shows it and verification ignores it. Sequence numbers are bounded, a client that
takes none of its views is closed, and connections are capped per address.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import aiohttp
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.conftest import RunningServer
from tests.rawclient import raw_client
from tests.support import RecordingChannel, session_in_match, until
from tickline.bots.client import ClientError, GameClient
from tickline.replays.reader import LogReader
from tickline.replays.replay import REFUSED, open_replay
from tickline.replays.verify import verify_match
from tickline.server.app import ConfigurationError, ServerConfig
from tickline.server.gate import GateSettings
from tickline.server.intake import MAX_SEQ, MAX_SEQ_JUMP
from tickline.server.ratelimit import InputLimits
from tickline.server.session import Departure, Session
from tickline.shared import native
from tickline.shared.game import TickInputs
from tickline.shared.protocol import MAX_CLIENT_FRAME, PROTOCOL_VERSION, Hello, Input, Welcome, encode, encode_stream

# ---------------------------------------------------------------------- the budget, sans-I/O

# (the budget is part of every datagram's intake: native where built, and tested on both twins)
INTAKE = native.twins("tickline.server", "intake")


@pytest.fixture(scope="module", params=sorted(INTAKE))
def budget_twin(request: pytest.FixtureRequest) -> Any:
    """The InputBudget class of one twin, then the other."""
    return INTAKE[request.param].InputBudget


LIMITS = InputLimits(messages_per_s=10, bytes_per_s=10_000, burst_s=2)


@settings(max_examples=200, deadline=None)
@given(gaps=st.lists(st.floats(min_value=0.1, max_value=5), min_size=1, max_size=200))
def test_a_client_within_its_rate_is_never_refused(budget_twin: Any, gaps: list[float]) -> None:
    budget, now = budget_twin(LIMITS, 0.0), 0.0
    for gap in gaps:
        now += gap
        assert budget.take(100, now) == ""
    assert not budget.exhausted


@settings(max_examples=200, deadline=None)
@given(gaps=st.lists(st.floats(min_value=0, max_value=0.5), min_size=1, max_size=400))
def test_no_window_admits_more_than_the_burst_plus_the_rate(budget_twin: Any, gaps: list[float]) -> None:
    budget, now, admitted = budget_twin(LIMITS, 0.0), 0.0, []
    for gap in gaps:
        now += gap
        if budget.take(10, now) == "":
            admitted.append(now)
    for i, start in enumerate(admitted):  # any window [start, end] of the admitted times
        for j in range(i, len(admitted)):
            span = admitted[j] - start
            assert j - i + 1 <= LIMITS.messages_per_s * (LIMITS.burst_s + span) + 1e-6


def test_a_client_a_little_over_its_rate_is_slowed_but_never_closed(budget_twin: Any) -> None:
    budget, refused = budget_twin(LIMITS, 0.0), 0
    for i in range(1, 1500 + 1):  # 15 a second for 100 s, against 10 a second
        refused += budget.take(100, i / 15) != ""
    assert 400 < refused < 600  # about a third: the rate is held
    assert budget.exhausted == ""


def test_a_flood_is_closed_once_its_refusals_pass_a_whole_burst(budget_twin: Any) -> None:
    budget = budget_twin(LIMITS, 0.0)
    results = [budget.take(10, 0.0) for _ in range(41)]
    assert results[:20] == [""] * 20  # the burst: two seconds' worth
    assert set(results[20:]) == {"messages"}
    assert budget.exhausted == "sent more than 10 datagrams a second for too long"
    assert budget_twin(LIMITS, 0.0).exhausted == ""
    budget = budget_twin(LIMITS, 0.0)
    [budget.take(10, 0.0) for _ in range(40)]
    assert budget.exhausted == ""  # 20 refused: the debt is a burst, not past it


def test_bytes_are_budgeted_as_well_as_messages(budget_twin: Any) -> None:
    budget = budget_twin(LIMITS, 0.0)
    assert budget.take(1200, 0.0) == ""
    taken = [budget.take(1200, 0.0) for _ in range(40)]
    assert taken.count("") == 15  # 20,000 bytes of burst: 16 datagrams of 1200, then "bytes"
    assert "bytes" in taken and budget.exhausted == "sent more than 10000 bytes of datagrams a second for too long"


@pytest.mark.parametrize(
    ("limits", "words"),
    [
        (InputLimits(messages_per_s=0), "--input-messages-per-s"),
        (InputLimits(bytes_per_s=100), "--input-bytes-per-s"),
        (InputLimits(burst_s=0), "--input-burst 0 is out of range"),
    ],
)
def test_bad_limits_are_refused_with_the_flag_to_fix(limits: InputLimits, words: str) -> None:
    with pytest.raises(ValueError, match=words):
        limits.validate()


@pytest.mark.parametrize(
    ("options", "words"),
    [
        ({"inputs": InputLimits(burst_s=0)}, "--input-burst 0 is out of range"),
        ({"ack_timeout": 0.1}, "--ack-timeout 0.1 is out of range; use 1 to 600 seconds"),
        ({"hello_timeout": 0}, "--hello-timeout 0 is out of range"),
        ({"receive_window": 1000}, "--receive-window 1000 is out of range; use 16384 to 67108864 bytes"),
        ({"gate": GateSettings(max_connections_per_address=0)}, "--max-connections-per-address must be at least 1"),
    ],
)
def test_a_bad_limit_stops_the_server_before_it_starts_with_the_flag_to_fix(
    tmp_path, options: dict[str, object], words: str
) -> None:
    with pytest.raises(ConfigurationError, match=words):
        ServerConfig(data_dir=tmp_path, **options).validate()  # type: ignore[arg-type]


# ---------------------------------------------------------------------- a session, on a clock of ours


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _session(limits: InputLimits = LIMITS, ack_timeout_s: float = 15.0) -> tuple[Session, RecordingChannel, _Clock]:
    clock = _Clock()
    session, channel, _ = session_in_match(clock=clock, limits=limits, ack_timeout_s=ack_timeout_s)
    return session, channel, clock


def _input(seq: int, ack: int = 0) -> bytes:
    return encode(Input(ack=ack, inputs=[[seq, {"mx": 1}]]))


def test_a_session_refuses_datagrams_over_its_budget_then_kicks_the_flood(caplog) -> None:
    session, channel, clock = _session()
    for seq in range(1, 21):
        session.on_datagram(_input(seq))
    assert not session.refused and channel.closed is None
    session.on_datagram(_input(21))
    assert session.refused == {"messages": 1} and channel.closed is None  # slowed: refused, still open
    clock.now += 0.5  # five datagrams' worth comes back
    for seq in range(22, 27):
        session.on_datagram(_input(seq))
    assert session.refused == {"messages": 1}
    for seq in range(27, 60):
        session.on_datagram(_input(seq))
    reason = "sent more than 10 datagrams a second for too long"
    assert channel.closed == reason and session.departure is Departure.KICKED
    assert session.refused == {"messages": 1 + 21, f"kicked: {reason}": 1}  # the debt drained, then passed 20
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == [
        f"closing test (player 1): {reason}"
    ]


def test_an_input_sequence_number_may_not_jump_far_ahead() -> None:
    session, channel, _ = _session()
    session.on_datagram(_input(7))  # a client that comes back keeps its numbering
    session.on_datagram(_input(7 + MAX_SEQ_JUMP))
    assert channel.closed is None
    session.on_datagram(_input(8 + 2 * MAX_SEQ_JUMP))
    assert channel.closed == f"input seq {8 + 2 * MAX_SEQ_JUMP} jumps more than {MAX_SEQ_JUMP} past the last one " + (
        f"({7 + MAX_SEQ_JUMP})"
    )
    session, channel, _ = _session()
    session.on_datagram(_input(MAX_SEQ + 1))
    assert channel.closed == f"input seq {MAX_SEQ + 1} is over {MAX_SEQ}"


def test_a_client_that_sends_but_acknowledges_no_view_is_closed_as_lost() -> None:
    session, channel, clock = _session(limits=InputLimits(), ack_timeout_s=5)
    seq = 0

    def one_tick(ack: bool) -> None:
        nonlocal seq
        clock.now += 0.1
        session.match.tick += 1  # type: ignore[union-attr]
        session.send_view(session.match.tick, {"t": session.match.tick})  # type: ignore[union-attr]
        seq += 1
        session.on_datagram(_input(seq, ack=session.match.tick if ack else 0))  # type: ignore[union-attr]

    for _ in range(100):  # ten seconds, acking: fine
        one_tick(ack=True)
    clock.now += 60  # a pause in sending (the match waited for its log): the clock starts again
    for _ in range(50):  # five seconds without an ack: still within the timeout
        one_tick(ack=False)
    assert channel.closed is None
    one_tick(ack=False)
    one_tick(ack=False)
    assert channel.closed == "acknowledged none of the views sent for 5 s"
    assert session.departure is Departure.LOST  # it may come back within the grace period


def test_a_hello_larger_than_a_client_frame_is_refused_before_it_is_buffered() -> None:
    session, channel, _ = _session()
    big = encode_stream(Hello(version=PROTOCOL_VERSION, name="x", token="t" * MAX_CLIENT_FRAME))
    session.on_stream_data(big[:4])
    assert channel.closed is not None and "exceeds the 4096-byte cap" in channel.closed


def test_refusals_travel_in_the_tick_record_and_back() -> None:
    inputs = TickInputs(refused={3: {"messages": 40, "kicked: sent too much": 1}, 1: {"buffer": 2}})
    record = inputs.to_record()
    assert record == {"x": [[1, "buffer", 2], [3, "kicked: sent too much", 1], [3, "messages", 40]]}
    assert TickInputs.from_record(record).refused == inputs.refused
    assert TickInputs.from_record({}).refused == {}


# ---------------------------------------------------------------------- a real server


async def _metrics(port: int) -> dict[str, float]:
    async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{port}/metrics") as response:
        text = await response.text()
    return {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("tickline_inputs_refused_total")
    }


async def test_a_flooding_client_is_slowed_then_closed_and_the_replay_shows_why(start_server, caplog) -> None:
    srv = await start_server(game_config={"time_limit_s": 60}, metrics_port=0, inputs=LIMITS)
    async with GameClient.connect("127.0.0.1", srv.port, "bystander", cafile=srv.cert) as good:
        async with raw_client(srv.port) as bad:
            bad.send_stream(encode_stream(Hello(version=PROTOCOL_VERSION, name="flood")))
            welcome = await bad.next_frame()
            assert isinstance(welcome, Welcome) and welcome.player_id == 2
            for seq in range(1, 201):  # valid inputs, far faster than 10 a second
                bad.send_datagram(_input(seq))
            reason = await bad.closed_reason()
        assert reason == "sent more than 10 datagrams a second for too long"
        tick = good.world.tick
        for _ in range(10):  # the match plays on for the others
            assert await good.wait_update(timeout=2), good.close_reason
            good.send_input({"mx": 1, "my": 0, "ax": 1, "ay": 0, "fire": False})
        assert good.world.tick > tick
        match_id = good.match_id
        counted = await _metrics(srv.server.metrics_port)
        assert counted['tickline_inputs_refused_total{reason="messages"}'] >= 20
        assert counted['tickline_inputs_refused_total{reason="kicked"}'] == 1
    await srv.stop()
    warnings = [r.getMessage() for r in caplog.records if r.name == "tickline.server.session"]
    assert len(warnings) == 1 and reason in warnings[0]

    async with await LogReader.open(srv.db_url) as reader:
        result = await verify_match(reader, match_id)
    assert result.verified, result.reason  # refusals are in the log, and change no hash
    replay = await open_replay(match_id, srv.db_url)
    logged: dict[str, int] = {}
    for tick in range(1, replay.ticks + 1):
        for why, count in replay.inputs(tick).refused.get(2, {}).items():
            logged[why] = logged.get(why, 0) + count
    assert logged["messages"] >= 20 and logged[f"kicked: {reason}"] == 1
    marks = [m.event for m in replay.summary.marks if m.event["k"] == REFUSED]
    assert {(e["p"], e["why"]) for e in marks} == {(2, "messages"), (2, f"kicked: {reason}")}
    assert sum(e["n"] for e in marks if e["why"] == "messages") == logged["messages"]


@pytest.mark.slow
async def test_connections_from_one_address_are_capped(start_server) -> None:
    srv = await start_server(
        game_config={"time_limit_s": 60}, metrics_port=0, gate=GateSettings(max_connections_per_address=2)
    )
    async with (
        GameClient.connect("127.0.0.1", srv.port, "one", cafile=srv.cert),
        GameClient.connect("127.0.0.1", srv.port, "two", cafile=srv.cert),
    ):
        with pytest.raises((ClientError, TimeoutError, ConnectionError)):
            await _connect(srv, "three", timeout=3)
        assert srv.server.gate.refused["connections_per_address"] >= 1
        # The WebSocket fallback counts against the same cap.
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"http://127.0.0.1:{srv.server.metrics_port}/ws", headers=_UPGRADE) as response,
        ):
            assert response.status == 503
            assert "connections per address" in await response.text()
    # Both gone: the places are free again.
    await until(lambda: srv.server.gate.connections.open_total == 0, timeout=10)
    assert await _connect(srv, "three", timeout=10)


async def _connect(srv: RunningServer, name: str, timeout: float) -> bool:
    """Whether ``name`` gets in and is sent a view within ``timeout``."""
    async with asyncio.timeout(timeout), GameClient.connect("127.0.0.1", srv.port, name, cafile=srv.cert) as client:
        return await client.wait_update(timeout=timeout)


_UPGRADE = {
    "Connection": "Upgrade",
    "Upgrade": "websocket",
    "Sec-WebSocket-Version": "13",
    "Sec-WebSocket-Key": "x" * 22 + "==",
}
