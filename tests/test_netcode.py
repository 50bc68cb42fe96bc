"""Netcode on a bad network: a seeded impairment proxy between real bots and a real server,
plus the sans-I/O pieces (jitter buffer, prediction, interpolation, interest, encode-once)."""

from __future__ import annotations

import asyncio
import gc
import itertools
import socket
from typing import Any

import orjson
import pytest

from tests.support import MatchStandIn, RecordingChannel, session_in_match, until
from tickline.bots.client import ClientError, ClientOptions, GameClient
from tickline.bots.impair import Impairment, ImpairmentProxy
from tickline.bots.swarm import run_swarm
from tickline.bots.world import ClientWorld, SharedViews
from tickline.replays.reader import LogReader
from tickline.replays.verify import verify_match
from tickline.server import session as session_module
from tickline.server.intake import DRAIN_WINDOW_TICKS, JITTER_TICKS
from tickline.server.session import Session
from tickline.shared import delta, native
from tickline.shared.arena import Arena
from tickline.shared.game import GameEvent, TickInputs
from tickline.shared.games import make_rules
from tickline.shared.logformat import decode_payload
from tickline.shared.protocol import (
    DEFLATE,
    MAX_DATAGRAM,
    PACKED_DELTA,
    PROTOCOL_VERSION,
    Delta,
    Hello,
    Input,
    MalformedFrame,
    decode,
    decode_datagram,
    encode,
    encode_stream,
    pack_diff,
    split_packed_input,
)

BAD_NETWORK = Impairment(latency_ms=50, jitter_ms=10, loss=0.05, duplicate=0.01, reorder=0.01, seed=7)


async def _through_proxy(server_port: int, impairment: Impairment = BAD_NETWORK) -> tuple[ImpairmentProxy, int]:
    proxy = ImpairmentProxy(impairment)
    port = await proxy.start(("127.0.0.1", 0), ("127.0.0.1", server_port))
    return proxy, port


async def _applied_seqs(db_url: str, match_id: str) -> dict[int, list[int]]:
    seqs: dict[int, list[int]] = {}
    async with await LogReader.open(db_url) as reader:
        async for stored in reader.ticks(match_id):
            for item in decode_payload(stored.payload)[0].get("i", ()):
                if len(item) > 2:
                    seqs.setdefault(item[0], []).append(item[2])
    return seqs


@pytest.mark.slow
async def test_bots_play_on_at_100ms_rtt_and_5pct_loss_and_every_input_applies_once_in_order(start_server) -> None:
    srv = await start_server(game_config={"time_limit_s": 5})
    proxy, port = await _through_proxy(srv.port)
    try:
        report = await run_swarm("127.0.0.1", port, 4, duration=30, cafile=srv.cert, details=True)
    finally:
        proxy.close()
    await srv.stop()
    assert report["connected"] == 4 and report["errors"] == 0, report
    assert report["closed_by_server"] == {"match over": 4}, report
    assert 0 < report["deltas_per_s_per_bot"] <= 31  # at the 30 Hz send rate (+1: the last tick goes to all)
    assert proxy.stats.up.dropped > 0 and proxy.stats.down.dropped > 0  # the loss was real
    [match_id] = report["match_ids"]
    seqs = await _applied_seqs(srv.db_url, match_id)
    assert len(seqs) == 4
    for player, applied in seqs.items():
        assert all(b > a for a, b in itertools.pairwise(applied)), (
            f"player {player}: an input applied twice or out of order"
        )
        # Despite the loss, nearly every input the bot made was applied (each datagram repeats the
        # unconfirmed ones); what was not: the last ones in flight at the end, and merges by the
        # jitter buffer. (Counted against what this bot sent, so that a slow machine, which makes
        # bots send fewer, changes nothing.)
        sent = next(bot["inputs_sent"] for bot in report["per_bot"] if bot["player_id"] == player)
        assert sent > 0 and len(applied) >= 0.75 * sent, (player, len(applied), sent)
    async with await LogReader.open(srv.db_url) as reader:
        result = await verify_match(reader, match_id)
    assert result.verified, result.reason


@pytest.mark.slow
async def test_prediction_is_right_and_converges_once_input_stops(start_server) -> None:
    srv = await start_server(game_config={"time_limit_s": 60, "view_radius": 0})
    proxy, port = await _through_proxy(srv.port)
    try:
        async with GameClient.connect("127.0.0.1", port, "runner", cafile=srv.cert) as client:
            loop = asyncio.get_running_loop()
            next_tick = loop.time()

            async def ticks(n: int, controls: dict[str, Any]) -> None:
                nonlocal next_tick
                for _ in range(n):
                    next_tick += 1 / 60
                    await asyncio.sleep(max(0.0, next_tick - loop.time()))
                    client.send_input(controls)

            await ticks(30, {})
            await ticks(40, {"mx": 1, "my": 1})
            mine = str(client.player_id)
            predicted = client.world.predicted_self()
            assert predicted is not None
            seen = client.world.view["players"][mine]
            assert predicted["x"] > seen["x"]  # prediction runs ahead of the server's echo
            stopped_at = dict(predicted)
            # Input stops: the player lets go of the keys (idle inputs still flow).
            converged = None
            for waited in range(1, 121):  # two seconds of ticks at most
                await ticks(1, {})
                me = client.world.predicted_self()
                assert me is not None
                final = client.world.view["players"][mine]
                if (me["x"], me["y"]) == (final["x"], final["y"]) and final["x"] != seen["x"]:
                    converged = waited
                    break
            assert converged is not None, "prediction never met the server's position"
            assert converged <= 60  # about a round trip plus the jitter buffer
            # The prediction at the moment input stopped was where the server ended up.
            per_tick = 200 * 100 // 60 // 10 + 1  # player speed in view units per tick
            assert abs(stopped_at["x"] - final["x"]) <= 3 * per_tick
            assert abs(stopped_at["y"] - final["y"]) <= 3 * per_tick
    finally:
        proxy.close()


async def test_a_client_that_changes_address_keeps_its_session(start_server) -> None:
    srv = await start_server(game_config={"time_limit_s": 60})
    async with GameClient.connect("127.0.0.1", srv.port, "mover", cafile=srv.cert) as client:
        for _ in range(5):
            await client.wait_update(timeout=2)
            client.send_input({"mx": 1}, flush=True)
        tick = client.world.tick
        await client.rebind()  # a new local port: as a phone moving from Wi-Fi to mobile data
        for _ in range(10):
            assert await client.wait_update(timeout=2), client.close_reason
            client.send_input({"mx": 1}, flush=True)
        assert client.world.tick > tick and not client.closed.is_set()
        assert len(srv.server.matches[0].sessions) == 1


async def test_a_connect_that_times_out_says_so_and_leaves_no_failed_future_behind() -> None:
    """aioquic shields the handshake's future: a timed-out connect used to leave it to
    fail later, and asyncio logged "Future exception was never retrieved" per client."""
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # a port where nobody answers
    sink.bind(("127.0.0.1", 0))
    seen: list[str] = []
    asyncio.get_running_loop().set_exception_handler(lambda loop, ctx: seen.append(ctx["message"]))
    try:
        with pytest.raises(ClientError, match=r"cannot connect to 127\.0\.0\.1:[0-9]+: timed out"):
            async with GameClient.connect("127.0.0.1", sink.getsockname()[1], "x", timeout=0.3):
                pass
        # By now the connection is closed (the connect's cleanup awaited it) and the
        # handshake's future failed: collecting it is when asyncio would complain.
        gc.collect()
        await asyncio.sleep(0)
    finally:
        sink.close()
    assert seen == []


def test_impairment_is_replayable_from_its_seed() -> None:
    async def run() -> tuple[list[str], object]:
        sent: list[str] = []
        proxy = ImpairmentProxy(BAD_NETWORK)
        for i in range(500):
            proxy.schedule(proxy.stats.up, str(i).encode(), lambda data: sent.append(data.decode()))
        await until(lambda: not proxy.in_flight, timeout=5)
        proxy.close()
        return sent, proxy.stats

    (first, stats1), (second, stats2) = asyncio.run(run()), asyncio.run(run())
    # The same packets are lost and duplicated (their delays too; arrival order
    # between nearly simultaneous packets is the event loop's business).
    assert sorted(first, key=int) == sorted(second, key=int) and stats1 == stats2
    assert 400 < len(first) < 500  # about 5 % lost, 1 % duplicated
    assert first != sorted(first, key=int)  # jitter and reordering happened


# ----------------------------------------------------------------- sans-I/O pieces

INTAKE = native.twins("tickline.server", "intake")
LINK = native.twins("tickline.server", "link")


@pytest.fixture(params=sorted(INTAKE))
def intake(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Any:
    """The session's input queue, budget and link from one twin of each (server/intake.py,
    server/link.py), then from the others."""
    twin = INTAKE[request.param]
    monkeypatch.setattr(session_module, "InputQueue", twin.InputQueue)
    monkeypatch.setattr(session_module, "InputBudget", twin.InputBudget)
    monkeypatch.setattr(session_module, "Link", LINK[request.param].Link)
    return twin


def _session() -> tuple[Session, RecordingChannel, MatchStandIn]:
    return session_in_match()


def _inputs(*seqs: int) -> bytes:
    return encode(Input(ack=0, inputs=[[seq, {"mx": 1 if seq % 2 else -1}] for seq in seqs]))


def test_jitter_buffer_applies_each_input_once_in_order(intake: Any) -> None:
    session, channel, _match = _session()
    session.on_datagram(_inputs(1))
    assert session.take_input(1) is None  # one input waits for a second, or for time to pass
    session.on_datagram(_inputs(1, 2, 3))  # 1 again (redundant copy), then 2 and 3
    session.on_datagram(_inputs(2, 3))  # a duplicate datagram
    taken = [session.take_input(t) for t in range(2, 7)]
    assert [t[0] if t else None for t in taken] == [1, 2, 3, None, None]
    assert session.applied_seq == 3 and session.input_underruns == 1
    assert channel.closed is None


def test_a_lone_input_is_applied_after_the_jitter_delay(intake: Any) -> None:
    session, _, match = _session()
    match.tick = 10
    session.on_datagram(_inputs(1))
    assert session.take_input(11) is None
    taken = session.take_input(10 + JITTER_TICKS)
    assert taken is not None and taken[0] == 1


def test_a_queue_that_stands_while_the_network_is_steady_is_drained_to_none_waiting(intake: Any) -> None:
    """A client that got three inputs ahead keeps them queued at every tick: latency that
    no jitter needs. One input per window is merged away until the queue runs dry at
    some tick, and then it stays as it is."""
    session, _, match = _session()
    session.on_datagram(_inputs(1, 2, 3))
    seq, applied = 3, []
    for tick in range(1, 5 * DRAIN_WINDOW_TICKS):
        match.tick = tick
        seq += 1
        session.on_datagram(_inputs(seq))  # one new input a tick, steady
        taken = session.take_input(tick)
        assert taken is not None
        applied.append(taken[0])
    assert all(b > a for a, b in itertools.pairwise(applied))
    assert session.inputs_merged == 3  # three windows: 3, then 2, then 1 left waiting
    assert len(session.inputs) == 0 and session.input_underruns == 0


def _held_input(seq: int, ticks: int = 2) -> bytes:
    return encode(Input(ack=0, inputs=[[seq, {"mx": 1 if seq % 2 else -1}, ticks]]))


def test_an_input_that_holds_two_ticks_applies_at_the_next_tick_and_is_kept_for_the_second(intake: Any) -> None:
    """A client reading its controls at 30 Hz against 60 Hz ticks: each input is applied
    the tick after it arrives (no jitter wait: it brings two ticks), then kept; the tick
    it is kept for is not the player running dry."""
    session, _, match = _session()
    taken: list[Any] = []
    for tick in range(1, 201):
        match.tick = tick - 1
        if tick % 2:
            session.on_datagram(_held_input(tick // 2 + 1))
        taken.append(session.take_input(tick))
    assert [t[0] for t in taken[::2]] == list(range(1, 101))  # each input at the tick after it came
    assert taken[1::2] == [None] * 100  # ...and kept for the next
    assert session.applied_seq == 100
    assert session.input_underruns == 0 and session.inputs_merged == 0 and session.inputs_dropped == 0


def test_a_late_held_input_is_applied_as_soon_as_it_comes(intake: Any) -> None:
    session, _, match = _session()
    session.on_datagram(_held_input(1))
    first = session.take_input(1)
    assert first is not None and first[0] == 1
    assert session.take_input(2) is None
    assert session.take_input(3) is None  # input 2 is late: the player keeps its controls
    assert session.input_underruns == 1
    match.tick = 3
    session.on_datagram(_held_input(2))
    second = session.take_input(4)
    assert second is not None and second[0] == 2  # two ticks queued at once: no jitter wait


def test_a_newer_input_cuts_short_the_hold_of_the_one_before_so_none_wait(intake: Any) -> None:
    """A client two inputs ahead (four ticks of input queued): each newer input replaces
    what is left of the one before, so the queue does not stand and, after two ticks,
    every input applies the tick it arrives."""
    session, _, match = _session()
    session.on_datagram(encode(Input(ack=0, inputs=[[1, {}, 2], [2, {}, 2]])))
    seq, arrived, applied = 2, {}, {}
    for tick in range(1, 41):
        match.tick = tick
        if tick % 2:
            seq += 1
            arrived[seq] = tick
            session.on_datagram(_held_input(seq))
        taken = session.take_input(tick)
        if taken is not None:
            applied[taken[0]] = tick
    assert list(applied) == list(range(1, seq + 1))  # each once, in order: none merged away
    assert all(applied[s] == arrived[s] for s in range(5, seq + 1))
    assert session.inputs_merged == 0 and session.input_underruns == 0


def test_a_delta_too_big_for_a_datagram_goes_reliably(intake: Any) -> None:
    session, channel, _ = _session()
    session.send_view(1, {"players": {str(i): {"name": f"player-{i:04d}", "x": i, "y": i} for i in range(40)}})
    session.send_view(2, {"small": 1})
    assert len(channel.reliable) == 1 and len(channel.reliable[0]) > MAX_DATAGRAM
    assert isinstance(decode(channel.reliable[0]), Delta)
    assert len(channel.datagrams) == 1


def test_same_view_and_baseline_encode_one_diff_for_all_clients(intake: Any) -> None:
    sessions = [_session()[0] for _ in range(8)]
    view = {"players": {"1": {"x": 1}}}
    cache: dict[Any, bytes] = {}
    for s in sessions:
        s.send_view(2, view, cache)
    assert sum(s.diffs_encoded for s in sessions) == 1
    # One client acks tick 2: its next delta is against another baseline.
    sessions[0].on_datagram(encode(Input(ack=2, inputs=[])))
    view3 = {"players": {"1": {"x": 2}}}
    cache = {}
    for s in sessions:
        s.send_view(4, view3, cache)
    assert sum(s.diffs_encoded for s in sessions) == 3


async def _packed_session() -> tuple[Session, RecordingChannel]:
    session, channel, _ = _session()
    session.on_stream_data(encode_stream(Hello(version=PROTOCOL_VERSION, name="p", caps=[DEFLATE])))
    await session.hello()
    return session, channel


async def test_clients_that_name_deflate_get_packed_deltas_packed_once_per_shared_diff(intake: Any) -> None:
    packed = [await _packed_session() for _ in range(4)]
    plain, plain_channel, _ = _session()
    view = {"players": {str(i): {"name": f"player-{i:04d}", "x": 1000 + i, "y": i} for i in range(40)}}
    cache: dict[Any, bytes] = {}
    for session, _ in packed:
        session.send_view(2, view, cache)
    plain.send_view(2, view, cache)
    bodies = [channel.datagrams[0] for _, channel in packed]
    assert all(body[:1] == PACKED_DELTA for body in bodies) and len(set(bodies)) == 1
    assert decode_datagram(bodies[0]) == Delta(tick=2, base=0, seq=0, diff=delta.diff({}, view))
    assert sum(1 for key in cache if DEFLATE in key) == 1  # packed once, for all four
    # The same delta in JSON is too big for a datagram: the plain client gets it on the stream.
    assert not plain_channel.datagrams and len(plain_channel.reliable[0]) > MAX_DATAGRAM


def test_world_reconciles_by_replaying_unconfirmed_inputs() -> None:
    rules = make_rules("arena", {"view_step": 10})
    assert isinstance(rules, Arena)
    world = ClientWorld(rules, player_id=1)
    world.on_delta(
        Delta(tick=2, base=0, seq=0, diff=delta.diff({}, {"players": {"1": {"x": 1000, "y": 1000, "alive": True}}}))
    )
    for _ in range(5):
        world.next_input({"mx": 1, "my": 0})
    predicted = world.predicted_self()
    assert predicted is not None and predicted["x"] == (1000 * 10 + 5 * rules.speed) // 10  # the rules' own walk
    # The server applied inputs 1-3 and says where that put us (a little off: it wins).
    world.on_delta(Delta(tick=4, base=2, seq=3, diff={"u": {"players": {"u": {"1": {"s": {"x": 1090}}}}}}))
    assert world.unconfirmed == 2
    predicted = world.predicted_self()
    assert predicted is not None and predicted["x"] == (1090 * 10 + 2 * rules.speed) // 10


def test_world_sends_how_long_each_input_holds_and_predicts_it_for_as_long() -> None:
    rules = make_rules("arena", {"view_step": 10})
    assert isinstance(rules, Arena)
    world = ClientWorld(rules, player_id=1)
    world.on_delta(
        Delta(tick=2, base=0, seq=0, diff=delta.diff({}, {"players": {"1": {"x": 1000, "y": 1000, "alive": True}}}))
    )
    world.next_input({"mx": 1, "my": 0}, ticks=2)
    world.next_input({"mx": 1, "my": 0})
    assert world.input_frame().inputs == [[1, {"mx": 1, "my": 0}, 2], [2, {"mx": 1, "my": 0}]]
    predicted = world.predicted_self()
    assert predicted is not None and predicted["x"] == (1000 * 10 + 3 * rules.speed) // 10  # three ticks of walking


def test_world_times_every_input_and_once_more_the_input_each_delta_names() -> None:
    world = ClientWorld(make_rules("arena", {}), player_id=1)
    for made_at in (1.0, 1.01, 1.02):
        world.next_input({"mx": 1}, made_at)
    world.on_delta(Delta(tick=1, base=0, seq=2, diff={}), now=1.05)  # names input 2, which superseded 1
    world.on_delta(Delta(tick=2, base=1, seq=2, diff={}), now=1.06)  # names nothing newer
    assert [round(x, 3) for x in world.take_latencies()] == [0.05, 0.04]
    assert [round(x, 3) for x in world.take_ack_latencies()] == [0.04]
    assert world.take_latencies() == [] and world.take_ack_latencies() == []


async def test_bots_reading_controls_at_30hz_get_each_input_applied_once_and_the_replay_verifies(start_server) -> None:
    srv = await start_server(game_config={"time_limit_s": 3})
    report = await run_swarm(
        "127.0.0.1", srv.port, 4, duration=15, cafile=srv.cert, behaviour="wander", options=ClientOptions(input_ticks=2)
    )
    await srv.stop()
    assert report["connected"] == 4 and report["errors"] == 0, report
    [match_id] = report["match_ids"]
    seqs = await _applied_seqs(srv.db_url, match_id)
    assert len(seqs) == 4
    for player, applied in seqs.items():
        assert all(b > a for a, b in itertools.pairwise(applied)), (
            f"player {player}: an input applied twice or out of order"
        )
        assert 30 * 2 < len(applied) <= 30 * 3 + 1  # 30 inputs a second over a 3 s match
    async with await LogReader.open(srv.db_url) as reader:
        result = await verify_match(reader, match_id)
    assert result.verified, result.reason


def test_world_interpolates_others_between_snapshots() -> None:
    world = ClientWorld(player_id=1, tick_rate=60, interp_ticks=6)
    world.on_delta(Delta(tick=10, base=0, seq=0, diff={"s": {"players": {"2": {"x": 0, "y": 0}}}}), now=0.0)
    world.on_delta(Delta(tick=12, base=10, seq=0, diff={"u": {"players": {"u": {"2": {"s": {"x": 100}}}}}}), now=2 / 60)
    # At now = 2/60 + 5/60 the server is at tick 17; we draw tick 11, halfway.
    assert world.interpolated("players", 7 / 60)["2"]["x"] == pytest.approx(50)
    assert world.render_tick(7 / 60) == pytest.approx(11)


def test_world_ignores_stale_duplicate_and_unknown_base_deltas() -> None:
    world = ClientWorld()
    assert world.on_delta(Delta(tick=5, base=0, seq=0, diff={"s": {"a": 1}}))
    assert not world.on_delta(Delta(tick=5, base=0, seq=0, diff={"s": {"a": 1}}))
    assert not world.on_delta(Delta(tick=4, base=0, seq=0, diff={"s": {"a": 0}}))
    assert not world.on_delta(Delta(tick=9, base=7, seq=0, diff={"s": {"a": 2}}))
    assert (world.deltas_stale, world.deltas_unusable, world.view) == (2, 1, {"a": 1})


def test_world_acks_the_newest_tick_it_holds_on_the_welcomes_grid_unless_that_lags() -> None:
    world = ClientWorld()
    world.ack_every = 2
    world.on_delta(Delta(tick=4, base=0, seq=0, diff={"s": {"a": 1}}))
    world.on_delta(Delta(tick=5, base=4, seq=0, diff={}))
    assert world.tick == 5 and world.ack == 4  # (the tick the room's other players ack too)
    assert world.input_frame().ack == 4 and split_packed_input(world.packed_input())[0] == 4
    world.on_delta(Delta(tick=6, base=4, seq=0, diff={}))
    assert world.ack == 6
    world.on_delta(Delta(tick=11, base=6, seq=0, diff={}))
    assert world.ack == 11  # 6, the grid's newest held, lags by more than two steps: the newest
    world.ack_every = 0
    world.on_delta(Delta(tick=13, base=11, seq=0, diff={}))
    assert world.ack == 13


async def test_players_sent_every_tick_ack_on_a_grid_of_two_ticks(start_server) -> None:
    """Inputs (and their acks) at half the tick rate would ack ticks of both parities, and a
    room's diffs split between two baselines; on the grid the players ack the same ticks."""
    srv = await start_server(game_config={"time_limit_s": 60, "view_radius": 0}, tick_rate=60, send_rate=60)
    async with (
        GameClient.connect("127.0.0.1", srv.port, "first", cafile=srv.cert) as first,
        GameClient.connect("127.0.0.1", srv.port, "second", cafile=srv.cert) as second,
    ):
        assert first.welcome is not None and first.welcome.ack_every == 2 and first.world.ack_every == 2
        for _ in range(20):
            for client in (first, second):
                assert await client.wait_update(timeout=2), client.close_reason
                client.send_input({"mx": 1}, flush=True)
        links = [session.link for session in srv.server.matches[0].sessions.values()]
        await until(lambda: all(link.acked >= 20 for link in links), timeout=5)
        assert all(link.acked % 2 == 0 for link in links), [link.acked for link in links]
    await srv.stop()
    # Sent less often than every tick, the sent ticks are what players ack: no grid.
    slower = await start_server(game_config={"time_limit_s": 60}, tick_rate=60, send_rate=30)
    async with GameClient.connect("127.0.0.1", slower.port, "third", cafile=slower.cert) as third:
        assert third.welcome is not None and third.welcome.ack_every == 0


def _packed(diff: dict[str, Any]) -> bytes:
    return pack_diff(orjson.dumps(diff))


def test_bots_sharing_views_unpack_and_apply_a_shared_delta_once() -> None:
    views = SharedViews()
    worlds = [ClientWorld(shared=views) for _ in range(3)]
    full = _packed(delta.diff({}, {"players": {"1": {"x": 1}, "2": {"x": 5}}}))
    step = _packed({"u": {"players": {"u": {"1": {"n": {"x": 2}}}}}})
    for seq, world in enumerate(worlds, 1):
        assert world.on_packed_delta(3, 0, seq, full)
        assert world.on_packed_delta(6, 3, seq, step)
    assert (views.misses, views.hits) == (2, 4)
    assert worlds[0].view is worlds[1].view is worlds[2].view
    assert worlds[0].view == {"players": {"1": {"x": 3}, "2": {"x": 5}}}
    assert [w.server_seq for w in worlds] == [1, 2, 3]  # the header is each bot's own


def test_shared_views_never_lend_a_view_made_from_another_base() -> None:
    views = SharedViews()
    a, b = ClientWorld(shared=views), ClientWorld(shared=views)
    a.on_packed_delta(3, 0, 0, _packed({"s": {"x": 1}}))
    b.on_packed_delta(3, 0, 0, _packed({"s": {"x": 10}}))
    step = _packed({"n": {"x": 1}})  # the same bytes against bases with other contents
    a.on_packed_delta(4, 3, 0, step)
    b.on_packed_delta(4, 3, 0, step)
    assert (a.view, b.view) == ({"x": 2}, {"x": 11})


def test_a_packed_delta_is_unpacked_only_when_it_applies() -> None:
    world = ClientWorld()
    assert world.on_packed_delta(5, 0, 0, _packed({"s": {"a": 1}}))
    assert not world.on_packed_delta(5, 0, 0, b"not deflate")  # stale: never unpacked
    assert not world.on_packed_delta(9, 7, 0, b"not deflate")  # unknown base: never unpacked
    with pytest.raises(MalformedFrame):
        world.on_packed_delta(6, 5, 0, b"not deflate")
    assert world.view == {"a": 1}


def test_interest_shows_only_what_is_near_and_spawns_what_comes_into_view() -> None:
    rules = make_rules("arena", {"view_radius": 200})
    state = rules.initial_state(1)
    rules.step(state, TickInputs(joins=[(1, "a"), (2, "b")]))
    state["players"][1].update(x=10_000, y=10_000)
    state["players"][2].update(x=60_000, y=10_000)  # 500 units away
    rules.step(state, TickInputs())  # nobody moves; views show the state as step leaves it
    far = rules.view(state, 1)
    assert set(far["players"]) == {"1"}
    state["players"][2]["x"] = 25_000  # 150 units away
    rules.step(state, TickInputs())
    near = rules.view(state, 1)
    assert set(near["players"]) == {"1", "2"}
    change = delta.diff(far, near)
    assert "2" in change["u"]["players"]["s"]  # a spawn, in full
    assert delta.diff(near, far)["u"]["players"]["r"] == ["2"]  # a despawn


def _hitscan_duel(vt_back: int) -> list[GameEvent]:
    """A shooter fires once, 60 ticks after its target started running away; returns that tick's events."""
    rules = make_rules("arena", {"weapon": "hitscan", "hitscan_range": 150, "lag_comp_ms": 1000})
    state = rules.initial_state(3)
    rules.step(state, TickInputs(joins=[(1, "shooter"), (2, "target")]))
    state["players"][1].update(x=20_000, y=50_000)
    state["players"][2].update(x=22_000, y=50_000)  # 20 units to the right
    rules.step(state, TickInputs(inputs={2: rules.validate_input({"mx": 1})}))
    for _ in range(59):
        rules.step(state, TickInputs())
    tick = state["tick"] + 1
    fire = rules.validate_input({"fire": True, "vt": max(0, tick - vt_back)})
    return rules.step(state, TickInputs(inputs={1: fire}))


def test_lag_compensation_judges_a_hitscan_shot_where_the_shooter_saw_the_target() -> None:
    # Now the target is ~220 units away, out of range; 30 ticks ago it was ~120 away.
    assert [e["k"] for e in _hitscan_duel(vt_back=0)] == ["fire"]
    seen_earlier = _hitscan_duel(vt_back=30)
    assert [e["k"] for e in seen_earlier] == ["fire", "hit"] and seen_earlier[0]["rewind"] == 30


def test_lag_compensation_rewinds_no_further_than_its_cap() -> None:
    events = _hitscan_duel(vt_back=500)
    assert events[0]["rewind"] == 60  # lag_comp_ms 1000 at 60 Hz


def test_full_snapshot_mode_ignores_acknowledgements(intake: Any) -> None:
    session, channel, _ = _session()
    session.send_view(2, {"a": 1})
    session.on_datagram(encode(Input(ack=2, inputs=[])))
    session.send_view(4, {"a": 2})
    session.send_view(6, {"a": 3}, full=True)
    frames: list[Delta] = []
    for body in channel.datagrams:
        frame = decode(body)
        assert isinstance(frame, Delta)
        frames.append(frame)
    assert [(f.base, f.diff) for f in frames] == [(0, {"s": {"a": 1}}), (2, {"n": {"a": 1}}), (0, {"s": {"a": 3}})]


async def test_a_dropped_player_comes_back_within_the_grace_window_as_itself(start_server) -> None:
    srv = await start_server(game_config={"time_limit_s": 60})
    async with GameClient.connect("127.0.0.1", srv.port, "phoenix", cafile=srv.cert) as first:
        await first.wait_update(timeout=2)
        token, player = first.token, first.player_id
        first.abandon()  # no goodbye: as a crash or a dead network would
    match = srv.server.matches[0]
    await until(lambda: match.live_figures()["away"] == 1, timeout=5)
    async with GameClient.connect("127.0.0.1", srv.port, "phoenix", cafile=srv.cert, token=token) as again:
        assert again.player_id == player and again.match_id == match.match_id
        assert await again.wait_update(timeout=2)
        assert str(player) in again.world.view["players"]
    await srv.stop()
    async with await LogReader.open(srv.db_url) as reader:
        kinds = [e["k"] async for t in reader.ticks(match.match_id) for e in decode_payload(t.payload)[1]]
    assert kinds.count("join") == 1  # the same player all along


async def test_a_dropped_player_leaves_when_its_grace_window_ends(start_server) -> None:
    srv = await start_server(game_config={"time_limit_s": 60})
    async with GameClient.connect("127.0.0.1", srv.port, "stayer", cafile=srv.cert) as stayer:
        match = srv.server.matches[0]
        match.settings.grace_s = 0.5  # (--grace 0.5)
        async with GameClient.connect("127.0.0.1", srv.port, "leaver", cafile=srv.cert) as leaver:
            await leaver.wait_update(timeout=2)
            token, player = leaver.token, leaver.player_id
            leaver.abandon()
        async with asyncio.timeout(5):
            while str(player) in stayer.world.view.get("players", {}) or player in match._away:
                await stayer.wait_update(timeout=1)
        # Too late: the token no longer gets the player back.
        with pytest.raises(ClientError, match="unknown or expired reconnect token"):
            async with GameClient.connect("127.0.0.1", srv.port, "leaver", cafile=srv.cert, token=token):
                pass


def test_only_one_oversized_state_frame_waits_on_the_stream_at_a_time(intake: Any) -> None:
    session, channel, _ = _session()
    big = {"players": {str(i): {"name": f"player-{i:04d}", "x": i, "y": i} for i in range(40)}}
    session.send_view(2, big)
    session.send_view(4, {**big, "t": 4})  # the client has not acked tick 2: skipped, not queued
    assert len(channel.reliable) == 1 and session.sends_skipped == 1
    session.on_datagram(encode(Input(ack=2, inputs=[])))
    session.send_view(6, {**big, "t": 6})  # small now: a delta against tick 2
    session.send_view(8, {"players": {}})
    assert len(channel.reliable) == 1 and len(channel.datagrams) == 2


async def _ticks_seen(srv, updates: int = 20) -> tuple[dict[str, set[int]], list[GameClient]]:
    """Two players play ``updates`` updates each; the ticks each was shown."""
    async with (
        GameClient.connect("127.0.0.1", srv.port, "first", cafile=srv.cert) as first,
        GameClient.connect("127.0.0.1", srv.port, "second", cafile=srv.cert) as second,
    ):
        seen: dict[str, set[int]] = {"first": set(), "second": set()}
        for _ in range(updates):
            for client in (first, second):
                assert await client.wait_update(timeout=2), client.close_reason
                seen[client.name].add(client.world.tick)
                client.send_input({"mx": 1}, flush=True)
    await srv.stop()
    return seen, [first, second]


async def test_sends_are_spread_over_ticks_and_each_player_still_gets_the_send_rate(start_server) -> None:
    srv = await start_server(game_config={"time_limit_s": 60}, tick_rate=60, send_rate=30)
    seen, (first, second) = await _ticks_seen(srv)
    # Player 1 is sent the odd ticks and player 2 the even ones: no tick sends to both.
    assert first.player_id == 1 and second.player_id == 2
    assert {t % 2 for t in seen["first"]} == {1} and {t % 2 for t in seen["second"]} == {0}
    assert first.stats.deltas_applied >= 19 and second.stats.deltas_applied >= 19


async def test_players_who_share_one_view_are_sent_it_on_the_same_ticks(start_server) -> None:
    srv = await start_server(game_config={"time_limit_s": 60, "view_radius": 0}, tick_rate=60, send_rate=30)
    seen, _ = await _ticks_seen(srv)
    # Both on one phase: one view a send tick for everyone (and one diff where
    # baselines match), where players with views of their own alternate.
    assert len({t % 2 for t in seen["first"] | seen["second"]}) == 1
