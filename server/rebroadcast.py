"""A recorded match streamed to a spectator as if it were live.

A spectator whose hello names a match that is not running here, but is in the
event log, gets that match from the log (``tickline.replays``' public replay
API), re-simulated tick by tick at the match's own tick rate: the same welcome
(player id 0, no delay: the match is over, it hides nothing), the same deltas
against the same acknowledged baselines, the same "over" event and goodbye as
a live match's spectator. The client cannot tell the two apart, except by the
match being over on the server.

One :class:`Rebroadcast` serves one spectator and runs in that spectator's
admission task; the server stops it on shutdown. Each tick re-simulates on
the event loop, as a match's own tick does (a tick of the reference games costs
microseconds to a tenth of a millisecond).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from tickline.replays.replay import Replay
from tickline.server.session import Session
from tickline.server.ticker import Ticker
from tickline.shared.game import Rules
from tickline.shared.logformat import Divergence
from tickline.shared.protocol import PROTOCOL_VERSION, Welcome

log = logging.getLogger(__name__)


class Rebroadcast:
    """One recorded match, played to one spectator at the pace it was played."""

    def __init__(self, replay: Replay, session: Session, follow: int) -> None:
        self.replay = replay
        self.session = session
        self.follow = follow
        self.rules: Rules = replay.rules
        self.match_id = replay.header.match_id
        self.tick = 0
        self._result: dict[str, Any] = {}
        self._stopping = asyncio.Event()

    def why_not(self) -> str:
        """Why this match cannot be shown to this spectator ("" when it can)."""
        if self.replay.ticks == 0:
            return f"match {self.match_id} has no ticks recorded yet"
        if self.follow and self.follow not in self.replay.players():
            return f"match {self.match_id} has no player {self.follow} to follow"
        return ""

    def leave(self, session: Session) -> None:
        """The spectator's connection ended (called by its session task)."""
        self._stopping.set()

    def stop(self) -> None:
        """End the stream (server shutdown)."""
        self._stopping.set()
        self.session.close("server shutting down")

    async def run(self, clock: Callable[[], float]) -> None:
        """Stream the whole match, then say it is over and close."""
        header = self.replay.header
        session = self.session
        session.watch(self, self.follow)
        session.send_welcome(
            Welcome(
                version=PROTOCOL_VERSION,
                player_id=0,
                match_id=self.match_id,
                game=header.game,
                game_version=self.rules.version,
                tick_rate=header.tick_rate,
                send_rate=header.send_rate,
                tick=0,
                config=self.rules.config,
                spectator_delay=0,
            )
        )
        log.info(
            "recorded match %s streamed to a spectator (%s) from %s",
            self.match_id[:8],
            f"player {self.follow}" if self.follow else "the whole match",
            session.channel.peer,
        )
        async with asyncio.TaskGroup() as tg:
            tg.create_task(session.run(), name=f"rebroadcast-session-{self.match_id[:8]}")
            await self._play(clock)
            if not session.closed.is_set():
                await self._end()

    async def _play(self, clock: Callable[[], float]) -> None:
        replay, session = self.replay, self.session
        send_every = max(1, replay.header.tick_rate // replay.header.send_rate)
        ticker = Ticker(replay.header.tick_rate, clock())
        last = replay.ticks
        try:
            for frame in replay.frames(1):
                await ticker.wait(clock)
                if self._stopping.is_set():
                    return
                self.tick = frame.tick
                self._result = self.rules.result(frame.state) if frame.tick == last else {}
                if frame.tick % send_every == 0 or frame.tick == last:
                    state = frame.state
                    view = replay.full_view(state) if self.follow == 0 else replay.view(state, self.follow)
                    session.send_view(frame.tick, view, None, False, frame.tick)
        except Divergence as exc:  # the log does not replay to its own hashes: show nothing false
            log.warning("recorded match %s stopped at tick %d: %s", self.match_id[:8], exc.tick, exc)
            session.close(f"match {self.match_id} cannot be replayed past tick {exc.tick}: it does not verify")

    async def _end(self, grace_s: float = 2.0) -> None:
        session = self.session
        session.send_event(self.tick, "over", self._result)
        session.say_goodbye("recorded match over")
        try:
            async with asyncio.timeout(grace_s):
                await session.closed.wait()
        except TimeoutError:
            session.close("recorded match over")
