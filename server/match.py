"""A match: the fixed-tick game loop and the sessions of its players.

``Match.run`` is the match. It waits for the first player (a resumed match
starts at once), then runs ``_tick`` on absolute deadlines (tick n is due at
start + n/tick_rate, so lateness never accumulates into drift; a few matches
share each instant, server/ticker.py). One tick:

0. read the server's UDP socket (``intake``): every datagram queued since the
   last tick, in batches, so players' inputs reach their sessions' queues here
   rather than one loop wake-up per packet;
1. drain joins, leaves and each session's newest input (sessions only queue);
2. ``rules.step`` the state, hash it;
3. hand the tick's record to the event log (a queue put: the loop never awaits
   the database), and a keyframe of the whole state every ``keyframe_every``
   ticks;
4. every ``tick_rate / send_rate`` ticks, each session's view as a delta;
   with ``--durability tick`` these wait in ``_outbox`` until the event log
   reports the tick committed, so a client never sees a tick that a crash
   could lose.
5. flush the socket (``intake``): the tick's fast-path deltas leave now, not
   after the other matches that ticked at the same instant.

Before a tick, the loop checks that the event log has room; while it has
not (the writer is far behind, or the database is failing) the match pauses
rather than run on unrecorded.

A player whose connection drops (not one that said bye or was kicked) keeps
its place for ``grace_s`` with idle controls, and gets it back by presenting
the token from its welcome. Session tasks belong to the match's TaskGroup;
when the match ends, its sessions are told why and closed.

**Spectators** watch a match ``spectator_delay`` ticks behind it, and the
delay is the server's to keep, not the client's: a spectator is never sent a
view of a tick newer than the current tick minus the delay. While a match has
spectators, a ring (``_watched``) holds the last delay + 1 ticks and, for each
tick that is a send tick, the views spectators want of it: the whole-match
view (``rules.spectator_view``) if anyone watches the whole match, and
``rules.view(state, pid)`` (what that player was shown) for each player
someone follows. Each tick, spectators are sent the oldest entry, exactly
``delay`` ticks old, as deltas like a player's. A match without spectators
builds nothing. A spectator is not a player: it has no
place in ``sessions`` or the log, does not count towards ``max_players`` and
does not keep a match going. When the match ends its spectators get the
"over" event and the goodbye at once, not the delayed ticks still in the ring
(the result is no secret once the match is over).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any, Protocol

from tickline.server.eventlog import (
    EventLog,
    FencedOut,
    KeyframeRecord,
    MatchEnd,
    PlayerRecord,
    Recovered,
    TickRecord,
    token_hash,
)
from tickline.server.session import Departure, Session
from tickline.server.stats import Samples
from tickline.server.ticker import Ticker, TickSlots
from tickline.shared import native
from tickline.shared.game import ConfigError, Rules, State, TickInputs, state_hash
from tickline.shared.games import game_class, load
from tickline.shared.logformat import Divergence, MatchHeader, decode_state, replay_stored_tick
from tickline.shared.protocol import ACK_GRID, PROTOCOL_VERSION, Welcome

# Every player's input taken, and a view sent to all who share it, in one call each
# (server/link.py): native where built.
if TYPE_CHECKING:  # (both twins have the pure one's interface)
    from tickline.server._link_py import Link, send_views, take_inputs
else:
    _link = native.load("tickline.server", "link")
    send_views, take_inputs = _link.send_views, _link.take_inputs

log = logging.getLogger(__name__)


@dataclass(slots=True)
class MatchSettings:
    game: str = "arena"
    game_config: dict[str, Any] = field(default_factory=dict)
    tick_rate: int = 60
    send_rate: int = 30
    seed: int | None = None  # None: a fresh random seed per match
    keyframe_every: int = 0  # ticks between keyframes; 0: one per second
    grace_s: float = 20.0  # how long a dropped player's place is kept
    full_snapshots: bool = False  # send full snapshots, never deltas (a benchmark baseline)
    spectator_delay_s: float = 2.0  # how far behind the match spectators watch it


def rules_for(settings: MatchSettings) -> Rules:
    """The match's rules; a game whose config has a tick rate gets the match's."""
    cls = load(settings.game)
    config = dict(settings.game_config)
    if "tick_rate" in cls.default_config():
        if config.get("tick_rate", settings.tick_rate) != settings.tick_rate:
            raise ConfigError(
                f"the match's tick rate is {settings.tick_rate}: set it with --tick-rate, not --set tick_rate"
            )
        config["tick_rate"] = settings.tick_rate
    return cls(config)


def rebuild_state(rules: Rules, recovered: Recovered) -> State:
    """The state after the newest committed tick: the newest keyframe, then the ticks after it."""
    version = recovered.header.hash_version
    if recovered.keyframe is not None:
        kf_tick, data, kf_hash = recovered.keyframe
        state = rules.load_state(decode_state(data))
        if state_hash(state, version) != kf_hash:
            raise Divergence(kf_tick, f"keyframe at tick {kf_tick} does not match its stored hash")
        expected = kf_tick + 1
    else:
        state = rules.initial_state(recovered.header.seed)
        expected = 1
    for tick, payload, stored_hash in recovered.ticks:
        replay_stored_tick(rules, state, expected, tick, payload, stored_hash, version)
        expected += 1
    if expected - 1 != recovered.last_tick:
        raise Divergence(
            expected, f"the log says tick {recovered.last_tick} was committed, but it ends at {expected - 1}"
        )
    return state


class Intake(Protocol):
    """The server's UDP socket as a ticking match sees it (server/udp.py's UdpTransport)."""

    def ticking(self) -> AbstractContextManager[None]:
        """While inside, the match's ticks read the socket."""

    def drain(self) -> None:
        """Read and hand on every queued datagram."""

    def flush(self) -> None:
        """Send what the tick queued on the socket (its deltas), now."""


@dataclass(slots=True)
class _Watched:
    """One tick's views for spectators: the whole match's, and those of followed players."""

    tick: int
    whole: dict[str, Any] | None = None
    followed: dict[int, dict[str, Any]] = field(default_factory=dict)


class Match:
    def __init__(self, settings: MatchSettings, eventlog: EventLog, recovered: Recovered | None = None) -> None:
        self.settings = settings
        self._log = eventlog
        self.sessions: dict[int, Session] = {}
        self._links: dict[int, Link] = {}  # each player's session's link, as take_inputs reads them
        self._tokens: dict[int, str] = {}  # player id -> sha256 of its reconnect token
        self._away: dict[int, float] = {}  # player id -> when its place is given up (monotonic)
        self._joins: list[tuple[int, str]] = []
        self._leaves: list[int] = []
        self._idle: list[int] = []  # players whose controls go idle at the next tick
        # What the server refused of each player's since the last tick, for its record.
        self._refused: dict[int, Counter[str]] = {}
        self._new_players: list[PlayerRecord] = []
        self._outbox: deque[tuple[int, Callable[[], None]]] = deque()
        self.spectators: dict[Session, int] = {}  # -> its number, for the logs
        self._next_spectator = 1
        self._tg: asyncio.TaskGroup | None = None
        self._wake = asyncio.Event()
        self.opened = asyncio.Event()  # set once players can be admitted
        self._stopping = False
        self._fenced = False
        self._hold_sends = eventlog.settings.durability == "tick"
        self.committed = 0
        self._committed_event = asyncio.Event()
        if recovered is None:
            self.rules = rules_for(settings)
            self.match_id = uuid.uuid4().hex
            self.seed = settings.seed if settings.seed is not None else secrets.randbits(63)
            self.header = MatchHeader(
                match_id=self.match_id,
                game=self.rules.name,
                game_version=self.rules.version,
                seed=self.seed,
                config=self.rules.config,
                tick_rate=settings.tick_rate,
                send_rate=settings.send_rate,
                created_at=time.time(),
            )
            self.state = self.rules.initial_state(self.seed)
            self.tick = 0
            self._logged = False  # whether the header is in the event log
            self._next_player = 1
        else:
            self.header = recovered.header
            self.rules = game_class(self.header.game, self.header.game_version)(self.header.config)
            self.match_id, self.seed = self.header.match_id, self.header.seed
            self.state = rebuild_state(self.rules, recovered)
            self.tick = self.committed = recovered.last_tick
            self._logged = True
            self._tokens = {pid: digest for pid, _name, digest in recovered.players}
            self._next_player = max(self._tokens, default=0) + 1
        self._tick_rate = self.header.tick_rate
        self._send_every = max(1, self.header.tick_rate // self.header.send_rate)
        # When every tick is sent, players whose inputs (which carry their acks) go out at half
        # the tick rate or less ack ticks of both parities, and half of a room's diffs are
        # against the other half's baseline: on a grid of two ticks they ack the same ones.
        # (Sent less often, the ticks they ack are the sent ones, which they share already.)
        self.ack_every = 2 if self._send_every == 1 else 0
        self._keyframe_every = settings.keyframe_every or self.header.tick_rate
        self.spectator_delay = round(settings.spectator_delay_s * self._tick_rate)  # in ticks
        # The spectators' views of the last spectator_delay + 1 ticks, oldest first (while any watch).
        self._watched: deque[_Watched] = deque(maxlen=self.spectator_delay + 1)
        self.resumed_at = self.tick if recovered is not None else None
        self.status = "waiting"
        # figures
        self.tick_late = Samples()
        self.tick_work = Samples()
        self.inputs_applied = 0
        self.inputs_refused: Counter[str] = Counter()  # by reason ("kicked" for every kick)
        self.players_seen = 0
        self.spectators_seen = 0
        self.ticker: Ticker | None = None  # the schedule, once the first tick is due
        self.pauses = 0
        self.paused_s = 0.0
        self._bytes_down_gone = 0  # from sessions that have left
        self.kicked = 0
        # Hooks for the server's metrics: (lateness_s, duration_s) per tick; a kick.
        self.on_tick: Callable[[float, float], None] | None = None
        self.on_kick: Callable[[], None] | None = None
        # The server's UDP socket, read at the start of every tick (server/udp.py); None: the
        # event loop reads it as packets come (a match run without a server, in tests).
        self.intake: Intake | None = None
        # The server's tick slots (server/ticker.py): which phase of the interval this match
        # ticks at, shared with up to a few others. None: phase 0 (a match run without a server).
        self.slots: TickSlots | None = None

    # ------------------------------------------------------------ players

    def is_open(self) -> bool:
        """Whether a new player may join now."""
        return (
            self._tg is not None
            and not self._stopping
            and not self.rules.is_over(self.state)
            and len(self.sessions) + len(self._away) < self.rules.max_players()
        )

    def admit(self, session: Session) -> None:
        """Seat a new player: a player id, a reconnect token, a welcome, a task in this match."""
        assert self._tg is not None and self.is_open()
        player_id = self._next_player
        self._next_player += 1
        token = f"{self.match_id}.{player_id}.{secrets.token_urlsafe(18)}"
        self._tokens[player_id] = token_hash(token)
        self._new_players.append(PlayerRecord(self.match_id, player_id, session.name, self._tokens[player_id]))
        self._joins.append((player_id, session.name))
        self.players_seen += 1
        self._seat(session, player_id, token, self.tick + 1)
        log.info(
            "match %s: player %d (%s) joined from %s", self.match_id[:8], player_id, session.name, session.channel.peer
        )

    def can_resume(self, player_id: int, token: str) -> bool:
        expected = self._tokens.get(player_id)
        return (
            expected is not None
            and self._tg is not None
            and not self._stopping
            and secrets.compare_digest(expected, token_hash(token))
            and (player_id in self.sessions or player_id in self._away)
        )

    def resume(self, session: Session, player_id: int, token: str) -> None:
        """Give a returning client its player back (see can_resume)."""
        assert self.can_resume(player_id, token)
        old = self.sessions.get(player_id)
        if old is not None:
            old.close("replaced by a new connection from the same player")
        self._away.pop(player_id, None)
        self._seat(session, player_id, token, self.tick)
        log.info("match %s: player %d reconnected from %s", self.match_id[:8], player_id, session.channel.peer)

    def _seat(self, session: Session, player_id: int, token: str, tick: int) -> None:
        assert self._tg is not None
        self.sessions[player_id] = session
        self._links[player_id] = session.link
        welcome = Welcome(
            version=PROTOCOL_VERSION,
            player_id=player_id,
            match_id=self.match_id,
            game=self.rules.name,
            game_version=self.rules.version,
            tick_rate=self._tick_rate,
            send_rate=self.header.send_rate,
            tick=tick,
            token=token,
            config=self.rules.config,
            ack_every=self.ack_every if ACK_GRID in session.caps else 0,
        )
        session.join(self, player_id)
        # The welcome promises a player that exists once ``tick`` is in the log.
        self._deliver(tick, lambda: session.send_welcome(welcome))
        self._tg.create_task(session.run(), name=f"session-{self.match_id[:8]}-{player_id}")
        self._wake.set()

    # ------------------------------------------------------------ spectators

    def can_spectate(self, follow: int) -> str:
        """Why a spectator of ``follow`` (0: the whole match) cannot watch now; "" when it can."""
        if self._stopping or self.rules.is_over(self.state):
            return f"match {self.match_id} is over; replay it from the event log"
        if self._tg is None:
            return f"match {self.match_id} is not open yet; try again shortly"
        if follow and follow not in self._tokens:
            return f"match {self.match_id} has no player {follow} to follow"
        return ""

    def spectate(self, session: Session, follow: int) -> None:
        """Seat a spectator: a welcome with player id 0 and the delay, a task in this match."""
        assert self._tg is not None and not self.can_spectate(follow)
        number = self._next_spectator
        self._next_spectator += 1
        self.spectators_seen += 1
        self.spectators[session] = number
        session.watch(self, follow)
        session.send_welcome(
            Welcome(
                version=PROTOCOL_VERSION,
                player_id=0,
                match_id=self.match_id,
                game=self.rules.name,
                game_version=self.rules.version,
                tick_rate=self._tick_rate,
                send_rate=self.header.send_rate,
                tick=self.tick,
                config=self.rules.config,
                spectator_delay=self.spectator_delay,
            )
        )
        self._tg.create_task(session.run(), name=f"spectator-{self.match_id[:8]}-{number}")
        log.info(
            "match %s: spectator %d (%s) watching %s, %d ticks behind, from %s",
            self.match_id[:8],
            number,
            session.name,
            f"player {follow}" if follow else "the whole match",
            self.spectator_delay,
            session.channel.peer,
        )

    def _watch(self, tick: int, views: dict[Any, dict[str, Any]], encoded: dict[Any, bytes]) -> None:
        """Keep this tick's spectator views; send each spectator the views of ``delay`` ticks ago."""
        # Views go out every send_every ticks: those of the ticks between are never built.
        self._watched.append(self._spectator_views(tick, views) if tick % self._send_every == 0 else _Watched(tick))
        # Only the oldest entry is sent: the ring holds delay + 1 ticks, so once it is
        # full its oldest is exactly delay ticks old, and before that it is too new.
        oldest = self._watched[0]
        shown = tick - self.spectator_delay
        if oldest.tick != shown:
            return
        full = self.settings.full_snapshots
        for session in self.spectators:
            view = oldest.whole if session.follow == 0 else oldest.followed.get(session.follow)
            if view is not None:  # None: not a send tick, or a view nobody watched delay ticks ago
                self._deliver(shown, partial(session.send_view, shown, view, encoded, full, tick))

    def _spectator_views(self, tick: int, views: dict[Any, dict[str, Any]]) -> _Watched:
        """This tick's views for the spectators: the whole match's and each followed player's, as wanted."""
        state, rules = self.state, self.rules
        watched = _Watched(tick)
        for session in self.spectators:
            pid = session.follow
            if pid == 0:
                if watched.whole is None:
                    watched.whole = rules.spectator_view(state)
            elif pid not in watched.followed:
                # The very view the player got, when it got one at this tick (``views``).
                key = rules.view_key(state, pid)
                view = views.get(key)
                if view is None:
                    view = views[key] = rules.view(state, pid)
                watched.followed[pid] = view
        return watched

    def leave(self, session: Session) -> None:
        """Called by the session task when its connection ends."""
        if session.spectating:
            self._spectator_left(session)
            return
        player_id = session.player_id
        self._take_refused(session)
        if self.sessions.get(player_id) is not session:
            return  # replaced by a newer connection of the same player
        del self.sessions[player_id]
        del self._links[player_id]
        self._bytes_down_gone += session.bytes_down
        if session.departure is Departure.LOST and not self._stopping and self.settings.grace_s > 0:
            self._away[player_id] = time.monotonic() + self.settings.grace_s
            self._idle.append(player_id)
            log.info(
                "match %s: player %d lost its connection (%s); its place is kept %g s",
                self.match_id[:8],
                player_id,
                session.close_reason,
                self.settings.grace_s,
            )
        else:
            self._leaves.append(player_id)
            log.info("match %s: player %d left (%s)", self.match_id[:8], player_id, session.close_reason)
        self._count_kick(session)

    def _spectator_left(self, session: Session) -> None:
        number = self.spectators.pop(session, None)
        if number is None:
            return
        self._take_refused(session)
        self._bytes_down_gone += session.bytes_down
        if not self.spectators:
            self._watched.clear()  # nobody watches: the ring's memory goes, and its cost
        log.info("match %s: spectator %d left (%s)", self.match_id[:8], number, session.close_reason)
        self._count_kick(session)

    def _take_refused(self, session: Session) -> None:
        """Count what the server refused of ``session`` since the last look; a player's goes
        in the next tick's record as well (a spectator's has no place in the match)."""
        refused = session.refused
        if not refused:
            return
        for reason, count in refused.items():
            self.inputs_refused[reason.partition(":")[0]] += count
        if session.player_id:
            self._refused.setdefault(session.player_id, Counter()).update(refused)
        refused.clear()

    def _count_kick(self, session: Session) -> None:
        if session.departure is Departure.KICKED:
            self.kicked += 1
            if self.on_kick is not None:
                self.on_kick()

    def stop(self) -> None:
        """End the match after the current tick (server shutdown)."""
        self._stopping = True
        self._wake.set()

    # ------------------------------------------------------------ the loop

    async def run(self) -> None:
        """The match, from its first tick to its last record. Returns when it ends or is stopped."""
        self._log.watch(self.match_id, self._on_commit, self._on_fenced)
        reason = "server shutting down"
        try:
            async with asyncio.TaskGroup() as tg:
                self._tg = tg
                self.opened.set()
                try:
                    await self._tick_loop()
                    if self.rules.is_over(self.state):
                        reason = "match over"
                        self._announce_end()
                    elif self._fenced:
                        reason = "this match moved to another server"
                    elif not self._stopping:
                        reason = "every player left"
                    await self._flush_outbox()
                    await self._say_goodbye(reason)
                finally:
                    self._tg = None
                    for session in [*self.sessions.values(), *self.spectators]:
                        session.close(reason)
        finally:
            self._end_in_log()

    async def _tick_loop(self) -> None:
        if self.resumed_at is None:
            while not self.sessions and not self._stopping:
                await self._wake.wait()
                self._wake.clear()
            if self._stopping:
                return
            # The header is written when the first player is in, so a match nobody
            # played leaves nothing in the log.
            await self._log.create_match(self.header)
            self._logged = True
        else:
            deadline = time.monotonic() + self.settings.grace_s
            present = set(self.rules.players(self.state))
            self._away = {pid: deadline for pid in self._tokens if pid in present}
            log.info(
                "match %s resumed at tick %d; %d players may reconnect",
                self.match_id[:8],
                self.tick + 1,
                len(self._away),
            )
        self.status = "running"
        with self.intake.ticking() if self.intake is not None else contextlib.nullcontext():
            await self._ticks()

    async def _ticks(self) -> None:
        slots = self.slots
        slot, phase = slots.take(self._tick_rate) if slots is not None else (0, 0.0)
        try:
            await self._ticks_at(phase)
        finally:
            if slots is not None:
                slots.release(self._tick_rate, slot)

    async def _ticks_at(self, phase: float) -> None:
        clock = asyncio.get_running_loop().time
        ticker = self.ticker = Ticker(self._tick_rate, clock(), phase=phase)
        intake = self.intake
        while not self._stopping and not self.rules.is_over(self.state):
            if not self.sessions and not self._away and not self._joins:
                break  # everyone has gone
            if not self._log.has_room():
                await self._pause()
                ticker.restart(clock())
            # A stall longer than the ticker's max_behind_s restarts its schedule;
            # the tick still counts its whole lateness.
            late = await ticker.wait(clock)
            if intake is not None:
                intake.drain()  # every datagram that came since the last tick, inputs among them
            began = clock()
            self._tick()
            work = clock() - began
            if intake is not None:
                intake.flush()  # its deltas leave now, not after the other matches of its slot
            self.tick_late.add(late)
            self.tick_work.add(work)
            if self.on_tick is not None:
                self.on_tick(late, work)

    async def _pause(self) -> None:
        began = time.monotonic()
        self.pauses += 1
        log.warning(
            "match %s paused at tick %d: the event log is %s",
            self.match_id[:8],
            self.tick,
            f"failing ({self._log.failing})" if self._log.failing else f"{self._log.queued()} records behind",
        )
        while not self._log.has_room() and not self._stopping:
            # Until the writer has room again, or the match is told to stop (which wakes it).
            self._wake.clear()
            room = asyncio.ensure_future(self._log.wait_for_room())
            woken = asyncio.ensure_future(self._wake.wait())
            try:
                await asyncio.wait((room, woken), return_when=asyncio.FIRST_COMPLETED)
            finally:
                room.cancel()
                woken.cancel()
        self.paused_s += time.monotonic() - began
        log.warning("match %s resumed after a %.1f s pause", self.match_id[:8], time.monotonic() - began)

    def _tick(self) -> None:
        inputs = TickInputs(joins=self._joins, leaves=self._leaves)
        self._joins, self._leaves = [], []
        if self._away:
            now = time.monotonic()
            for player_id in [pid for pid, until in self._away.items() if until <= now]:
                del self._away[player_id]
                inputs.leaves.append(player_id)
                log.info("match %s: player %d did not come back in time", self.match_id[:8], player_id)
        for player_id in self._idle:
            inputs.inputs[player_id] = self.rules.idle_input()
        self._idle.clear()
        # (every player's next input in one call: server/link.py, native where built)
        applied, refused = take_inputs(self._links, self.tick + 1, inputs.seqs, inputs.inputs)
        self.inputs_applied += applied
        for player_id in refused:
            self._take_refused(self.sessions[player_id])
        for spectator in self.spectators:
            if spectator.refused:
                self._take_refused(spectator)
        if self._refused:
            inputs.refused = {pid: dict(counts) for pid, counts in self._refused.items()}
            self._refused.clear()
        # In the order a replay reads them back (by player id), so that rules that iterate
        # them as given step the same live and in replay.
        inputs.joins.sort()
        inputs.leaves.sort()
        if len(inputs.inputs) > 1:
            inputs.inputs = dict(sorted(inputs.inputs.items()))
        events = self.rules.step(self.state, inputs)
        self.tick = tick = self.tick + 1
        digest = state_hash(self.state, self.header.hash_version)  # (a resumed match's: as logged)
        for record in self._new_players:
            self._log.add_player(record)
        self._new_players.clear()
        self._log.append(TickRecord(self.match_id, tick, inputs.to_record(), events, digest))
        over = self.rules.is_over(self.state)
        if tick % self._keyframe_every == 0 or over:
            self._log.add_keyframe(KeyframeRecord(self.match_id, tick, self.rules.dump_state(self.state), digest))
        # Each player gets every send_every-th tick. Players with views of their
        # own are spread over the phases so that no tick does every send (a
        # 96-player match's send ticks were its lateness tail); players who share
        # one view share a phase, and so one view and, when their baselines
        # match too, one encoded diff. The last tick goes to everyone.
        phase = tick % self._send_every
        views: dict[Any, dict[str, Any]] = {}
        encoded: dict[Any, bytes] = {}
        full = self.settings.full_snapshots
        rules, state = self.rules, self.state
        hold = self._held(tick)  # (decided once for the tick: then each send waits in _outbox)
        sharing: dict[Any, list[Link]] = {}  # view key -> the links of the players shown that view
        # (this loop runs for every player every tick: its lookups are made once)
        view_key, send_every = rules.view_key, self._send_every
        in_phase_only = send_every > 1 and not over
        for player_id, link in self._links.items():
            key = view_key(state, player_id)
            if in_phase_only and (key if type(key) is int else hash(key)) % send_every != phase:
                continue
            group = sharing.get(key)
            if group is None:
                views[key] = rules.view(state, player_id)
                group = sharing[key] = []
            group.append(link)
        for key, group in sharing.items():
            if hold:
                self._outbox.append((tick, partial(self._send_views, group, tick, views[key], encoded, full)))
            else:
                self._send_views(group, tick, views[key], encoded, full)
        if self.spectators:
            self._watch(tick, views, encoded)

    @staticmethod
    def _send_views(links: list[Link], tick: int, view: dict[str, Any], encoded: dict[Any, bytes], full: bool) -> None:
        """``view`` to each of ``links`` in one call (server/link.py), but for deltas too big
        for a datagram, which each link's session sends itself."""
        for link, body in send_views(links, tick, view, encoded, full):
            link.owner.send_oversized(tick, view, body)

    # ------------------------------------------------------------ delivery after commit

    def _held(self, tick: int) -> bool:
        """Whether what ``tick`` shows must wait for its commit (tick durability)."""
        return self._hold_sends and tick > self.committed

    def _deliver(self, tick: int, send: Callable[[], None]) -> None:
        """Send now, or, with tick durability, once ``tick`` is committed."""
        if self._held(tick):
            self._outbox.append((tick, send))
        else:
            send()

    def _on_commit(self, tick: int) -> None:
        self.committed = tick
        while self._outbox and self._outbox[0][0] <= tick:
            self._outbox.popleft()[1]()
        if tick >= self.tick:
            self._committed_event.set()

    def _on_fenced(self, exc: FencedOut) -> None:
        self._fenced = True
        self._outbox.clear()
        self.stop()

    async def _flush_outbox(self) -> None:
        """Wait (briefly) for the last ticks to commit, so their deltas still go out."""
        if not self._outbox or self._fenced:
            return
        self._committed_event.clear()
        if self.committed < self.tick:
            try:
                async with asyncio.timeout(5):
                    await self._committed_event.wait()
            except TimeoutError:
                log.warning(
                    "match %s: last ticks not committed within 5 s; their deltas are not sent", self.match_id[:8]
                )

    async def _say_goodbye(self, reason: str, grace_s: float = 2.0) -> None:
        """Every client is told why on its control stream and closes; then the rest are closed."""
        sessions = [*self.sessions.values(), *self.spectators]
        for session in sessions:
            session.say_goodbye(reason)
        try:
            async with asyncio.timeout(grace_s):
                for session in sessions:
                    await session.closed.wait()
        except TimeoutError:
            pass

    def _announce_end(self) -> None:
        data = self.rules.result(self.state)
        for session in [*self.sessions.values(), *self.spectators]:
            self._deliver(self.tick, partial(session.send_event, self.tick, "over", data))

    def _end_in_log(self) -> None:
        if self.rules.is_over(self.state):
            self.status = "finished"
        elif self._fenced:
            self.status = "fenced"
        elif self._stopping:
            self.status = "stopped"
        else:
            self.status = "abandoned"
        if not self._logged or self._fenced:
            return
        self._log.end_match(
            MatchEnd(
                match_id=self.match_id,
                status=self.status,
                last_tick=self.tick,
                final_hash=state_hash(self.state, self.header.hash_version),
                stats=self.figures(),
            )
        )
        log.info("match %s %s at tick %d", self.match_id[:8], self.status, self.tick)

    # ------------------------------------------------------------ figures

    @property
    def catch_ups(self) -> int:
        """Times the schedule restarted after a stall (``Ticker.catch_ups``)."""
        return self.ticker.catch_ups if self.ticker is not None else 0

    def live_figures(self) -> dict[str, int]:
        return {
            "players": len(self.sessions),
            "away": len(self._away),
            "spectators": len(self.spectators),
            "bytes_down": self._bytes_down_gone + self._bytes_down_live(),
        }

    def _bytes_down_live(self) -> int:
        return sum(s.bytes_down for s in self.sessions.values()) + sum(s.bytes_down for s in self.spectators)

    def figures(self) -> dict[str, Any]:
        bytes_down = self._bytes_down_gone + self._bytes_down_live()
        return {
            "ticks": self.tick,
            "tick_rate": self._tick_rate,
            "send_rate": self.header.send_rate,
            "players_seen": self.players_seen,
            "spectators_seen": self.spectators_seen,
            "inputs_applied": self.inputs_applied,
            "inputs_refused": dict(sorted(self.inputs_refused.items())),
            "tick_phase_ms": round(self.ticker.phase * 1000, 3) if self.ticker is not None else None,
            "tick_late_ms": self.tick_late.summary(1000),
            "tick_work_ms": self.tick_work.summary(1000),
            "catch_ups": self.catch_ups,
            "pauses": self.pauses,
            "paused_s": round(self.paused_s, 3),
            "resumed_at": self.resumed_at,
            "bytes_down": bytes_down,
        }
