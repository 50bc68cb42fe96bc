"""`tickline play`: the desktop client's real frame loop, under SDL's dummy video driver,
against a real server. Keys are posted as pygame events from a task of the same event
loop, as a keyboard would put them in SDL's queue; the server's state says what happened."""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Callable
from typing import Any

import pytest

pygame = pytest.importorskip("pygame")

from tests.support import until  # noqa: E402
from tickline.play import add_arguments, play  # noqa: E402
from tickline.server.match import Match  # noqa: E402
from tickline.server.session import Departure  # noqa: E402

UNIT = 100  # fixed units per world unit, as the server's state holds positions


async def _until(condition: Callable[[], object], timeout: float, what: str) -> None:
    try:
        await until(condition, timeout, every=0.005)
    except TimeoutError:
        pytest.fail(f"timed out after {timeout} s waiting for {what}")


async def _settled_x(match: Match, ticks: int, timeout: float) -> int:
    """The player's x once the server has kept it unchanged for ``ticks`` ticks."""
    x: int = match.state["players"][1]["x"]
    since = match.tick

    def still() -> bool:
        nonlocal x, since
        now: int = match.state["players"][1]["x"]
        if now != x:
            x, since = now, match.tick
        return match.tick - since >= ticks

    await _until(still, timeout, f"the player to stand still for {ticks} ticks")
    return x


def _key(kind: int, key: int) -> None:
    pygame.event.post(pygame.event.Event(kind, key=key, mod=0, unicode="", scancode=0))


async def test_play_moves_the_player_as_its_keys_say(start_server, monkeypatch):
    monkeypatch.setenv("SDL_VIDEODRIVER", "dummy")
    monkeypatch.setenv("SDL_AUDIODRIVER", "dummy")
    srv = await start_server(game_config={"time_limit_s": 60, "view_radius": 0})
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(
        [f"127.0.0.1:{srv.port}", "--name", "keys", "--cafile", str(srv.cert), "--size", "400x300", "--seconds", "60"]
    )
    assert args.server == ("127.0.0.1", srv.port) and args.size == (400, 300)

    client = asyncio.create_task(play(args))
    try:
        await _until(
            lambda: (
                client.done()
                or (
                    srv.server.matches
                    and 1 in srv.server.matches[0].state["players"]
                    and pygame.display.get_init()
                    and pygame.display.get_surface() is not None
                )
            ),
            15,
            "the client to join and open its window",
        )
        assert not client.done(), f"the client ended early with {client.result()}"
        match = srv.server.matches[0]

        def me() -> dict[str, Any]:
            players: dict[int, dict[str, Any]] = match.state["players"]
            return players[1]

        assert me()["name"] == "keys" and list(match.sessions) == [1], "the client is player 1, the only one"
        session = match.sessions[1]

        # Standing still until told otherwise; then D held: x grows, y does not move.
        x0 = await _settled_x(match, ticks=10, timeout=5)
        y0 = me()["y"]
        assert x0 < 900 * UNIT, "the spawn leaves room to walk right"
        _key(pygame.KEYDOWN, pygame.K_d)
        await _until(lambda: me()["x"] >= x0 + 40 * UNIT, 5, "D to move the player 40 units right")
        assert me()["y"] == y0

        # Released: the player stops, and stays stopped.
        _key(pygame.KEYUP, pygame.K_d)
        stopped = await _settled_x(match, ticks=15, timeout=5)
        assert stopped >= x0 + 40 * UNIT
        tick = match.tick
        await _until(lambda: match.tick >= tick + 20, 5, "20 more ticks")
        assert (me()["x"], me()["y"]) == (stopped, y0)

        # Closing the window ends the client normally, and it says goodbye.
        pygame.event.post(pygame.event.Event(pygame.QUIT))
        assert await asyncio.wait_for(client, 10) == 0
        await asyncio.wait_for(session.closed.wait(), 5)
        assert session.departure is Departure.BYE
    finally:
        if not client.done():
            client.cancel()
            await asyncio.gather(client, return_exceptions=True)
