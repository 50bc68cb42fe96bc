"""A match: the fixed-tick game loop and the sessions of its players.

``Match.run`` is the match. It waits for the first player, then runs
``_tick`` on absolute deadlines (tick n is due at start + n/tick_rate, so
lateness never accumulates into drift). One tick:

1. drain joins, leaves and each session's newest input (sessions only queue);
2. ``rules.step`` the state, hash it;
3. hand the tick's record to the event log (a queue put: the loop never awaits
   the database);
4. every ``tick_rate / send_rate`` ticks, send each session its view as a delta.

Session tasks belong to the match's TaskGroup; when the match ends, its
sessions are told why and closed, and the match's end is logged after its
last tick.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from server.eventlog import EventLog, MatchEnd, TickRecord
from server.session import Session
from server.stats import Samples
from shared.game import Rules, TickInputs, state_hash
from shared.games import game_class
from shared.logformat import MatchHeader
from shared.protocol import PROTOCOL_VERSION, Hello, Welcome

log = logging.getLogger("tickline.match")

# Further behind than this, the loop stops trying to catch up and restarts its
# schedule from now: a burst of catch-up ticks helps no player.
MAX_BEHIND_S = 0.25


@dataclass(slots=True)
class MatchSettings:
    game: str = "arena"
    game_config: dict[str, Any] = field(default_factory=dict)
    tick_rate: int = 60
    send_rate: int = 30
    seed: int | None = None  # None: a fresh random seed per match


def rules_for(settings: MatchSettings) -> Rules:
    """The match's rules; a game whose config has a tick rate gets the match's."""
    cls = game_class(settings.game)
    config = dict(settings.game_config)
    if "tick_rate" in cls.default_config():
        config["tick_rate"] = settings.tick_rate
    return cls(config)


class Match:
    def __init__(self, settings: MatchSettings, eventlog: EventLog) -> None:
        self.rules = rules_for(settings)
        self.settings = settings
        self.match_id = uuid.uuid4().hex
        self.seed = settings.seed if settings.seed is not None else secrets.randbits(63)
        self.header = MatchHeader(
            match_id=self.match_id, game=self.rules.name, game_version=self.rules.version,
            seed=self.seed, config=self.rules.config, tick_rate=settings.tick_rate,
            send_rate=settings.send_rate, created_at=time.time(),
        )
        self.state = self.rules.initial_state(self.seed)
        self.tick = 0
        self._log = eventlog
        self._send_every = settings.tick_rate // settings.send_rate
        self.sessions: dict[int, Session] = {}
        self._next_player = 1
        self._joins: list[tuple[int, str]] = []
        self._leaves: list[int] = []
        self._tg: asyncio.TaskGroup | None = None
        self._wake = asyncio.Event()
        self.opened = asyncio.Event()  # set once players can be admitted
        self._stopping = False
        self.status = "waiting"
        self._logged = False  # whether the header is in the event log
        # figures
        self.tick_late = Samples()
        self.tick_work = Samples()
        self.inputs_applied = 0
        self.players_seen = 0
        self._bytes_down_gone = 0  # from sessions that have left
        self.catch_ups = 0

    # ------------------------------------------------------------ players

    def is_open(self) -> bool:
        """Whether a new player may join now."""
        return (
            self._tg is not None
            and not self._stopping
            and not self.rules.is_over(self.state)
            and len(self.sessions) < self.rules.max_players()
        )

    def admit(self, session: Session, hello: Hello) -> None:
        """Seat a session that said hello: a player id, a welcome, a task in this match."""
        assert self._tg is not None and self.is_open()
        player_id = self._next_player
        self._next_player += 1
        self.sessions[player_id] = session
        self._joins.append((player_id, session.name))
        self.players_seen += 1
        session.join(self, player_id, Welcome(
            version=PROTOCOL_VERSION, player_id=player_id, match_id=self.match_id,
            game=self.rules.name, game_version=self.rules.version,
            tick_rate=self.settings.tick_rate, send_rate=self.settings.send_rate, tick=self.tick,
        ))
        self._tg.create_task(session.run(), name=f"session-{self.match_id[:8]}-{player_id}")
        log.info("match %s: player %d (%s) joined from %s", self.match_id[:8], player_id, session.name, session.channel.peer)
        self._wake.set()

    def leave(self, session: Session) -> None:
        """Called by the session task when its connection ends."""
        if self.sessions.pop(session.player_id, None) is not None:
            self._leaves.append(session.player_id)
            self._bytes_down_gone += session.bytes_down
            log.info("match %s: player %d left (%s)", self.match_id[:8], session.player_id, session.close_reason)

    def stop(self) -> None:
        """End the match after the current tick (server shutdown)."""
        self._stopping = True
        self._wake.set()

    # ------------------------------------------------------------ the loop

    async def run(self) -> None:
        """The match, from header to last record. Returns when it ends or is stopped."""
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
                finally:
                    self._tg = None
                    for session in list(self.sessions.values()):
                        session.close(reason)
        finally:
            self.status = "finished" if self.rules.is_over(self.state) else "stopped"
            if self._logged:
                self._log.end_match(MatchEnd(
                    match_id=self.match_id, status=self.status, last_tick=self.tick,
                    final_hash=state_hash(self.state), stats=self.figures(),
                ))
                log.info("match %s %s at tick %d", self.match_id[:8], self.status, self.tick)

    async def _tick_loop(self) -> None:
        while not self.sessions and not self._stopping:
            await self._wake.wait()
            self._wake.clear()
        if self._stopping:
            return
        # The header is written when the first player is in, so a match nobody
        # played leaves nothing in the log.
        await self._log.create_match(self.header)
        self._logged = True
        self.status = "running"
        loop = asyncio.get_running_loop()
        dt = 1.0 / self.settings.tick_rate
        start = loop.time()
        n = 0
        while not self._stopping and not self.rules.is_over(self.state):
            deadline = start + n * dt
            delay = deadline - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            now = loop.time()
            late = now - deadline
            if late > MAX_BEHIND_S:
                start, n, late = now, 0, 0.0
                self.catch_ups += 1
            self.tick_late.add(late)
            self._tick()
            self.tick_work.add(loop.time() - now)
            n += 1

    def _tick(self) -> None:
        inputs = TickInputs(joins=self._joins, leaves=self._leaves)
        self._joins, self._leaves = [], []
        for player_id, session in self.sessions.items():
            controls = session.take_input()
            if controls is not None:
                inputs.inputs[player_id] = controls
        self.inputs_applied += len(inputs.inputs)
        events = self.rules.step(self.state, inputs)
        self.tick = tick = self.state["tick"]
        self._log.append(TickRecord(
            match_id=self.match_id, tick=tick, inputs=inputs.to_record(), events=events,
            hash=state_hash(self.state),
        ))
        if tick % self._send_every == 0 or self.rules.is_over(self.state):
            for player_id, session in self.sessions.items():
                session.send_view(tick, self.rules.view(self.state, player_id))

    def _announce_end(self) -> None:
        players = self.state.get("players", {})
        scores = {str(pid): p.get("score", 0) for pid, p in players.items()}
        for session in self.sessions.values():
            session.send_event(self.tick, "over", {"winner": self.state.get("winner", 0), "scores": scores})

    # ------------------------------------------------------------ figures

    def figures(self) -> dict[str, Any]:
        bytes_down = self._bytes_down_gone + sum(s.bytes_down for s in self.sessions.values())
        return {
            "ticks": self.tick,
            "tick_rate": self.settings.tick_rate,
            "send_rate": self.settings.send_rate,
            "players_seen": self.players_seen,
            "inputs_applied": self.inputs_applied,
            "tick_late_ms": self.tick_late.summary(1000),
            "tick_work_ms": self.tick_work.summary(1000),
            "catch_ups": self.catch_ups,
            "bytes_down": bytes_down,
        }
