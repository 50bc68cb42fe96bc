"""The server: the QUIC endpoint, the matches, the event log, and who owns which task.

Task tree (structured concurrency: every task has an owner that awaits it)::

    Server.run
    ├── EventLog.run                  the single writer task
    ├── GcPacer.run                   garbage collection between callbacks (server.gcpacing)
    └── games TaskGroup
        ├── resumed matches           those a crash interrupted, rebuilt from the log
        ├── slot 0..N-1               each runs one match after another
        │   └── Match.run             the tick loop; its TaskGroup owns
        │       └── Session.run       one task per player
        └── admission tasks           a new connection until its hello

Beside them, when asked, the HTTP side (``server.http``: health, metrics).
Shutdown is :meth:`Server.stop`: matches end after their current tick and tell
their players why; pending connections are closed; the writer commits what is
queued; then the endpoint closes.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import socket
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from server.eventlog import DURABILITIES, EventLog, FencedOut, LogSettings
from server.gcpacing import GcPacer
from server.match import Match, MatchSettings, rules_for
from server.http import Metrics, start_http
from server.session import Departure, Session, SessionClosed
from server.tls import ensure_certificate
from server.fastpath import FastPath
from server.transport import server_configuration, start_endpoint
from shared.games import UnknownGame
from shared.logformat import Divergence
from shared.protocol import ALPN

log = logging.getLogger("tickline.server")
SWITCH_INTERVAL_S = 0.001


class ConfigurationError(ValueError):
    """A server setting that cannot work; the message says which and what to do."""


@dataclass(slots=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 4433
    data_dir: Path = Path("data")
    db_url: str | None = None  # default: SQLite file in data_dir
    cert: Path | None = None
    key: Path | None = None
    match: MatchSettings = field(default_factory=MatchSettings)
    log: LogSettings = field(default_factory=LogSettings)
    server_id: str | None = None  # default: kept in DATA_DIR/server-id
    matches: int = 1  # matches open at once; each is replaced by a new one when it ends
    placement: str = "fill"  # fill: the first match with room; spread: the one with fewest players
    max_matches: int = 0  # stop after this many matches have ended (0: never)
    metrics_port: int | None = None  # HTTP health and metrics; None: off, 0: a free port
    hello_timeout: float = 10.0
    idle_timeout: float = 15.0
    fastpath: bool = True  # offer native clients the fast path (server/fastpath.py)

    def database_url(self) -> str:
        return self.db_url or f"sqlite+aiosqlite:///{self.data_dir / 'tickline.db'}"

    def resolve_server_id(self) -> str:
        """This server's identity as a match owner; stable across restarts on one data folder."""
        if self.server_id:
            return self.server_id
        path = self.data_dir / "server-id"
        if not path.exists():
            self.data_dir.mkdir(parents=True, exist_ok=True)
            path.write_text(f"{socket.gethostname()}-{uuid.uuid4().hex[:12]}\n")
        return path.read_text().strip()

    def validate(self) -> None:
        m = self.match
        if not 1 <= m.tick_rate <= 1000:
            raise ConfigurationError(f"--tick-rate {m.tick_rate} is out of range; use 1 to 1000")
        if not 1 <= m.send_rate <= m.tick_rate or m.tick_rate % m.send_rate:
            raise ConfigurationError(
                f"--send-rate {m.send_rate} must divide --tick-rate {m.tick_rate} (e.g. 60 and 30)"
            )
        if not 0 <= self.port <= 65535:
            raise ConfigurationError(f"--port {self.port} is not a UDP port; use 0 to 65535")
        if self.matches < 1:
            raise ConfigurationError("--matches must be at least 1")
        if self.placement not in ("fill", "spread"):
            raise ConfigurationError(f"--placement {self.placement} is unknown; use fill or spread")
        if self.log.durability not in DURABILITIES:
            raise ConfigurationError(f"--durability {self.log.durability} is unknown; use {' or '.join(DURABILITIES)}")
        if not 1 <= self.log.flush_ms <= 10_000:
            raise ConfigurationError(f"--flush-ms {self.log.flush_ms} is out of range; use 1 to 10000")
        if m.keyframe_every < 0 or m.grace_s < 0:
            raise ConfigurationError("--keyframe-every and --grace cannot be negative")
        if (self.cert is None) != (self.key is None):
            raise ConfigurationError("--cert and --key go together; give both or neither")
        rules_for(m)  # an unknown game or a bad game config fails here, before anything starts


class Server:
    def __init__(self, config: ServerConfig) -> None:
        config.validate()
        self.config = config
        self.port = 0
        self.cert_path: Path | None = None
        self.ready = asyncio.Event()
        self.matches: list[Match] = []
        self.matches_ended = 0
        self.resumed: list[Match] = []
        self.metrics_port = 0
        self.kicked = 0  # connections closed for what they sent
        self.ended_totals = {"ticks": 0, "inputs_applied": 0, "bytes_down": 0}  # of matches that ended
        self.metrics = Metrics(self)
        self.gc_pacer = GcPacer(on_collect=self.metrics.observe_gc)
        self.recovery_s = 0.0
        self.eventlog: EventLog | None = None
        self.fastpath: FastPath | None = None
        self._stopping = asyncio.Event()
        self._games: asyncio.TaskGroup | None = None
        self._admitting: set[Session] = set()

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def stop(self) -> None:
        """Begin a clean shutdown (safe to call from a signal handler, and more than once)."""
        if self._stopping.is_set():
            return
        log.info("shutting down")
        self._stopping.set()
        for match in self.matches:
            match.stop()
        for session in list(self._admitting):
            session.close("server shutting down")

    async def run(self, on_ready: Callable[[], None] | None = None) -> None:
        """Serve until :meth:`stop`; ``on_ready`` is called once players can join."""
        cfg = self.config
        started = time.monotonic()
        if cfg.db_url is None:
            cfg.data_dir.mkdir(parents=True, exist_ok=True)  # the default SQLite file lives there
        eventlog = self.eventlog = await EventLog.open(cfg.database_url(), cfg.resolve_server_id(), cfg.log)
        http = None
        try:
            if cfg.cert is not None and cfg.key is not None:
                cert, key = cfg.cert, cfg.key
            else:
                cert, key, created = ensure_certificate(cfg.data_dir / "tls")
                log.info("%s TLS certificate %s", "created" if created else "using", cert)
            self.cert_path = cert
            quic_config = server_configuration(cert, key, cfg.idle_timeout)
            resumed = await self._recover(eventlog)
            if cfg.metrics_port is not None:
                http, self.metrics_port = await start_http(self, self.metrics, cfg.host, cfg.metrics_port)
                log.info("health and metrics on http://%s:%d/ (/healthz, /metrics)", cfg.host, self.metrics_port)
            async with asyncio.TaskGroup() as tg:
                tg.create_task(eventlog.run(), name="eventlog-writer")
                self.fastpath = FastPath() if cfg.fastpath else None
                endpoint, self.port = await start_endpoint(cfg.host, cfg.port, quic_config, self._accept,
                                                           self.fastpath)
                pacer: asyncio.Task[None] | None = None
                try:
                    async with asyncio.TaskGroup() as games:
                        self._games = games
                        for match in resumed:
                            games.create_task(self._run_match(match), name=f"resumed-{match.match_id[:8]}")
                        first = [Match(cfg.match, eventlog) for _ in range(cfg.matches)]
                        for slot, match in enumerate(first):
                            games.create_task(self._run_slot(match), name=f"slot-{slot}")
                        await asyncio.gather(*(m.opened.wait() for m in first + resumed))
                        self.recovery_s = time.monotonic() - started
                        # Start-up garbage never needs collecting; freezing it keeps full
                        # collections (the largest tick stalls seen) short. From here on
                        # the pacer collects, in short steps between callbacks.
                        gc.freeze()
                        pacer = tg.create_task(self.gc_pacer.run(), name="gc-pacer")
                        # The event log's threads (aiosqlite, encoding) hold the GIL for up
                        # to the switch interval (5 ms by default) before the loop gets it
                        # back: that was the tick lateness tail at 90+ players.
                        sys.setswitchinterval(SWITCH_INTERVAL_S)
                        log.info("listening on %s:%d (QUIC, ALPN %s)", cfg.host, self.port, ALPN)
                        self.ready.set()
                        if on_ready is not None:
                            on_ready()
                        await self._stopping.wait()
                finally:
                    # The writer commits everything queued, then returns; the
                    # TaskGroup awaits it.
                    self._games = None
                    if pacer is not None:
                        pacer.cancel()
                    eventlog.stop()
                    endpoint.close()
        finally:
            if http is not None:
                await http.cleanup()
            await eventlog.dispose()
        log.info("stopped; event log committed (%d commits, %d ticks)", eventlog.commits, eventlog.rows)

    async def _recover(self, eventlog: EventLog) -> list[Match]:
        """Matches this server was running when it died, rebuilt to their last committed tick."""
        resumed = []
        for match_id in await eventlog.running_matches():
            try:
                recovered = await eventlog.load_running(match_id)
                match = Match(self.config.match, eventlog, recovered=recovered)
            except (Divergence, FencedOut, UnknownGame, ValueError, LookupError) as exc:
                log.error("match %s cannot be resumed: %s", match_id[:8], exc)
                await eventlog.mark_failed(match_id, str(exc))
                continue
            resumed.append(match)
        self.resumed = resumed
        return resumed

    async def _run_match(self, match: Match) -> None:
        match.on_tick = self.metrics.tick_observer(match.match_id)
        match.on_kick = self._count_kick
        self.matches.append(match)
        try:
            await match.run()
        finally:
            self.matches.remove(match)
            self.metrics.forget(match.match_id)
            self.ended_totals["ticks"] += match.tick - (match.resumed_at or 0)
            self.ended_totals["inputs_applied"] += match.inputs_applied
            self.ended_totals["bytes_down"] += match.live_figures()["bytes_down"]

    def _count_kick(self) -> None:
        self.kicked += 1

    async def _run_slot(self, match: Match) -> None:
        """Run ``match``, then new matches one after another, until the server stops."""
        assert self.eventlog is not None
        while True:
            await self._run_match(match)
            self.matches_ended += 1
            if self.config.max_matches and self.matches_ended >= self.config.max_matches:
                self.stop()
            if self._stopping.is_set():
                return
            match = Match(self.config.match, self.eventlog)

    # ------------------------------------------------------------ admission

    def _place(self) -> Match | None:
        """The match a new player joins, by the placement policy."""
        open_matches = [m for m in self.matches if m.is_open()]
        if not open_matches:
            return None
        if self.config.placement == "spread":
            return min(open_matches, key=lambda m: len(m.sessions))
        return open_matches[0]

    def _resume(self, session: Session, token: str) -> None:
        """A returning client: give it its player back, or say plainly why not."""
        match_id, _, rest = token.partition(".")
        player, _, _secret = rest.partition(".")
        match = next((m for m in self.matches if m.match_id == match_id), None)
        if match is not None and player.isdigit() and match.can_resume(int(player), token):
            match.resume(session, int(player), token)
        else:
            session.fail("unknown or expired reconnect token; join again without one")
            self._count_kick()

    def _accept(self, session: Session) -> None:
        """Called by the transport for each new connection."""
        if self._games is None or self._stopping.is_set():
            session.close("server shutting down")
            return
        self._admitting.add(session)
        self._games.create_task(self._admit(session))

    async def _admit(self, session: Session) -> None:
        try:
            async with asyncio.timeout(self.config.hello_timeout):
                hello = await session.hello()
        except TimeoutError:
            session.fail(f"no hello within {self.config.hello_timeout:g} s")
            return
        except SessionClosed:
            return
        finally:
            self._admitting.discard(session)
            if session.departure is Departure.KICKED:
                self._count_kick()  # refused before it joined a match
        if hello.token:
            self._resume(session, hello.token)
            return
        # A match that just ended is replaced within moments; wait that long.
        for _ in range(40):
            match = self._place()
            if match is not None:
                match.admit(session)
                return
            if self._stopping.is_set() or session.closed.is_set():
                break
            await asyncio.sleep(0.05)
        session.close("server shutting down" if self._stopping.is_set() else "no match has room; try again shortly")
