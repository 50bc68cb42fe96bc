"""Health and metrics over HTTP: what an operator (or Prometheus) sees from outside."""

from __future__ import annotations

import asyncio
import json
from typing import Any, cast

import aiohttp
from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import event

from tests.support import until
from tickline.bots.client import GameClient
from tickline.server.http import TICK_BUCKETS, Metrics
from tickline.shared import native


async def _get(port: int, path: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{port}{path}") as response:
        return response.status, await response.text()


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


async def test_metrics_show_ticks_players_the_event_log_lag_and_gc_pauses(start_server) -> None:
    srv = await start_server(game_config={"time_limit_s": 60}, metrics_port=0)
    port = srv.server.metrics_port
    async with GameClient.connect("127.0.0.1", srv.port, "seen", cafile=srv.cert) as client:
        for _ in range(20):
            await client.wait_update(timeout=2)
            client.send_input({"mx": 1, "my": 0})
        status, text = await _get(port, "/metrics")
        match = (("match", client.match_id),)
    assert status == 200
    samples = _samples(text)
    assert samples[("tickline_players", match)] == 1
    assert samples[("tickline_ticks_total", match)] > 30
    assert samples[("tickline_inputs_applied_total", match)] > 5
    assert samples[("tickline_tick_lateness_seconds_count", match)] > 30
    assert ("tickline_eventlog_lag_ticks", match) in samples
    assert samples[("tickline_eventlog_rows_total", ())] > 0
    assert samples[("tickline_eventlog_failing", ())] == 0
    assert samples[("process_cpu_seconds_total", ())] > 0
    # 20 updates at 30 Hz take longer than 20 ms: the server's own collector has run.
    assert samples[("tickline_gc_pause_seconds_count", (("generation", "0"),))] > 0
    assert srv.server.gc_pacer.nudged > 0  # and ticks carried collections that were nearly due
    # Whether the deltas went out of native code or its twin, as this process chose.
    assert samples[("tickline_native", (("module", "delta"),))] == native.report()["delta"]


async def test_healthz_turns_503_while_the_event_log_fails(start_server) -> None:
    srv = await start_server(game_config={"time_limit_s": 60}, metrics_port=0)
    port = srv.server.metrics_port
    status, body = await _get(port, "/healthz")
    assert status == 200 and '"status":"ok"' in body.replace(" ", "")
    engine = srv.server.eventlog.engine

    def disk_full(dbapi_connection, _record) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA max_page_count = 1")
        cursor.close()

    async with GameClient.connect("127.0.0.1", srv.port, "p", cafile=srv.cert) as client:
        await client.wait_update(timeout=2)
        event.listen(engine.sync_engine, "connect", disk_full)
        await engine.dispose()
        await until(lambda: srv.server.eventlog.failing is not None)
        status, body = await _get(port, "/healthz")
        assert status == 503 and "event log failing" in body and "full" in body
        event.remove(engine.sync_engine, "connect", disk_full)
        await engine.dispose()
        await until(lambda: srv.server.eventlog.failing is None)
        status, body = await _get(port, "/healthz")
        assert status == 200


async def test_several_matches_share_players_by_placement_and_the_lobby_lists_them(start_server) -> None:
    from tickline.bots.swarm import run_swarm

    srv = await start_server(
        game_config={"time_limit_s": 2, "max_players": 3}, matches=2, placement="spread", metrics_port=0
    )
    swarm = asyncio.create_task(run_swarm("127.0.0.1", srv.port, 6, duration=8, cafile=srv.cert))
    await until(lambda: sum(len(m.sessions) for m in srv.server.matches) == 6)
    status, body = await _get(srv.server.metrics_port, "/matches")
    listed = json.loads(body)
    assert status == 200 and len(listed) == 2
    assert sorted(m["players"] for m in listed) == [3, 3]  # spread evenly, each with its own tick loop
    assert all(m["tick"] > 0 and m["max_players"] == 3 for m in listed)
    report = await swarm
    assert len(report["match_ids"]) == 2 and report["closed_by_server"] == {"match over": 6}


async def test_the_http_side_listens_on_http_host_apart_from_the_game(start_server) -> None:
    srv = await start_server(game_config={"time_limit_s": 60}, host="127.0.0.1", metrics_port=0, http_host="::1")
    port = srv.server.metrics_port
    assert srv.server.http_url == f"http://[::1]:{port}/"
    async with aiohttp.ClientSession() as http, http.get(f"http://[::1]:{port}/healthz") as response:
        assert response.status == 200
    try:
        status, _ = await _get(port, "/healthz")  # the game's address: no HTTP there
    except aiohttp.ClientConnectorError:
        status = 0
    assert status == 0
    async with GameClient.connect("127.0.0.1", srv.port, "player", cafile=srv.cert) as client:
        assert await client.wait_update(timeout=2)


def test_tick_histograms_count_as_prometheus_client_would_and_keep_an_ended_matchs_in_the_servers() -> None:
    metrics = Metrics(cast(Any, None))  # (the server is read by the live gauges only, not here)
    reference = Histogram("reference", "the same observations", buckets=TICK_BUCKETS, registry=CollectorRegistry())
    a, b = metrics.tick_observer("a"), metrics.tick_observer("b")
    lateness = [0.0, 0.0005, 0.0007, 0.002, 0.0166, 0.04, 0.5, 3.0]
    for value in lateness[:-1]:
        a(value, 0.001)
    b(lateness[-1], 0.002)
    for value in lateness:
        reference.observe(value)
    metrics.forget("a")
    families = {family.name: family for family in metrics.ticks.collect()}
    assert {s.labels["match"] for s in families["tickline_tick_lateness_seconds"].samples} == {"b"}

    def buckets(family: Any) -> list[tuple[str, str, float]]:
        return [
            (s.name.rpartition("_")[2], s.labels.get("le", ""), s.value) for s in family.samples if "le" in s.labels
        ]

    (expected,) = reference.collect()
    assert buckets(families["tickline_server_tick_lateness_seconds"]) == buckets(expected)
    whole = {s.name: s.value for s in families["tickline_server_tick_lateness_seconds"].samples}
    assert whole["tickline_server_tick_lateness_seconds_count"] == len(lateness)
    assert whole["tickline_server_tick_lateness_seconds_sum"] == sum(lateness)
    durations = {s.name: s.value for s in families["tickline_server_tick_duration_seconds"].samples}
    assert durations["tickline_server_tick_duration_seconds_sum"] == 7 * 0.001 + 0.002
