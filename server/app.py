"""The server: the QUIC endpoint, the matches, the event log, and who owns which task.

Task tree (structured concurrency: every task has an owner that awaits it)::

    Server.run
    ├── EventLog.run                  the single writer task
    ├── GcPacer.run                   garbage collection between callbacks (server.gcpacing)
    ├── Certificates.run              the TLS certificate's rotation (server.tls), without --cert
    └── games TaskGroup
        ├── resumed matches           those a crash interrupted, rebuilt from the log
        ├── slot 0..N-1               each runs one match after another
        │   └── Match.run             the tick loop; its TaskGroup owns
        │       └── Session.run       one task per player (and per spectator)
        └── admission tasks           a new connection until its hello; for a spectator
            └── Rebroadcast.run       of a match that is over, its stream from the log
                └── Session.run       (server.rebroadcast)

Beside them, when asked, the HTTP side (``server.http``: health, metrics, /replays, and
the WebSocket fallback at /ws, ``server.websocket``, whose connections come in through
:meth:`Server.accept` as QUIC's do).
A new player or spectator may bring a connect token from the lobby (``POST /lobby/token``;
shared/tokens.py); with ``require_tokens`` (by default, when the HTTP side is on) one must,
and it says the match and the name.
Shutdown is :meth:`Server.stop`: matches end after their current tick and tell
their players why; pending connections are closed; the writer commits what is
queued; then the endpoint closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import gc
import logging
import os
import re
import socket
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from aioquic.quic.configuration import QuicConfiguration

from tickline.replays.reader import LogReader, MatchNotFound
from tickline.replays.replay import Replay
from tickline.server.eventlog import DURABILITIES, EventLog, FencedOut, LogSettings
from tickline.server.fastpath import FastPath
from tickline.server.gate import Gate, GateSettings, RetryTokens
from tickline.server.gcpacing import GcPacer
from tickline.server.http import LobbyRefused, Metrics, start_http
from tickline.server.link import ACK_TIMEOUT_S
from tickline.server.match import Match, MatchSettings, rules_for
from tickline.server.ratelimit import InputLimits
from tickline.server.rebroadcast import Rebroadcast
from tickline.server.session import Channel, Departure, Session, SessionClosed
from tickline.server.ticker import MATCHES_PER_TICK, TickSlots
from tickline.server.tls import Certificates, certificate_sha256, ensure_token_key, utc_now
from tickline.server.transport import RECEIVE_WINDOW, Endpoint, server_configuration, start_endpoint
from tickline.server.udp import UdpTransport
from tickline.server.websocket import WebSockets
from tickline.shared import tokens
from tickline.shared.game import ConfigError, Rules
from tickline.shared.games import GameNotInstalled, UnknownGame, load
from tickline.shared.games import names as installed_games
from tickline.shared.logformat import Divergence, UnsupportedLogUrl, check_log_url
from tickline.shared.protocol import ALPN, H3_ALPN, IDLE_TIMEOUT_S, WEBTRANSPORT_PATH, Hello
from tickline.shared.tokens import DEFAULT_TTL_S, UsedTokens

log = logging.getLogger(__name__)
SWITCH_INTERVAL_S = 0.001
# A spectator's delay, at most: every tick of it is a view each match with spectators keeps.
MAX_SPECTATOR_DELAY_S = 300
CREATED_WAIT_S = 60.0  # a match made in the lobby that nobody joins within this goes


class ConfigurationError(ValueError):
    """A server setting that cannot work; the message says which and what to do."""


class ServerUnavailable(RuntimeError):
    """The server cannot start here now (a port or its data folder in use); the message says what to do."""


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
    # Matches of one rate that tick at the same instant, in one wake-up of the loop (server/ticker.py);
    # 1 gives each match a phase of its own.
    matches_per_tick: int = MATCHES_PER_TICK
    # The HTTP side (server/http.py): the lobby, the monitor, health, metrics, replays, the
    # WebSocket fallback. None: off, 0: a free port. It binds http_host, apart from the QUIC
    # host, so that the game can face the world while the pages stay on loopback.
    metrics_port: int | None = None
    http_host: str = "127.0.0.1"
    hello_timeout: float = 5.0  # a connection that has not said a valid hello by then is closed
    # A connection its client sends nothing on (QUIC or fast path) for this long is closed as lost.
    idle_timeout: float = IDLE_TIMEOUT_S
    fastpath: bool = True  # offer native clients the fast path (server/fastpath.py)
    # Connect tokens (shared/tokens.py): the key that signs them (default: DATA_DIR/tls/token.key,
    # made on first start; a fleet shares one file), and whether a new player must bring one.
    # None: required when the HTTP side (with its lobby, which issues them) is on.
    token_key: Path | None = None
    require_tokens: bool | None = None
    lobby_rate: float = 10.0  # connect tokens a second per address, in bursts of four seconds' worth
    gate: GateSettings = field(default_factory=GateSettings)  # who may start a QUIC handshake (server/gate.py)
    inputs: InputLimits = field(default_factory=InputLimits)  # what a client may send (server/ratelimit.py)
    ack_timeout: float = ACK_TIMEOUT_S  # a client that acknowledges no view for this long is closed
    receive_window: int = RECEIVE_WINDOW  # bytes a client may have in flight to us on its QUIC streams
    # Matches people create in the lobby (POST /lobby/matches): at most this many at once
    # (0: none), of these games (None: every installed game).
    lobby_matches: int = 4
    lobby_games: tuple[str, ...] | None = None
    # The admin token (--admin-token): /metrics, /monitor and /monitor.json want it (?token=,
    # X-Monitor-Token or Authorization: Bearer); "": open. The lobby, play pages and /healthz stay open.
    monitor_token: str = ""

    def tokens_required(self) -> bool:
        """Whether a new player or spectator must bring a connect token."""
        return self.metrics_port is not None if self.require_tokens is None else self.require_tokens

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
        try:
            server_id = path.read_text().strip()
        except UnicodeDecodeError:
            server_id = ""
        if not server_id or not server_id.isprintable():
            raise ConfigurationError(
                f"{path} does not hold a server id (a line of text); remove it to have a "
                "new one made, or pass --server-id"
            )
        return server_id

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
        if not 1 <= self.matches_per_tick <= 1000:
            raise ConfigurationError(f"--matches-per-tick {self.matches_per_tick} is out of range; use 1 to 1000")
        if self.placement not in ("fill", "spread"):
            raise ConfigurationError(f"--placement {self.placement} is unknown; use fill or spread")
        if not 0 <= m.spectator_delay_s <= MAX_SPECTATOR_DELAY_S:  # (NaN fails this too)
            raise ConfigurationError(
                f"--spectator-delay {m.spectator_delay_s:g} is out of range; use 0 to {MAX_SPECTATOR_DELAY_S} seconds"
            )
        if self.log.durability not in DURABILITIES:
            raise ConfigurationError(f"--durability {self.log.durability} is unknown; use {' or '.join(DURABILITIES)}")
        if not 1 <= self.log.flush_ms <= 10_000:
            raise ConfigurationError(f"--flush-ms {self.log.flush_ms} is out of range; use 1 to 10000")
        if not 0.1 <= self.lobby_rate <= 100_000:  # (NaN fails this too)
            raise ConfigurationError(
                f"--lobby-rate {self.lobby_rate:g} is out of range; use 0.1 to 100000 tokens a second per address"
            )
        try:
            self.gate.validate()
            self.inputs.validate()
        except ValueError as exc:
            raise ConfigurationError(str(exc)) from None
        if not 1 <= self.ack_timeout <= 600:
            raise ConfigurationError(f"--ack-timeout {self.ack_timeout:g} is out of range; use 1 to 600 seconds")
        if not 1 <= self.idle_timeout <= 600:
            raise ConfigurationError(f"--idle-timeout {self.idle_timeout:g} is out of range; use 1 to 600 seconds")
        if not 0.1 <= self.hello_timeout <= 120:
            raise ConfigurationError(f"--hello-timeout {self.hello_timeout:g} is out of range; use 0.1 to 120 seconds")
        if not 16 * 1024 <= self.receive_window <= 64 * 1024 * 1024:
            raise ConfigurationError(
                f"--receive-window {self.receive_window} is out of range; use 16384 to 67108864 bytes"
            )
        if self.lobby_matches < 0:
            raise ConfigurationError(f"--lobby-matches {self.lobby_matches} cannot be negative; 0 turns creating off")
        for game in self.lobby_games or ():
            try:
                load(game)
            except UnknownGame as exc:
                raise ConfigurationError(f"--lobby-games: {exc}") from None
        if m.keyframe_every < 0 or m.grace_s < 0:
            raise ConfigurationError("--keyframe-every and --grace cannot be negative")
        if (self.cert is None) != (self.key is None):
            raise ConfigurationError("--cert and --key go together; give both or neither")
        for flag, path in (("--cert", self.cert), ("--key", self.key), ("--token-key", self.token_key)):
            if path is not None and not path.is_file():
                raise ConfigurationError(f"{flag} {path}: no such file")
        if self.data_dir.exists() and not self.data_dir.is_dir():
            raise ConfigurationError(
                f"--data-dir {self.data_dir} is a file, not a folder; name a folder (it is made if missing)"
            )
        if self.db_url is not None:
            try:
                check_log_url(self.db_url)
            except UnsupportedLogUrl as exc:
                raise ConfigurationError(str(exc)) from None
        rules_for(m)  # an unknown game or a bad game config fails here, before anything starts


class Server:
    def __init__(self, config: ServerConfig) -> None:
        config.validate()
        self.config = config
        self.port = 0
        self.cert_path: Path | None = None
        # The certificates made under DATA_DIR/tls, rotated while the server runs (None with --cert).
        self.certificates: Certificates | None = None
        self._endpoint: Endpoint | None = None
        # Who may open a connection (server/gate.py): QUIC's handshakes, and the WebSockets too.
        self.gate = Gate(config.gate)
        self.ready = asyncio.Event()
        self.matches: list[Match] = []
        self.matches_ended = 0
        self.resumed: list[Match] = []
        self.metrics_port = 0
        self.kicked = 0  # connections closed for what they sent
        self.ended_totals = {"ticks": 0, "inputs_applied": 0, "bytes_down": 0, "catch_ups": 0}  # of matches that ended
        self.ended_refused: Counter[str] = Counter()  # inputs refused in matches that ended, by reason
        # Which phase of the tick interval each match ticks at: a few share one (server/ticker.py).
        self.tick_slots = TickSlots(config.matches_per_tick)
        self.metrics = Metrics(self)
        self.gc_pacer = GcPacer(on_collect=self.metrics.observe_gc)
        self.recovery_s = 0.0
        self.eventlog: EventLog | None = None
        self.fastpath: FastPath | None = None
        self.token_key = b""  # loaded by run()
        self.used_tokens = UsedTokens()
        self._stopping = asyncio.Event()
        self._games: asyncio.TaskGroup | None = None
        self.created: set[Match] = set()  # made in the lobby: run once, joined by id
        self._lobby_games: dict[str, type[Rules]] | None = None
        self._admitting: set[Session] = set()
        self._streams: set[Rebroadcast] = set()  # recorded matches streamed to spectators
        # /ws on the HTTP side; its pings find a dead WebSocket within the idle timeout too.
        self.websockets = WebSockets(
            self.accept, heartbeat_s=config.idle_timeout / 2, connections=self.gate.connections
        )

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
        for stream in list(self._streams):
            stream.stop()

    async def run(self, on_ready: Callable[[], None] | None = None) -> None:
        """Serve until :meth:`stop`; ``on_ready`` is called once players can join."""
        cfg = self.config
        started = time.monotonic()
        try:
            cfg.data_dir.mkdir(parents=True, exist_ok=True)  # its certificate, and the default SQLite file
        except OSError as exc:
            raise ConfigurationError(f"cannot make --data-dir {cfg.data_dir}: {exc.strerror}") from None
        server_id = cfg.resolve_server_id()
        # What a person can get wrong is checked before anything is made or logged: the
        # host, the ports, the data folder's lock, the database, then the certificate.
        await _check_addresses(cfg.host, cfg.port, cfg.http_host, cfg.metrics_port)
        with _DataDirLock(cfg.data_dir, server_id):
            self._load_token_key()
            eventlog = self.eventlog = await EventLog.open(cfg.database_url(), server_id, cfg.log)
            try:
                await self._serve(eventlog, self._quic_configuration(), started, on_ready)
            finally:
                await eventlog.dispose()
        log.info("stopped; event log committed (%d commits, %d ticks)", eventlog.commits, eventlog.rows)

    def _quic_configuration(self) -> QuicConfiguration:
        """QUIC's settings with this server's certificate (made under DATA_DIR/tls, and rotated,
        when none is given)."""
        cfg = self.config
        if cfg.cert is not None and cfg.key is not None:
            cert, key, where = cfg.cert, cfg.key, f"--cert {cfg.cert} / --key {cfg.key}"
        else:
            folder = cfg.data_dir / "tls"
            try:
                self.certificates = Certificates(folder)
            except ValueError as exc:
                raise ConfigurationError(
                    f"{folder / 'cert.pem'} is not a PEM certificate ({_first_line(exc)}); "
                    f"remove {folder} to have a new one made, or pass --cert and --key"
                ) from None
            cert, key = self.certificates.cert_path, self.certificates.key_path
            log.info("%s TLS certificate %s", "created" if self.certificates.created else "using", cert)
            where = f"{cert} / {key}"
        try:
            config = server_configuration(cert, key, cfg.receive_window)
        except (ValueError, OSError) as exc:  # ssl.SSLError is an OSError
            raise ConfigurationError(f"cannot load the TLS certificate and key {where}: {_first_line(exc)}") from None
        self.cert_path = cert
        return config

    def _load_token_key(self) -> None:
        cfg = self.config
        path = cfg.token_key or cfg.data_dir / "tls" / "token.key"
        try:
            self.token_key, created = ensure_token_key(path)
        except ValueError as exc:
            raise ConfigurationError(f"{exc}; remove it to have a new one made, or pass another --token-key") from None
        except OSError as exc:
            raise ConfigurationError(f"cannot read or make the connect-token key {path}: {exc.strerror}") from None
        if created:
            log.debug("created connect-token key %s", path)  # (stderr keeps to one line for a start-up error)

    @property
    def address(self) -> str:
        """``host:port`` of the QUIC endpoint (``[host]:port`` for IPv6): the address connect
        tokens are issued for."""
        host = self.config.host
        return f"[{host}]:{self.port}" if ":" in host else f"{host}:{self.port}"

    @property
    def http_url(self) -> str:
        """``http://host:port/`` of the HTTP side (the lobby), once it listens."""
        host = self.config.http_host
        return f"http://[{host}]:{self.metrics_port}/" if ":" in host else f"http://{host}:{self.metrics_port}/"

    def issue_token(self, name: str, match: str = "", ttl_s: float = DEFAULT_TTL_S) -> tuple[str, int]:
        """A connect token for ``name`` to join ``match`` ("" for any open one) here, and its expiry."""
        now = time.time()
        return tokens.issue(self.token_key, match, name, self.address, now, ttl_s), int(now + ttl_s)

    def certificate_hashes(self) -> list[str]:
        """Hex SHA-256 of the certificate new connections get and, while one is announced, of
        its successor: what a browser passes as WebTransport's serverCertificateHashes."""
        if self.certificates is not None:
            return self.certificates.hashes()
        return [certificate_sha256(self.cert_path)] if self.cert_path is not None else []

    def check_certificates(self, now: datetime | None = None) -> None:
        """Rotate the certificates as due at ``now`` (default: the wall clock); after a switch,
        new connections get the new one. The rotation task calls this; so can a test."""
        if self.certificates is not None and self.certificates.check(now or utc_now()):
            self._use_certificate()

    def _use_certificate(self) -> None:
        if self._endpoint is not None and self.certificates is not None:
            cfg = self.config
            self._endpoint.reconfigure(
                server_configuration(self.certificates.cert_path, self.certificates.key_path, cfg.receive_window)
            )

    async def _serve(
        self, eventlog: EventLog, quic_config: QuicConfiguration, started: float, on_ready: Callable[[], None] | None
    ) -> None:
        cfg = self.config
        http = None
        try:
            resumed = await self._recover(eventlog)
            if cfg.metrics_port is not None:
                try:
                    http, self.metrics_port = await start_http(
                        self, self.metrics, cfg.http_host, cfg.metrics_port, cfg.database_url()
                    )
                except OSError as exc:
                    raise _port_problem(exc, "--http-port", cfg.metrics_port) from None
                log.info("HTTP on %s (the lobby, /monitor, /healthz, /metrics, /replays, /ws)", self.http_url)
            async with asyncio.TaskGroup() as tg:
                tg.create_task(eventlog.run(), name="eventlog-writer")
                self.fastpath = FastPath() if cfg.fastpath else None
                try:
                    # Retry tokens are signed with a key derived from the connect-token key, so
                    # that a fleet sharing --token-key validates each other's (server/gate.py).
                    retry_tokens = RetryTokens(self.token_key, time.time) if cfg.gate.retry != "never" else None
                    endpoint, self.port = await start_endpoint(
                        cfg.host,
                        cfg.port,
                        quic_config,
                        self._accept,
                        self.fastpath,
                        self.gate,
                        retry_tokens,
                        idle_timeout_s=cfg.idle_timeout,
                    )
                except OSError as exc:
                    raise _port_problem(exc, "--port", cfg.port) from None
                self._endpoint = endpoint
                pacer: asyncio.Task[None] | None = None
                rotation: asyncio.Task[None] | None = None
                if self.certificates is not None:
                    rotation = tg.create_task(self.certificates.run(self._use_certificate), name="tls-rotation")
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
                        log.info(
                            "listening on %s:%d (QUIC, ALPN %s; WebTransport, ALPN %s, at %s)",
                            cfg.host,
                            self.port,
                            ALPN,
                            H3_ALPN,
                            WEBTRANSPORT_PATH,
                        )
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
                    if rotation is not None:
                        rotation.cancel()
                    eventlog.stop()
                    endpoint.close()
        finally:
            if http is not None:
                await http.cleanup()

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

    @property
    def udp(self) -> UdpTransport | None:
        """The QUIC port's socket (server/udp.py), once it is open."""
        return self._endpoint.intake if self._endpoint is not None else None

    async def _run_match(self, match: Match) -> None:
        observe, nudge = self.metrics.tick_observer(match.match_id), self.gc_pacer.nudge
        clock = asyncio.get_running_loop().time

        def on_tick(late: float, work: float) -> None:
            observe(late, work)
            nudge(clock())  # (a young collection that is nearly due rides on this tick's wake-up)

        match.on_tick = on_tick
        match.on_kick = self._count_kick
        match.intake = self.udp
        match.slots = self.tick_slots
        self.matches.append(match)
        try:
            await match.run()
        finally:
            self.matches.remove(match)
            self.metrics.forget(match.match_id)
            self.ended_totals["ticks"] += match.tick - (match.resumed_at or 0)
            self.ended_totals["inputs_applied"] += match.inputs_applied
            self.ended_totals["bytes_down"] += match.live_figures()["bytes_down"]
            self.ended_totals["catch_ups"] += match.catch_ups
            self.ended_refused.update(match.inputs_refused)

    def _count_kick(self) -> None:
        self.kicked += 1

    def inputs_refused(self) -> Counter[str]:
        """Inputs refused by every match, ended ones included, by reason."""
        total = Counter(self.ended_refused)
        for match in self.matches:
            total.update(match.inputs_refused)
        return total

    def lobby_games(self) -> dict[str, type[Rules]]:
        """The games the lobby may create matches of, by name; looked up once (reading the
        installed games' metadata is file I/O, and what is installed does not change while
        the server runs)."""
        if self._lobby_games is None:
            names = self.config.lobby_games
            found: dict[str, type[Rules]] = {}
            for spec in {self.config.match.game, *(installed_games() if names is None else names)}:
                with contextlib.suppress(UnknownGame):  # named by --lobby-games but not installed
                    cls = load(spec)
                    found[cls.name] = cls
            self._lobby_games = dict(sorted(found.items()))
        return self._lobby_games

    async def create_match(self, game: str, config: dict[str, Any]) -> Match:
        """A match of ``game`` with ``config``, made in the lobby: it runs once (not replaced
        when it ends), new players reach it by its id only, and if nobody joins within
        ``CREATED_WAIT_S`` it goes without a trace in the log. Raises :class:`LobbyRefused`."""
        if self._games is None or self._stopping.is_set() or self.eventlog is None:
            raise LobbyRefused("the server is not taking new matches (it is starting or stopping)")
        games = self.lobby_games()
        if game not in games:
            raise LobbyRefused(f"this server's lobby does not run {game!r}; it runs {', '.join(games)}")
        if len(self.created) >= self.config.lobby_matches:
            raise LobbyRefused(
                f"{len(self.created)} matches made in the lobby are open, this server's limit; join one of them"
            )
        settings = self.config.match
        if game != settings.game:  # another game plays at its own rates
            tick_rate, send_rate = games[game].default_rates
            settings = replace(settings, tick_rate=tick_rate, send_rate=send_rate)
        try:
            match = Match(replace(settings, game=game, game_config=config), self.eventlog)
        except (ConfigError, UnknownGame) as exc:
            raise LobbyRefused(str(exc)) from None
        self.created.add(match)
        self._games.create_task(self._run_created(match), name=f"created-{match.match_id[:8]}")
        await match.opened.wait()  # listed and joinable once this returns
        return match

    async def _run_created(self, match: Match) -> None:
        def unjoined() -> None:
            if match.status == "waiting":
                match.stop()

        timer = asyncio.get_running_loop().call_later(CREATED_WAIT_S, unjoined)
        try:
            await self._run_match(match)
        finally:
            timer.cancel()
            self.created.discard(match)

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

    def _place(self, match_id: str = "") -> Match | None:
        """The match a new player joins: ``match_id`` if it is open, else by the placement policy."""
        if match_id:
            return next((m for m in self.matches if m.match_id == match_id and m.is_open()), None)
        open_matches = [m for m in self.matches if m.is_open() and m not in self.created]
        if not open_matches:
            return None
        if self.config.placement == "spread":
            return min(open_matches, key=lambda m: len(m.sessions))
        return open_matches[0]

    def _check_token(self, session: Session, hello: Hello) -> tokens.Claims | None:
        """The claims of the hello's connect token, its name now the session's; or None, the
        connection refused with the reason (counted as a kick)."""
        now = time.time()
        try:
            if not hello.connect_token:
                where = f"{self.http_url}lobby/token" if self.config.metrics_port is not None else "/lobby/token"
                raise tokens.TokenRefused(
                    f"this server requires a connect token: POST {where} for one, and send it as the "
                    "hello's connect_token (tickline bots: --lobby URL)"
                )
            claims = tokens.verify(self.token_key, hello.connect_token, now, self.address)
            if claims.match and hello.spectate and not claims.match.startswith(hello.spectate):
                raise tokens.TokenRefused(f"connect token is for match {claims.match}, not {hello.spectate}")
            if claims.match and not hello.spectate and not any(m.match_id == claims.match for m in self.matches):
                raise tokens.TokenRefused(
                    f"connect token is for match {claims.match}, which this server is not running"
                )
            self.used_tokens.use(claims, now)  # last: a token refused for another reason is not spent
        except tokens.TokenRefused as exc:
            session.fail(str(exc))
            self._count_kick()
            return None
        session.name = claims.name
        return claims

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

    async def _spectate(self, session: Session, prefix: str, follow: int) -> None:
        """A spectator: seat it in the running match its hello names, or stream it the match
        from the event log when it is over; or say plainly why not."""
        found = [m for m in self.matches if m.match_id.startswith(prefix)]
        if len(found) == 1 and not found[0].rules.is_over(found[0].state):
            match = found[0]
            why = match.can_spectate(follow)
            if not why:
                match.spectate(session, follow)
                return
        elif len(found) > 1:
            why = f"match id prefix {prefix} names {len(found)} matches; give more of the id"
        else:
            why = await self._rebroadcast(session, prefix, follow)
            if not why:
                return
        log.info("refused spectator from %s: %s", session.channel.peer, why)
        session.close(why)

    async def _rebroadcast(self, session: Session, prefix: str, follow: int) -> str:
        """Stream a recorded match to a spectator, as if live, until it ends; or why not."""
        assert self.eventlog is not None
        try:
            # The server's own engine: not disposed here (the reader does not own it).
            replay = await Replay.from_log(LogReader(self.eventlog.engine), prefix)
        except MatchNotFound:
            return f"no match {prefix} is running on this server or in its event log; /matches lists the running ones"
        except GameNotInstalled as exc:
            return str(exc)
        stream = Rebroadcast(replay, session, follow)
        why = stream.why_not()
        if why:
            return why
        self._streams.add(stream)
        try:
            await stream.run(asyncio.get_running_loop().time)
        finally:
            self._streams.discard(stream)
        return ""

    def accept(self, channel: Channel) -> Session:
        """A new connection from a transport beside the QUIC endpoint (the WebSocket fallback):
        its session, admitted as QUIC's are; closed with the reason while the server starts."""
        if not self.ready.is_set() and not self.stopping:
            session = self._session(channel)
            session.close("server is starting; try again in a moment")
            return session
        return self._accept(channel)

    def _session(self, channel: Channel) -> Session:
        clock = asyncio.get_running_loop().time
        return Session(channel, clock, self.config.inputs, self.config.ack_timeout, self.config.idle_timeout)

    def _accept(self, channel: Channel) -> Session:
        """Called by the transport for each new connection: its session."""
        session = self._session(channel)
        if self._games is None or self._stopping.is_set():
            session.close("server shutting down")
            return session
        self._admitting.add(session)
        self._games.create_task(self._admit(session))
        return session

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
        if hello.token:  # a reconnect token is credentials enough: no connect token needed
            self._resume(session, hello.token)
            return
        claims = None
        if hello.connect_token or self.config.tokens_required():
            claims = self._check_token(session, hello)
            if claims is None:
                return
        if hello.spectate:
            # A token that names a match pins the spectator to it (its prefix was checked).
            await self._spectate(session, claims.match if claims and claims.match else hello.spectate, hello.follow)
            return
        # A match that just ended is replaced within moments; wait that long.
        for _ in range(40):
            match = self._place(claims.match if claims else "")
            if match is not None:
                match.admit(session)
                return
            if self._stopping.is_set() or session.closed.is_set():
                break
            await asyncio.sleep(0.05)
        session.close("server shutting down" if self._stopping.is_set() else "no match has room; try again shortly")


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def _port_problem(exc: OSError, flag: str, port: int) -> Exception:
    """What a failed bind means for the person who chose ``flag``."""
    cause = exc.__cause__ if isinstance(exc.__cause__, OSError) else exc  # (uvloop wraps the errno's OSError)
    if errno.EADDRINUSE in (exc.errno, cause.errno):
        return ServerUnavailable(f"{flag} {port} is already in use; stop the other server or pick another {flag}")
    return ServerUnavailable(f"cannot listen on {flag} {port}: {_first_line(exc)}")


async def _check_addresses(host: str, port: int, http_host: str, http_port: int | None) -> None:
    """``--host`` and ``--http-host`` must name addresses of this machine, and the ports must
    be free there: said plainly before anything binds (the real binds check again)."""
    probes = [("--host", host, socket.SOCK_DGRAM, "--port", port)]
    if http_port is not None:
        probes.append(("--http-host", http_host, socket.SOCK_STREAM, "--http-port", http_port))
    for host_flag, address, kind, flag, number in probes:
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(address, None, type=kind)
        except socket.gaierror as exc:
            raise ConfigurationError(
                f"{host_flag} {address} does not resolve ({exc.strerror}); use an address of this "
                "machine, such as 127.0.0.1, ::1 or 0.0.0.0"
            ) from None
        family, _, _, _, addr = infos[0]
        for probe_port in (0, number) if number else (0,):
            with socket.socket(family, kind) as probe:
                if kind == socket.SOCK_STREAM:
                    probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the HTTP server binds
                try:
                    probe.bind((addr[0], probe_port))
                except OSError as exc:
                    if probe_port == 0:
                        raise ConfigurationError(
                            f"{host_flag} {address} is not an address of this machine ({exc.strerror}); "
                            "use one of its own, such as 127.0.0.1, ::1 or 0.0.0.0"
                        ) from None
                    raise _port_problem(exc, flag, number) from None


class _DataDirLock:
    """One server per data folder and server id: a second is refused while the first holds the lock
    (an advisory ``flock``, released by the kernel however the holder ends)."""

    def __init__(self, data_dir: Path, server_id: str) -> None:
        safe = re.sub(r"[^A-Za-z0-9._-]", "_", server_id)
        self.path = data_dir / f"serve-{safe}.lock"
        self.server_id = server_id
        self._fd: int | None = None

    def __enter__(self) -> _DataDirLock:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise ServerUnavailable(
                f"another tickline serve (pid {holder}) is running on {self.path.parent} as server "
                f"{self.server_id}; stop it, or give this one its own --data-dir"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return self

    def __exit__(self, *exc: object) -> None:
        if self._fd is not None:
            os.close(self._fd)  # releases the lock
            self._fd = None
