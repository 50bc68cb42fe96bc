"""The browser's pages on the HTTP side: the lobby, the play page and the live monitor.

``/`` (and ``/lobby``) lists the open matches from ``/matches`` and sends a person to
``/play`` (``?name=`` to join, ``&match=`` for one match, ``?spectate=ID`` to watch).
``/play`` is an arena-style client over the web SDK (``/tickline-client.js``, the
bundle shipped in ``tickline/web``), drawing any game from its view schema's draw
hints (``/games/{name}/schema.json``). ``/monitor`` polls ``/monitor.json``: matches,
players, tick lateness, event-log lag and bytes per client, from a small ring of samples
taken when it is asked (at most one a second), so that nothing runs while nobody looks.
With ``ServerConfig.monitor_token`` (``--admin-token``) set, both want it, as ``/metrics``
does (:func:`check_admin`).
The pages are static files beside the bundle; they load nothing from elsewhere.
"""

from __future__ import annotations

import hmac
import time
from collections import deque
from functools import cache
from importlib import resources
from typing import TYPE_CHECKING, Any

from aiohttp import web

from tickline.replays.player import schema_json
from tickline.shared.games import UnknownGame, make_rules

if TYPE_CHECKING:
    from tickline.server.app import Server

SAMPLES = 300  # five minutes of one-second samples
PAGES = {"/": "lobby.html", "/lobby": "lobby.html", "/play": "play.html", "/monitor": "monitor.html"}


@cache
def _static(name: str) -> bytes:
    return (resources.files("tickline") / "web" / name).read_bytes()


class Monitor:
    """The figures of ``/monitor.json``, with a ring of ``(time, bytes sent per match)`` samples."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.samples: deque[tuple[float, dict[str, tuple[int, int]]]] = deque(maxlen=SAMPLES)

    def sample(self, now: float) -> None:
        """Take a sample unless one was taken within the last second."""
        if self.samples and now - self.samples[-1][0] < 1.0:
            return
        figures = {m.match_id: m.live_figures() for m in self.server.matches}
        counts = {mid: (f["bytes_down"], f["players"] + f["spectators"]) for mid, f in figures.items()}
        self.samples.append((now, counts))

    def report(self, now: float) -> dict[str, Any]:
        """Every match's figures now, and its bytes per client per second over the samples."""
        self.sample(now)
        server, log = self.server, self.server.eventlog
        matches = []
        for m in server.matches:
            series = []  # [seconds ago, bytes/s per client] between consecutive samples
            before: tuple[float, tuple[int, int]] | None = None
            for t, by_match in self.samples:
                if m.match_id not in by_match:
                    continue
                if before is not None and t > before[0]:
                    sent = by_match[m.match_id][0] - before[1][0]
                    clients = max(1, by_match[m.match_id][1])
                    series.append([round(now - t, 1), round(sent / (t - before[0]) / clients)])
                before = (t, by_match[m.match_id])
            matches.append(
                {
                    "match_id": m.match_id,
                    "game": m.rules.name,
                    "status": m.status,
                    "tick": m.tick,
                    "age_s": round(time.time() - m.header.created_at, 1),
                    "players": [
                        {"id": pid, "name": s.name, "bytes_down": s.bytes_down} for pid, s in sorted(m.sessions.items())
                    ],
                    "spectators": len(m.spectators),
                    "tick_late_ms": m.tick_late.summary(1000),
                    "log_lag_ticks": log.lag_ticks(m.match_id) if log is not None else 0,
                    "bytes_per_client_s": series,
                }
            )
        return {
            "time": now,
            "matches": matches,
            "eventlog": {
                "lag_s": round(log.lag_seconds(), 4) if log is not None else 0.0,
                "queued": log.queued() if log is not None else 0,
                "failing": bool(log.failing) if log is not None else False,
            },
        }


def check_admin(request: web.Request, want: str) -> None:
    """Raise 401 unless ``request`` brings the admin token ``want`` ("": open): as
    ``?token=``, an ``X-Monitor-Token`` header, or ``Authorization: Bearer`` (what
    Prometheus sends with its ``authorization`` setting)."""
    if not want:
        return
    bearer = request.headers.get("Authorization", "")
    given = (
        request.query.get("token")
        or request.headers.get("X-Monitor-Token")
        or (bearer[7:] if bearer.startswith("Bearer ") else "")
    )
    if not hmac.compare_digest(given.encode(), want.encode()):
        raise web.HTTPUnauthorized(
            text="this wants the admin token: ?token=..., X-Monitor-Token or Authorization: Bearer\n",
            headers={"WWW-Authenticate": "Bearer"},
        )


def add_pages(app: web.Application, server: Server) -> None:
    """Add the lobby, play and monitor pages, the bundle and the schemas to ``app``."""
    monitor = Monitor(server)

    def allowed(request: web.Request) -> None:
        check_admin(request, server.config.monitor_token)

    def page(name: str, guarded: bool = False) -> Any:
        async def handler(request: web.Request) -> web.Response:
            if guarded:
                allowed(request)
            return web.Response(body=_static(name), content_type="text/html", charset="utf-8")

        return handler

    async def bundle(_request: web.Request) -> web.Response:
        return web.Response(
            body=_static("tickline-client.js"), content_type="text/javascript", headers={"Cache-Control": "no-cache"}
        )

    async def schema(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        running = [m for m in server.matches if m.rules.name == name]
        try:
            rules = running[0].rules if running else make_rules(name)
        except UnknownGame as exc:
            raise web.HTTPNotFound(text=f"{exc}\n") from None
        # The view's declaration, and the names of the controls the game takes: the play page
        # sends only those (its keyboard and mouse make arena-style movement and aim).
        controls = sorted(rules.input_schema().controls)
        return web.json_response({**schema_json(rules.view_schema()), "controls": controls})

    async def monitor_json(request: web.Request) -> web.Response:
        allowed(request)
        return web.json_response(monitor.report(time.time()), headers={"Cache-Control": "no-store"})

    for path, name in PAGES.items():
        app.router.add_get(path, page(name, guarded=path == "/monitor"))
    app.router.add_get("/tickline-client.js", bundle)
    app.router.add_get("/games/{name}/schema.json", schema)
    app.router.add_get("/monitor.json", monitor_json)
