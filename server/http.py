"""The HTTP side: health and Prometheus metrics, served by aiohttp beside the QUIC endpoint.

It is the control plane, and the door of the WebSocket fallback: ``/ws``
(``server.websocket``) is the one route that carries game traffic. ``/healthz``
answers 200 while the server can record play, 503 (with the reason) while
its event log refuses writes or it is shutting down. ``/metrics`` is the
Prometheus text format from a registry of this server's own, so that several
servers in one process (tests, benchmarks) never share figures.
``/cert-hashes`` lists the SHA-256 of the certificates a browser may pin for
WebTransport on the QUIC port (server/tls.py rotates them).
``POST /lobby/token`` issues a connect token (shared/tokens.py) for a player to join here;
``GET /lobby/games`` and ``POST /lobby/matches`` let a person make a match of a game with
a config (``Server.create_match``). The lobby's requests are held to a rate per address.
``/`` (the lobby), ``/play``, ``/monitor`` and ``/monitor.json`` are server/pages.py's.
``/replays`` lists the event log's matches and ``/replays/{match_id}`` plays one
in the browser (``tickline.replays.player``): the page is rendered in a worker
thread, one at a time, so the tick loops keep the event loop.

Most figures are read when scraped (a collector over the live server), so
the tick loop pays nothing for them; tick lateness and duration are
histograms observed once per tick.
"""

from __future__ import annotations

import asyncio
import html
import logging
import math
import time
from bisect import bisect_left
from collections.abc import Callable, Iterator
from itertools import accumulate
from typing import TYPE_CHECKING

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Histogram, ProcessCollector, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from tickline.replays.player import render_html
from tickline.replays.reader import LogReader, MatchNotFound, MatchSummary
from tickline.replays.replay import Replay
from tickline.server.pages import add_pages, check_admin
from tickline.server.ratelimit import KeyedBuckets
from tickline.server.session import MAX_NAME, valid_name
from tickline.shared import native
from tickline.shared.fastpath import DROP_REASONS
from tickline.shared.games import UnknownGame
from tickline.shared.protocol import WEBTRANSPORT_PATH

if TYPE_CHECKING:
    from tickline.server.app import Server

log = logging.getLogger(__name__)


class LobbyRefused(ValueError):
    """A match the lobby will not create (``Server.create_match``); the message says why."""


# Lateness is what players feel: fine buckets under one tick (16.7 ms at 60 Hz).
TICK_BUCKETS = (0.0005, 0.001, 0.002, 0.004, 0.008, 0.0167, 0.033, 0.1, 0.25, 1.0)


class Metrics:
    def __init__(self, server: Server) -> None:
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)  # process_cpu_seconds_total, memory
        self.ticks = _TickCollector()
        self.registry.register(self.ticks)
        # Pauses of the loop for garbage collection (server.gcpacing), by generation.
        self.gc_pause = Histogram(
            "tickline_gc_pause_seconds",
            "Time the loop spent in one garbage collection",
            ["generation"],
            buckets=TICK_BUCKETS,
            registry=self.registry,
        )
        self.lobby_refused = Counter(
            "tickline_lobby_tokens_refused",
            "Lobby requests (tokens, new matches) refused for an address's rate (--lobby-rate)",
            registry=self.registry,
        )
        self.registry.register(_LiveCollector(server))

    def observe_gc(self, generation: int, seconds: float) -> None:
        self.gc_pause.labels(str(generation)).observe(seconds)

    def tick_observer(self, match_id: str) -> Callable[[float, float], None]:
        """A per-match callback ``(lateness_s, duration_s)`` for the tick loop."""
        return self.ticks.observer(match_id)

    def forget(self, match_id: str) -> None:
        """Drop an ended match's series, so a long-running server's metrics do not grow."""
        self.ticks.forget(match_id)


class _Buckets:
    """One histogram's observations as plain counts, by the first of TICK_BUCKETS each is at
    most (the last: above them all). Every tick observes two: prometheus-client's Histogram
    takes a lock and scans its buckets for each, about ten times the cost of a bisection."""

    __slots__ = ("counts", "total")

    def __init__(self) -> None:
        self.counts = [0] * (len(TICK_BUCKETS) + 1)
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(TICK_BUCKETS, value)] += 1
        self.total += value

    def add(self, other: _Buckets) -> None:
        self.counts = [a + b for a, b in zip(self.counts, other.counts, strict=True)]
        self.total += other.total

    def sample(self) -> tuple[list[tuple[str, float]], float]:
        """(cumulative buckets by their ``le``, sum), as HistogramMetricFamily takes them."""
        cumulative = list(accumulate(self.counts))
        bounds = [repr(float(b)) for b in TICK_BUCKETS] + ["+Inf"]  # (as prometheus-client writes them)
        return list(zip(bounds, cumulative, strict=True)), self.total


class _TickCollector(Collector):
    """Each running match's tick lateness and duration (``match`` label), and the server's over
    every match it ever ran: per-match series go when their match ends, and a window across a
    match's end must still add up."""

    _NAMES = (
        ("tickline_tick_lateness_seconds", "How late each tick started against its deadline"),
        ("tickline_tick_duration_seconds", "Time the loop spent in one tick"),
    )
    _ALL = (
        ("tickline_server_tick_lateness_seconds", "How late each tick of any match started"),
        ("tickline_server_tick_duration_seconds", "Time the loop spent in one tick of any match"),
    )

    def __init__(self) -> None:
        self._matches: dict[str, tuple[_Buckets, _Buckets]] = {}  # match id -> (lateness, duration)
        self._ended = (_Buckets(), _Buckets())

    def observer(self, match_id: str) -> Callable[[float, float], None]:
        late, took = self._matches.setdefault(match_id, (_Buckets(), _Buckets()))
        late_observe, took_observe = late.observe, took.observe

        def observe(lateness: float, duration: float) -> None:
            late_observe(lateness)
            took_observe(duration)

        return observe

    def forget(self, match_id: str) -> None:
        ended = self._matches.pop(match_id, None)
        if ended is not None:
            for kept, counts in zip(self._ended, ended, strict=True):
                kept.add(counts)

    def collect(self) -> Iterator[Metric]:
        matches = list(self._matches.items())
        for which, ((name, doc), (all_name, all_doc)) in enumerate(zip(self._NAMES, self._ALL, strict=True)):
            family, whole = HistogramMetricFamily(name, doc, labels=["match"]), _Buckets()
            whole.add(self._ended[which])
            for match_id, pair in matches:
                buckets, total = pair[which].sample()
                family.add_metric([match_id], buckets, total)
                whole.add(pair[which])
            yield family
            everything = HistogramMetricFamily(all_name, all_doc)
            everything.add_metric([], *whole.sample())
            yield everything


class _LiveCollector(Collector):
    def __init__(self, server: Server) -> None:
        self._server = server

    def collect(self) -> Iterator[Metric]:
        server = self._server
        matches = list(server.matches)
        players = GaugeMetricFamily("tickline_players", "Players connected to a match", labels=["match"])
        away = GaugeMetricFamily(
            "tickline_players_away", "Players whose connection dropped, within their grace window", labels=["match"]
        )
        spectators = GaugeMetricFamily(
            "tickline_spectators", "Spectators watching a match (not counted as players)", labels=["match"]
        )
        ticks = CounterMetricFamily("tickline_ticks", "Ticks run", labels=["match"])
        inputs = CounterMetricFamily("tickline_inputs_applied", "Inputs applied", labels=["match"])
        rejected = CounterMetricFamily("tickline_connections_kicked", "Connections closed for bad input", labels=[])
        paused = CounterMetricFamily(
            "tickline_match_paused_seconds", "Time a match waited for the event log", labels=["match"]
        )
        down = CounterMetricFamily("tickline_bytes_down", "Bytes sent to clients", labels=["match"])
        catch_ups = CounterMetricFamily(
            "tickline_tick_catch_ups",
            "Times the tick schedule restarted after the loop fell behind by more than a quarter second",
            labels=["match"],
        )
        lag_ticks = GaugeMetricFamily(
            "tickline_eventlog_lag_ticks", "Ticks appended but not yet committed", labels=["match"]
        )
        for match in matches:
            figures = match.live_figures()
            label = [match.match_id]
            players.add_metric(label, figures["players"])
            away.add_metric(label, figures["away"])
            spectators.add_metric(label, figures["spectators"])
            ticks.add_metric(label, match.tick)
            inputs.add_metric(label, match.inputs_applied)
            paused.add_metric(label, match.paused_s)
            down.add_metric(label, figures["bytes_down"])
            catch_ups.add_metric(label, match.catch_ups)
            if server.eventlog is not None:
                lag_ticks.add_metric(label, server.eventlog.lag_ticks(match.match_id))
        rejected.add_metric([], server.kicked)
        yield GaugeMetricFamily("tickline_matches", "Matches open on this server", value=len(matches))
        yield from (players, away, spectators, ticks, inputs, rejected, paused, down, catch_ups, lag_ticks)
        # Server-wide totals, ended matches included, so that they only ever grow.
        ended = server.ended_totals
        live = [m.live_figures() for m in matches]
        yield CounterMetricFamily(
            "tickline_server_ticks",
            "Ticks run by every match",
            value=ended["ticks"] + sum(m.tick - (m.resumed_at or 0) for m in matches),
        )
        yield CounterMetricFamily(
            "tickline_server_inputs_applied",
            "Inputs applied in every match",
            value=ended["inputs_applied"] + sum(m.inputs_applied for m in matches),
        )
        yield CounterMetricFamily(
            "tickline_server_bytes_down",
            "Bytes sent to clients by every match",
            value=ended["bytes_down"] + sum(f["bytes_down"] for f in live),
        )
        yield CounterMetricFamily(
            "tickline_server_tick_catch_ups",
            "Tick schedule restarts in every match",
            value=ended["catch_ups"] + sum(m.catch_ups for m in matches),
        )
        yield GaugeMetricFamily(
            "tickline_server_players", "Players connected to any match", value=sum(f["players"] for f in live)
        )
        yield GaugeMetricFamily(
            "tickline_server_spectators", "Spectators watching any match", value=sum(f["spectators"] for f in live)
        )
        modules = GaugeMetricFamily(
            "tickline_native",
            "1 for a module whose native code is in use, 0 for its pure-Python twin",
            labels=["module"],
        )
        for module, used in native.report().items():
            modules.add_metric([module], int(used))
        yield modules
        refused = CounterMetricFamily(
            "tickline_inputs_refused",
            "Client datagrams and inputs refused (messages, bytes: over the input rate; buffer: more "
            "ticks of input than a player may queue; kicked: connections closed for what they sent)",
            labels=["reason"],
        )
        for reason, count in sorted(server.inputs_refused().items()):
            refused.add_metric([reason], count)
        yield refused
        yield from _transport_metrics(server)

        yield from _fastpath_metrics(server)
        log = server.eventlog
        if log is None:
            return
        yield GaugeMetricFamily(
            "tickline_eventlog_lag_seconds", "Age of the oldest record not yet committed", value=log.lag_seconds()
        )
        yield GaugeMetricFamily(
            "tickline_eventlog_queued_records", "Records waiting for the writer", value=log.queued()
        )
        yield GaugeMetricFamily(
            "tickline_eventlog_failing", "1 while the database refuses writes", value=1 if log.failing else 0
        )
        yield CounterMetricFamily("tickline_eventlog_commits", "Transactions committed", value=log.commits)
        yield CounterMetricFamily("tickline_eventlog_rows", "Tick rows committed", value=log.rows)
        yield CounterMetricFamily(
            "tickline_eventlog_failed_commits",
            "Commits the database refused (each is retried)",
            value=log.failed_commits,
        )
        commit = GaugeMetricFamily(
            "tickline_eventlog_commit_seconds", "Commit duration over recent commits", labels=["quantile"]
        )
        for q in (50, 99):
            commit.add_metric([str(q / 100)], log.commit_seconds.percentile(q))
        yield commit


def _transport_metrics(server: Server) -> Iterator[Metric]:
    connections = GaugeMetricFamily(
        "tickline_connections", "Players and spectators connected to a match, by transport", labels=["transport"]
    )
    counts = dict.fromkeys(("quic", "webtransport", "websocket"), 0)
    for match in server.matches:
        for session in [*match.sessions.values(), *match.spectators]:
            # QUIC's channel (server/transport.py) predates the name; every other transport's has one.
            transport = getattr(session.channel, "transport", "quic")
            counts[transport] = counts.get(transport, 0) + 1
    for transport, count in counts.items():
        connections.add_metric([transport], count)
    yield connections
    udp = server.udp
    if udp is not None:
        # Datagrams per read is the batching: while matches tick, their ticks read the socket.
        yield CounterMetricFamily(
            "tickline_udp_reads", "Reads of the QUIC port's socket that found datagrams", value=udp.reads
        )
        yield CounterMetricFamily("tickline_udp_datagrams", "Datagrams read from the QUIC port", value=udp.datagrams)
        yield CounterMetricFamily(
            "tickline_udp_overdue_reads",
            "Reads of the QUIC port's socket by its timer while matches ticked: no tick had read it in time",
            value=udp.overdue,
        )
    yield CounterMetricFamily(
        "tickline_websocket_datagrams_dropped",
        "Datagram messages not sent to WebSocket clients that were behind (as UDP would drop them)",
        value=server.websockets.datagrams_dropped,
    )
    ws_refused = CounterMetricFamily(
        "tickline_websocket_refused",
        "WebSocket upgrades answered 503 at a connection cap (server/gate.py's Connections), by reason",
        labels=["reason"],
    )
    for reason, count in sorted(server.websockets.refused.items()):
        ws_refused.add_metric([reason], count)
    yield ws_refused
    gate = server.gate
    refused = CounterMetricFamily(
        "tickline_quic_refused",
        "Datagrams that would have opened a QUIC connection, turned away (server/gate.py), by reason",
        labels=["reason"],
    )
    for reason, count in sorted(gate.refused.items()):
        refused.add_metric([reason], count)
    yield refused
    yield CounterMetricFamily(
        "tickline_quic_retries", "Stateless Retries sent to unvalidated addresses", value=gate.retries
    )
    yield GaugeMetricFamily(
        "tickline_quic_half_open", "QUIC connections in their handshake", value=gate.half_open_total
    )


def _fastpath_metrics(server: Server) -> Iterator[Metric]:
    fast = server.fastpath
    if fast is None:
        return
    yield GaugeMetricFamily(
        "tickline_fastpath_sessions", "Connections whose deltas take the fast path", value=fast.active_routes()
    )
    yield CounterMetricFamily("tickline_fastpath_packets_in", "Fast-path packets authenticated", value=fast.packets_in)
    yield CounterMetricFamily("tickline_fastpath_packets_out", "Fast-path packets sent", value=fast.packets_out)
    yield CounterMetricFamily(
        "tickline_fastpath_bytes_in", "Bytes of authenticated fast-path packets", value=fast.bytes_in
    )
    yield CounterMetricFamily("tickline_fastpath_bytes_out", "Bytes of fast-path packets sent", value=fast.bytes_out)
    yield CounterMetricFamily(
        "tickline_fastpath_challenges", "Path challenges sent to new addresses", value=fast.challenges
    )
    yield CounterMetricFamily(
        "tickline_fastpath_migrations", "Routes moved to a new, validated address", value=fast.migrations
    )
    dropped = CounterMetricFamily(
        "tickline_fastpath_dropped", "Fast-path packets dropped unanswered, by reason", labels=["reason"]
    )
    for reason in DROP_REASONS:
        dropped.add_metric([reason], fast.dropped[reason])
    yield dropped


class _ReplayPages:
    """``/replays`` and ``/replays/{match_id}``: the log's matches, and the replay player."""

    def __init__(self, log_url: str) -> None:
        self.log_url = log_url
        self._reader: LogReader | None = None
        self._opening = asyncio.Lock()
        # One render at a time: each is seconds of CPU for a long match, in a thread
        # that shares the GIL with the tick loops.
        self._rendering = asyncio.Semaphore(1)

    async def reader(self) -> LogReader:
        async with self._opening:
            if self._reader is None:
                self._reader = await LogReader.open(self.log_url)
            return self._reader

    async def close(self, _app: web.Application) -> None:
        if self._reader is not None:
            await self._reader.close()

    async def index(self, _request: web.Request) -> web.Response:
        matches = await (await self.reader()).matches()
        return web.Response(text=_replay_list(matches), content_type="text/html", charset="utf-8")

    async def match(self, request: web.Request) -> web.Response:
        match_id = request.match_info["match_id"]
        try:
            replay = await Replay.from_log(await self.reader(), match_id)
        except MatchNotFound as exc:
            raise web.HTTPNotFound(text=f"{exc}; /replays lists them\n") from None
        except UnknownGame as exc:  # a game, or a rules version, this server lacks
            raise web.HTTPNotImplemented(text=f"match {match_id} cannot be replayed here: {exc}\n") from None
        if replay.ticks == 0:
            raise web.HTTPNotFound(text=f"match {match_id} has no ticks recorded yet; try again in a moment\n")
        try:
            async with self._rendering:
                page = await asyncio.to_thread(render_html, replay)
        except ValueError as exc:  # Divergence: the log does not replay to its own hashes
            raise web.HTTPInternalServerError(text=f"match {match_id} cannot be replayed: {exc}\n") from None
        return web.Response(text=page, content_type="text/html", charset="utf-8")


def _replay_list(matches: list[MatchSummary]) -> str:
    """The /replays page: one row per match, newest first, each linking to its player."""
    rows = []
    for m in matches:
        players = m.stats.get("players_seen", "")
        created = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(m.created_at))
        rows.append(
            "<tr>"
            f'<td><a href="/replays/{html.escape(m.match_id)}">{html.escape(m.match_id[:12])}</a></td>'
            f"<td>{html.escape(m.game)} v{m.game_version}</td><td>{html.escape(m.status)}</td>"
            f'<td class="n">{m.last_tick}</td><td class="n">{m.last_tick / max(1, m.tick_rate):.1f} s</td>'
            f'<td>{created} UTC</td><td class="n">{html.escape(str(players))}</td>'
            "</tr>"
        )
    body = "\n".join(rows) or '<tr><td colspan="7">no matches in the event log yet</td></tr>'
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>tickline replays</title><link rel="icon" href="data:,">
<style>
body {{ font: 14px/1.4 system-ui, sans-serif; margin: 2em; background: #0f1117; color: #e6e6e6; }}
a {{ color: #3ea6ff; }} table {{ border-collapse: collapse; }}
th, td {{ text-align: left; padding: 0.2em 1em 0.2em 0; border-bottom: 1px solid #2a2f3c; }}
.n {{ text-align: right; font-variant-numeric: tabular-nums; }}
</style></head>
<body><h1>Replays</h1>
<table><tr><th>match</th><th>game</th><th>status</th><th class="n">ticks</th><th class="n">duration</th>
<th>created</th><th class="n">players</th></tr>
{body}
</table></body></html>
"""


def make_app(server: Server, metrics: Metrics, log_url: str | None = None) -> web.Application:
    async def healthz(_request: web.Request) -> web.Response:
        log = server.eventlog
        body = {
            "status": "ok",
            "matches": len(server.matches),
            "players": sum(len(m.sessions) for m in server.matches),
            "eventlog": {
                "failing": log.failing if log else None,
                "queued": log.queued() if log else 0,
                "lag_s": round(log.lag_seconds(), 4) if log else 0.0,
            },
        }
        if server.stopping:
            body["status"] = "shutting down"
        elif log is not None and log.failing:
            body["status"] = "event log failing"
        return web.json_response(body, status=200 if body["status"] == "ok" else 503)

    async def list_matches(_request: web.Request) -> web.Response:
        """The lobby's view: every match this server runs, and whether it has room."""
        return web.json_response(
            [
                {
                    "match_id": m.match_id,
                    "game": m.rules.name,
                    "status": m.status,
                    "tick": m.tick,
                    "players": len(m.sessions),
                    "spectators": len(m.spectators),
                    "max_players": m.rules.max_players(),
                    "open": m.is_open(),
                    "created": m in server.created,  # made in the lobby: joined by its id
                    "age_s": round(time.time() - m.header.created_at, 1),
                }
                for m in server.matches
            ]
        )

    async def cert_hashes(_request: web.Request) -> web.Response:
        """What a page passes to WebTransport as serverCertificateHashes (docs/browsers.md):
        the certificate new connections get and, while one is announced, its successor's."""
        certs = server.certificates
        hashes = (
            certs.describe()
            if certs is not None
            else [{"algorithm": "sha-256", "value": h, "status": "current"} for h in server.certificate_hashes()]
        )
        # Any page may read them (they are public), and none should keep them: they rotate.
        return web.json_response(
            {"port": server.port, "path": WEBTRANSPORT_PATH, "hashes": hashes},
            headers={"Access-Control-Allow-Origin": "*", "Cache-Control": "no-store"},
        )

    lobby_limit = KeyedBuckets(server.config.lobby_rate, max(1.0, server.config.lobby_rate * 4))

    def throttle(request: web.Request) -> None:
        """The lobby's rate per address (tokens and new matches alike); 429 over it."""
        wait = lobby_limit.take(request.remote or "", asyncio.get_running_loop().time())
        if wait > 0:
            metrics.lobby_refused.inc()
            raise web.HTTPTooManyRequests(
                text=f"too many lobby requests from this address; try again in {wait:.1f} s\n",
                headers={"Retry-After": str(math.ceil(wait))},
            )

    async def lobby_token(request: web.Request) -> web.Response:
        """A connect token (shared/tokens.py) for a player to join a match here, with what a
        page needs to connect: ``{"name": ..., "match": optional id}`` in, the token out.
        Each address gets ``lobby_rate`` a second (bursts of four seconds' worth)."""
        throttle(request)
        try:
            body = await request.json()
        except ValueError:
            raise web.HTTPBadRequest(text='send a JSON object: {"name": ..., "match": optional match id}\n') from None
        name = body.get("name") if isinstance(body, dict) else None
        match = body.get("match", "") if isinstance(body, dict) else ""
        if not isinstance(name, str) or not valid_name(name.strip()):
            raise web.HTTPBadRequest(text=f"name must be 1-{MAX_NAME} printable characters\n")
        if not isinstance(match, str) or (match and not any(m.match_id == match for m in server.matches)):
            raise web.HTTPNotFound(text=f"no match {str(match)[:40]} is running here; /matches lists them\n")
        token, expires = server.issue_token(name.strip(), match)
        return web.json_response(
            {
                "token": token,
                "expires": expires,
                "match": match,
                "quic_port": server.port,
                "http_port": server.metrics_port,
                "cert_sha256": server.certificate_hashes(),
            },
            headers={"Cache-Control": "no-store"},  # good once: never from a cache
        )

    async def lobby_games(_request: web.Request) -> web.Response:
        """The games a person may create a match of here, each with its config's defaults."""
        games = []
        for name, cls in server.lobby_games().items():
            config = cls.default_config()
            config.pop("tick_rate", None)  # the match's rate, the server's to set
            games.append({"name": name, "config": config})
        return web.json_response(
            {"games": games, "limit": server.config.lobby_matches, "open": len(server.created)},
            headers={"Cache-Control": "no-store"},
        )

    async def lobby_create(request: web.Request) -> web.Response:
        """A new match: ``{"game": name, "config": {key: value}}`` in, its ``match_id`` out
        (201); a refusal says why (400, or 429 at the server's limit or the address's rate)."""
        throttle(request)
        try:
            body = await request.json()
        except ValueError:
            body = None
        if not isinstance(body, dict) or not isinstance(body.get("game"), str):
            raise web.HTTPBadRequest(text='send a JSON object: {"game": NAME, "config": {KEY: VALUE, ...}}\n')
        config = body.get("config") or {}
        if not isinstance(config, dict):
            raise web.HTTPBadRequest(text="config must be a JSON object of the game's config keys\n")
        try:
            match = await server.create_match(body["game"], config)
        except LobbyRefused as exc:
            limited = len(server.created) >= server.config.lobby_matches
            raise (web.HTTPTooManyRequests if limited else web.HTTPBadRequest)(text=f"{exc}\n") from None
        log.info("lobby: %s made match %s of %s", request.remote, match.match_id[:8], match.rules.name)
        return web.json_response(
            {"match_id": match.match_id, "game": match.rules.name, "config": match.rules.config}, status=201
        )

    async def metrics_text(request: web.Request) -> web.Response:
        check_admin(request, server.config.monitor_token)
        return web.Response(body=generate_latest(metrics.registry), content_type="text/plain", charset="utf-8")

    app = web.Application()
    server.websockets.add_to(app)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics_text)
    app.router.add_get("/matches", list_matches)
    app.router.add_get("/cert-hashes", cert_hashes)
    app.router.add_post("/lobby/token", lobby_token)
    app.router.add_get("/lobby/games", lobby_games)
    app.router.add_post("/lobby/matches", lobby_create)
    add_pages(app, server)  # /, /play, /monitor (server/pages.py)
    if log_url is not None:
        pages = _ReplayPages(log_url)
        app.router.add_get("/replays", pages.index)
        app.router.add_get("/replays/{match_id}", pages.match)
        app.on_cleanup.append(pages.close)
    return app


async def start_http(
    server: Server, metrics: Metrics, host: str, port: int, log_url: str | None = None
) -> tuple[web.AppRunner, int]:
    """Serve the app on ``host:port`` (0: a free port), with the replay pages of the event log
    at ``log_url`` when given; returns the runner and the bound port."""
    runner = web.AppRunner(make_app(server, metrics, log_url), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound: int = runner.addresses[0][1] if runner.addresses else port
    return runner, bound
