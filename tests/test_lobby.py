"""The lobby, play and monitor pages (server/pages.py) against a real server: their JSON
while bots play, matches made in the lobby, two Chromium players on /play beside Python
clients, and a person in Chromium or Firefox who makes a match, plays it, watches it and
comes back after the grace period, through connect tokens as a server requires by default."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.browsers import chromium, open_page
from tests.support import until
from tickline.bots.client import ClientError, GameClient
from tickline.bots.lobby import fetch_connect_token
from tickline.bots.swarm import run_swarm

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = "TICKLINE_ARTIFACTS"  # a folder: the screenshots are copied there too
GAME = {"time_limit_s": 120, "view_radius": 0}
STEP = 10  # arena's view_step: views carry positions in tenths of the state's fixed units


async def _get(session: aiohttp.ClientSession, url: str, **kwargs: Any) -> tuple[int, Any]:
    async with session.get(url, **kwargs) as response:
        body = await response.json() if response.content_type == "application/json" else await response.text()
        return response.status, body


async def test_lobby_and_monitor_endpoints_describe_the_matches_bots_play(start_server) -> None:
    srv = await start_server(game_config=GAME, metrics_port=0)
    http = f"http://127.0.0.1:{srv.server.metrics_port}"
    match = srv.server.matches[0]
    bots = asyncio.create_task(run_swarm("127.0.0.1", srv.port, 2, 30.0, cafile=srv.cert))
    try:
        await until(lambda: len(match.sessions) == 2, timeout=15)
        async with aiohttp.ClientSession() as session:
            for page in ("/", "/lobby", "/play", "/monitor"):
                status, text = await _get(session, http + page)
                assert status == 200 and "<!doctype html>" in text, page
            status, bundle = await _get(session, http + "/tickline-client.js")
            assert status == 200 and "export" in bundle
            status, schema = await _get(session, http + "/games/arena/schema.json")
            assert status == 200 and schema["players"] == "players" and schema["tables"]["players"]["draw"]
            assert (await _get(session, http + "/games/no-such-game/schema.json"))[0] == 404

            status, matches = await _get(session, http + "/matches")
            assert status == 200 and matches[0]["players"] == 2 and matches[0]["age_s"] >= 0

            await until(lambda: match.live_figures()["bytes_down"] > 0, timeout=10)
            _, first = await _get(session, http + "/monitor.json")
            row = first["matches"][0]
            assert row["match_id"] == match.match_id and row["game"] == "arena"
            assert len(row["players"]) == 2 and all(p["name"] for p in row["players"])
            assert set(row["tick_late_ms"]) == {"p50", "p99", "max"} and row["log_lag_ticks"] >= 0
            # A sample a second: after the next one, bytes per client per second.
            sent = match.live_figures()["bytes_down"]
            await until(lambda: match.live_figures()["bytes_down"] > sent, timeout=10)
            series: list[Any] = []
            async with asyncio.timeout(10):
                while not series:
                    _, report = await _get(session, http + "/monitor.json")
                    series = report["matches"][0]["bytes_per_client_s"]
                    await asyncio.sleep(0.25)  # polling the endpoint as the page does, not synchronising
            assert series[-1][1] > 0, "the bots are sent views"
    finally:
        bots.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await bots


async def test_the_monitor_and_metrics_want_the_admin_token_when_one_is_configured(start_server) -> None:
    srv = await start_server(game_config=GAME, metrics_port=0, monitor_token="s3cret")
    http = f"http://127.0.0.1:{srv.server.metrics_port}"
    async with aiohttp.ClientSession() as session:
        assert (await _get(session, http + "/monitor.json"))[0] == 401
        assert (await _get(session, http + "/monitor"))[0] == 401
        assert (await _get(session, http + "/monitor.json?token=wrong"))[0] == 401
        assert (await _get(session, http + "/monitor.json?token=s3cret"))[0] == 200
        assert (await _get(session, http + "/monitor.json", headers={"X-Monitor-Token": "s3cret"}))[0] == 200
        assert (await _get(session, http + "/monitor?token=s3cret"))[0] == 200
        # /metrics too, as Prometheus asks with a bearer token; the lobby and /healthz stay open.
        status, text = await _get(session, http + "/metrics")
        assert status == 401 and "admin token" in text
        assert (await _get(session, http + "/metrics", headers={"Authorization": "Bearer wrong"}))[0] == 401
        status, text = await _get(session, http + "/metrics", headers={"Authorization": "Bearer s3cret"})
        assert status == 200 and "tickline_server_ticks_total" in text
        assert (await _get(session, http + "/metrics?token=s3cret"))[0] == 200
        assert (await _get(session, http + "/"))[0] == 200, "the lobby stays open"
        assert (await _get(session, http + "/healthz"))[0] == 200


async def _post(session: aiohttp.ClientSession, url: str, body: Any) -> tuple[int, Any]:
    async with session.post(url, json=body) as response:
        answer = await response.json() if response.content_type == "application/json" else await response.text()
        return response.status, answer


async def test_the_lobby_makes_matches_of_a_game_with_a_config_up_to_its_limit(start_server) -> None:
    srv = await start_server(game_config=GAME, metrics_port=0, lobby_matches=2, require_tokens=None)
    server, http = srv.server, f"http://127.0.0.1:{srv.server.metrics_port}"
    async with aiohttp.ClientSession() as session:
        _, offered = await _get(session, http + "/lobby/games")
        games = {g["name"]: g["config"] for g in offered["games"]}
        assert {"arena", "goofspiel"} <= set(games) and games["arena"]["time_limit_s"] > 0
        assert "tick_rate" not in games["goofspiel"], "the server's to set, not a person's"
        _, schema = await _get(session, http + "/games/goofspiel/schema.json")
        assert schema["controls"] == ["bid"]  # the play page sends only what a game takes
        assert offered["limit"] == 2 and offered["open"] == 0

        status, made = await _post(session, http + "/lobby/matches", {"game": "goofspiel", "config": {"cards": 5}})
        assert status == 201 and made["game"] == "goofspiel" and made["config"]["cards"] == 5
        created = next(m for m in server.matches if m.match_id == made["match_id"])
        assert created.rules.name == "goofspiel" and created.settings.tick_rate == 10  # its own rates
        for body, reason in [
            ({"game": "chess"}, "does not run 'chess'; it runs arena, goofspiel"),
            ({"game": "arena", "config": {"lives": 3}}, "unknown arena config key 'lives'"),
            ({"game": "arena", "config": {"time_limit_s": "long"}}, "must be int, not str"),
            ({"game": "arena", "config": [1]}, "config must be a JSON object"),
            ({"config": {}}, "send a JSON object"),
        ]:
            status, text = await _post(session, http + "/lobby/matches", body)
            assert status == 400 and reason in text, (body, text)
        status, made2 = await _post(session, http + "/lobby/matches", {"game": "arena", "config": {"time_limit_s": 30}})
        assert status == 201
        status, text = await _post(session, http + "/lobby/matches", {"game": "arena"})
        assert status == 429 and "2 matches made in the lobby are open" in text
        _, listed = await _get(session, http + "/matches")
        assert {m["match_id"] for m in listed if m["created"]} == {made["match_id"], made2["match_id"]}

        # A player who names no match joins the server's own, never one someone made.
        token = (await fetch_connect_token(http, "anyone"))["token"]
        async with GameClient.connect("127.0.0.1", srv.port, "x", cafile=srv.cert, connect_token=token) as anyone:
            assert anyone.match_id not in (made["match_id"], made2["match_id"])
        # Joined by its id (with a token naming it), a made match plays its own game.
        token = (await fetch_connect_token(http, "bidder", match=made["match_id"]))["token"]
        async with GameClient.connect("127.0.0.1", srv.port, "x", cafile=srv.cert, connect_token=token) as bidder:
            assert bidder.welcome is not None and bidder.welcome.game == "goofspiel"
            assert bidder.match_id == made["match_id"]
    # Both players gone, the goofspiel match is over and not replaced; the limit has room again.
    await until(lambda: created not in server.created, timeout=10)
    assert created not in server.matches and len(server.created) == 1


async def test_a_made_match_nobody_joins_goes_without_a_trace(start_server, monkeypatch) -> None:
    from tickline.server import app

    monkeypatch.setattr(app, "CREATED_WAIT_S", 0.2)
    srv = await start_server(game_config=GAME, metrics_port=0)
    match = await srv.server.create_match("arena", {})
    assert match in srv.server.matches
    await until(lambda: match not in srv.server.matches, timeout=5)
    assert match.status == "stopped" and not srv.server.created
    async with aiohttp.ClientSession() as session:
        _, listed = await _get(session, f"http://127.0.0.1:{srv.server.metrics_port}/replays")
    assert match.match_id not in str(listed), "never logged"


@pytest.mark.slow
@pytest.mark.parametrize("browser", ["chromium", "firefox"])
async def test_a_person_makes_a_match_plays_it_watches_it_and_comes_back_after_the_grace_period(
    browser: str, start_server, tmp_path: Path
) -> None:
    # As `tickline serve --http-port` runs: connect tokens required. A short grace period.
    srv = await start_server(game_config=GAME, metrics_port=0, require_tokens=None, match_options={"grace_s": 1.0})
    server, http = srv.server, f"http://127.0.0.1:{srv.server.metrics_port}"
    async with open_page(browser, tmp_path) as page:
        await page.goto(f"{http}/")
        await page.wait_for("window.tickline.ready && window.tickline.games.length > 0", timeout=15)
        await page.evaluate(
            "(() => { document.querySelector('#name').value = 'dana';"
            " document.querySelector('#create').open = true;"
            " document.querySelector('#game').value = 'arena';"
            " document.querySelector('#game').dispatchEvent(new Event('change'));"
            " document.querySelector('#config input[name=time_limit_s]').value = '90';"
            " document.querySelector('#make').click(); return true; })()"
        )
        await until(lambda: len(server.created) == 1, timeout=10)
        [made] = server.created
        assert made.rules.config["time_limit_s"] == 90
        await page.wait_for(
            "location.pathname === '/play' && window.tickline && (window.tickline.ready || window.tickline.error)",
            timeout=20,
        )
        assert await page.evaluate("window.tickline.error") == ""
        welcome = await page.evaluate("window.tickline.welcome()")
        pid = welcome["player_id"]
        assert welcome["match_id"] == made.match_id and made.sessions[pid].name == "dana"

        # A Python player joins the same match, with a token naming it, as bots do.
        token = (await fetch_connect_token(http, "rival", match=made.match_id))["token"]
        async with GameClient.connect("127.0.0.1", srv.port, "x", cafile=srv.cert, connect_token=token) as rival:
            assert rival.match_id == made.match_id
            x = made.state["players"][pid]["x"]
            await page.key("d", down=True)
            await until(lambda: made.state["players"][pid]["x"] > x + 2000, timeout=15)
            await page.key("d", down=False)
            await until(lambda: str(pid) in rival.world.view.get("players", {}), timeout=5)

            # Watching it from the lobby's link: a spectator with its own token.
            await page.goto(f"{http}/play?spectate={made.match_id}")
            await page.wait_for("window.tickline.ready || window.tickline.error", timeout=20)
            assert await page.evaluate("window.tickline.error") == ""
            watching = await page.evaluate("window.tickline.welcome()")
            assert watching["player_id"] == 0 and watching["match_id"] == made.match_id
            await page.wait_for(f"window.tickline.view()?.players?.['{rival.player_id}']", timeout=15)

            # Dana's tab went to the spectator page: after the grace period her place is gone,
            # and coming back to /play joins her afresh with a new connect token.
            await until(lambda: pid not in made.sessions and made.live_figures()["away"] == 0, timeout=10)
            await page.goto(f"{http}/play?name=dana&match={made.match_id}")
            await page.wait_for("window.tickline.ready || window.tickline.error", timeout=20)
            assert await page.evaluate("window.tickline.error") == ""
            again = await page.evaluate("window.tickline.welcome()")
            assert again["match_id"] == made.match_id and again["player_id"] != pid
            assert made.sessions[again["player_id"]].name == "dana"
            assert await page.evaluate("window.tickline.transport()") in ("webtransport", "websocket")
        with pytest.raises(ClientError, match="requires a connect token"):
            async with GameClient.connect("127.0.0.1", srv.port, "no-token", cafile=srv.cert):
                pass
    assert not page.errors, page.errors


def _keep(tmp_path: Path, name: str) -> None:
    if os.environ.get(ARTIFACTS):
        keep = Path(os.environ[ARTIFACTS])
        keep = keep if keep.is_absolute() else ROOT / keep
        keep.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(tmp_path / name, keep / name)


@pytest.mark.slow
async def test_two_browser_players_play_arena_through_the_play_page_beside_python_clients(
    start_server, tmp_path: Path
) -> None:
    srv = await start_server(game_config=GAME, metrics_port=0)
    http = f"http://127.0.0.1:{srv.server.metrics_port}"
    match = srv.server.matches[0]
    state = lambda: match.state  # noqa: E731 - the match's state, read between ticks
    bots = asyncio.create_task(run_swarm("127.0.0.1", srv.port, 2, 60.0, cafile=srv.cert, name_prefix="bot"))
    async with GameClient.connect("127.0.0.1", srv.port, "watcher", cafile=srv.cert) as watcher:
        try:
            async with chromium() as browser:
                pages = [await browser.new_page(viewport={"width": 800, "height": 600}) for _ in range(2)]
                errors: list[str] = []
                for page in pages:
                    page.on("pageerror", lambda exc: errors.append(str(exc)))
                ids = []
                for n, page in enumerate(pages):
                    await page.goto(f"{http}/play?name=web{n}")
                    await page.wait_for_function("window.tickline && window.tickline.ready", timeout=15000)
                    ids.append(await page.evaluate("window.tickline.welcome().player_id"))
                assert len(set(ids)) == 2 and all(pid in state()["players"] for pid in ids)
                assert await pages[0].evaluate("window.tickline.transport()") in ("webtransport", "websocket")
                start = {pid: dict(state()["players"][pid]) for pid in ids}

                # web0 walks right with the keyboard and fires with space; web1 walks down,
                # aims with the mouse and fires with the button.
                await pages[0].keyboard.down("d")
                await pages[0].keyboard.down(" ")
                await pages[1].keyboard.down("s")
                await pages[1].mouse.move(60, 560)  # the canvas, clear of the status and HUD boxes
                await pages[1].mouse.down()

                def moved() -> bool:
                    players = state()["players"]
                    return bool(
                        players[ids[0]]["x"] > start[ids[0]]["x"] + 2000
                        and players[ids[1]]["y"] > start[ids[1]]["y"] + 2000
                    )

                await until(moved, timeout=15)
                shooters: set[int] = set()

                def fired() -> bool:
                    shooters.update(s["owner"] for s in state()["shots"].values())
                    return set(ids) <= shooters

                try:
                    await until(fired, timeout=15)
                except TimeoutError:
                    pytest.fail(f"shots seen from {sorted(shooters)}; the browsers are {ids}")

                # The other clients see them where the server has them (views trail by a few ticks).
                def seen_by_watcher() -> bool:
                    seen = (watcher.world.view or {}).get("players", {})
                    web0, web1 = seen.get(str(ids[0])), seen.get(str(ids[1]))
                    return (
                        web0 is not None
                        and web1 is not None
                        and web0["x"] * STEP > start[ids[0]]["x"] + 1000
                        and web1["y"] * STEP > start[ids[1]]["y"] + 1000
                    )

                try:
                    await until(seen_by_watcher, timeout=10)
                except TimeoutError:
                    seen = (watcher.world.view or {}).get("players", {})
                    pytest.fail(
                        f"the watcher sees {seen} at {watcher.world.tick} ({watcher.close_reason}); start {start}"
                    )
                seen = await pages[1].evaluate(f"window.tickline.view().players['{ids[0]}']")
                assert seen["x"] * STEP > start[ids[0]]["x"] + 1000, "web1 sees web0 walk right"
                hud = await pages[0].locator("#hud").inner_text()
                assert "transport" in hud and "KiB/s" in hud
                await pages[0].screenshot(path=str(tmp_path / "play-web0.png"))
                await pages[1].screenshot(path=str(tmp_path / "play-web1.png"))

                # A reload keeps the player: the SDK's stored token brings web1 back.
                await pages[1].mouse.up()
                await pages[1].keyboard.up("s")
                await pages[1].reload()
                await pages[1].wait_for_function("window.tickline && window.tickline.ready", timeout=15000)
                assert await pages[1].evaluate("window.tickline.welcome().player_id") == ids[1]
                await pages[1].wait_for_function("window.tickline.me() !== null", timeout=10000)

                # The lobby lists the match with everyone in it; the monitor shows the players.
                lobby = await browser.new_page()
                await lobby.goto(f"{http}/")
                await lobby.wait_for_function("window.tickline.ready", timeout=10000)
                listed = await lobby.evaluate("window.tickline.matches")
                assert listed[0]["match_id"] == match.match_id and listed[0]["players"] >= 5
                await lobby.screenshot(path=str(tmp_path / "lobby.png"))
                await lobby.goto(f"{http}/monitor")
                await lobby.wait_for_function("window.tickline.ready", timeout=10000)
                names = await lobby.evaluate("window.tickline.report.matches[0].players.map((p) => p.name)")
                assert {"web0", "web1", "watcher"} <= set(names)
                await lobby.screenshot(path=str(tmp_path / "monitor.png"))
                assert not errors, errors
        finally:
            bots.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await bots
    for name in ("play-web0.png", "play-web1.png", "lobby.png", "monitor.png"):
        _keep(tmp_path, name)


@pytest.mark.slow
async def test_the_lobby_joins_a_server_that_requires_connect_tokens(start_server) -> None:
    srv = await start_server(game_config=GAME, metrics_port=0, require_tokens=True)
    http = f"http://127.0.0.1:{srv.server.metrics_port}"
    match = srv.server.matches[0]
    async with chromium() as browser:
        page = await browser.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        await page.goto(f"{http}/")
        await page.wait_for_function("window.tickline.ready && window.tickline.matches.length === 1", timeout=10000)
        await page.fill("#name", "carol")
        await page.click("#any")
        await page.wait_for_url("**/play?name=carol", timeout=10000)
        await page.wait_for_function("window.tickline.ready || window.tickline.error", timeout=15000)
        assert await page.evaluate("window.tickline.error") == ""
        pid = await page.evaluate("window.tickline.welcome().player_id")
        await until(lambda: pid in match.state["players"], timeout=10)
        assert match.state["players"][pid]["name"] == "carol", "seated by its connect token"
        assert not errors, errors


@pytest.mark.slow
async def test_the_play_page_shows_a_game_without_draw_hints_as_text_and_sends_it_nothing(start_server) -> None:
    srv = await start_server(game_config=GAME, metrics_port=0, require_tokens=None)
    made = await srv.server.create_match("goofspiel", {"cards": 3})
    async with chromium() as browser:
        page = await browser.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        await page.goto(f"http://127.0.0.1:{srv.server.metrics_port}/play?name=erin&match={made.match_id}")
        await page.wait_for_function("window.tickline.ready || window.tickline.error", timeout=15000)
        assert await page.evaluate("window.tickline.error") == ""
        await page.wait_for_function("document.querySelector('#raw').textContent.includes('\"hand\"')", timeout=10000)
        assert "no controls for goofspiel; it takes bid" in await page.locator("#status").inner_text()
        pid = await page.evaluate("window.tickline.welcome().player_id")
        tick = made.tick
        await until(lambda: made.tick > tick + 20, timeout=10)  # two seconds at 10 Hz
        assert pid in made.sessions and srv.server.kicked == 0, "nothing it cannot take was sent"
        assert not errors, errors
