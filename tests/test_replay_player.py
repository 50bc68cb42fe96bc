"""The replay player: the page render_html makes, played in a real browser (headless Chromium,
driven by Playwright), and the server's /replays pages.

The browser tests synchronise on what the page exposes (``window.tickline``: ``ready``, the
playhead, the drawn entities) and check what it draws against the replay API. Without a
Chromium at TICKLINE_CHROMIUM (default /usr/bin/chromium) they skip, unless
TICKLINE_REQUIRE_BROWSER is set, as CI sets it: there they fail instead.
"""

from __future__ import annotations

import asyncio
import io
import os
import re
import shutil
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.browsers import chromium
from tickline.replays.player import page_data, read_data, render_html
from tickline.replays.reader import LogReader
from tickline.replays.replay import Replay
from tickline.server.eventlog import EventLog, KeyframeRecord, MatchEnd, TickRecord
from tickline.shared.delta import apply
from tickline.shared.game import Controls, Rules, State, TickInputs, state_hash
from tickline.shared.games import make_rules
from tickline.shared.logformat import MatchHeader
from tickline.shared.schema import to_units

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = "TICKLINE_ARTIFACTS"  # a folder: the screenshot is copied there too
ARENA_MATCH = "a" * 32
GOOFSPIEL_MATCH = "g" * 32
NAMES = {1: "ann", 2: "bob", 3: "cy"}
VIEW_RADIUS = 250
# Arena: 12 s at 60 Hz. For 5 s everyone chases the nearest player and fires at it (kills:
# the timeline's marks), then each runs to a corner of its own (far apart: fog).
ARENA_TICKS = 720
CHASE_TICKS = 300
CORNERS = {1: (-1, -1), 2: (1, 1), 3: (1, -1)}


# ---------------------------------------------------------------------- recorded matches


def _chase_then_scatter(rules: Rules, state: State, tick: int, pid: int) -> Controls:
    me = state["players"][pid]
    others = [p for q, p in state["players"].items() if q != pid and p["alive"]]
    if tick <= CHASE_TICKS and others:
        near = min(others, key=lambda p: (p["x"] - me["x"]) ** 2 + (p["y"] - me["y"]) ** 2)
        dx, dy = near["x"] - me["x"], near["y"] - me["y"]
        return {"mx": (dx > 3000) - (dx < -3000), "my": (dy > 3000) - (dy < -3000), "ax": dx, "ay": dy, "fire": True}
    mx, my = CORNERS[pid]
    return {"mx": mx, "my": my, "ax": 1, "ay": 0, "fire": False}


def _bid(rules: Rules, state: State, tick: int, pid: int) -> Controls:
    hand = sorted(state["players"][pid]["hand"])
    return {"bid": hand[(state["round"] * pid) % len(hand)] if hand and state["round"] else 0}


async def _record(
    url: str,
    match_id: str,
    game: str,
    config: dict[str, Any],
    ticks: int,
    controls: Callable[[Rules, State, int, int], Controls],
) -> None:
    """A scripted match of NAMES's players, written through the real event log writer; each
    tick's controls are a function of the state, so the same script always gives the same match."""
    rules = make_rules(game, config)
    rate = rules.config["tick_rate"]
    header = MatchHeader(
        match_id=match_id,
        game=game,
        game_version=rules.version,
        seed=5,
        config=rules.config,
        tick_rate=rate,
        send_rate=rate,
        created_at=1_700_000_000.0,
    )
    log = await EventLog.open(url, "test")
    writer = asyncio.create_task(log.run())
    await log.create_match(header)
    state = rules.initial_state(header.seed)
    tick = 0
    for tick in range(1, ticks + 1):
        inputs = TickInputs(joins=sorted(NAMES.items()) if tick == 1 else [])
        for pid in sorted(state["players"]):
            inputs.inputs[pid] = rules.validate_input(controls(rules, state, tick, pid))
        events = rules.step(state, inputs)
        log.append(TickRecord(match_id, tick, inputs.to_record(), events, state_hash(state)))
        if tick % rate == 0:
            log.add_keyframe(KeyframeRecord(match_id, tick, rules.dump_state(state), state_hash(state)))
            await asyncio.sleep(0)  # let the writer commit in groups, as the server's loop does
        if rules.is_over(state):
            break
    log.end_match(MatchEnd(match_id, "finished", tick, state_hash(state), {"ticks": tick, "players_seen": 3}))
    log.stop()
    await writer
    await log.dispose()


async def _replay(url: str, match_id: str) -> Replay:
    async with await LogReader.open(url) as reader:
        return await Replay.from_log(reader, match_id)


@pytest.fixture
async def arena(tmp_path: Path) -> tuple[str, Replay]:
    """(log URL, replay) of the scripted arena match."""
    url = f"sqlite+aiosqlite:///{tmp_path}/log.db"
    await _record(url, ARENA_MATCH, "arena", {"view_radius": VIEW_RADIUS}, ARENA_TICKS, _chase_then_scatter)
    return url, await _replay(url, ARENA_MATCH)


@pytest.fixture
async def goofspiel(tmp_path: Path) -> Replay:
    url = f"sqlite+aiosqlite:///{tmp_path}/goofspiel.db"
    await _record(url, GOOFSPIEL_MATCH, "goofspiel", {"cards": 5}, 400, _bid)
    return await _replay(url, GOOFSPIEL_MATCH)


# ---------------------------------------------------------------------- the browser


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    """Headless Chromium, the system's own (Playwright downloads no browser here)."""
    async with chromium() as launched:
        yield launched


class Player:
    """One page of the player, with every error it reported."""

    def __init__(self, page: Any) -> None:
        self.page = page
        self.errors: list[str] = []
        page.on("pageerror", lambda exc: self.errors.append(f"page error: {exc}"))
        page.on("console", lambda msg: self.errors.append(f"console: {msg.text}") if msg.type == "error" else None)

    async def open(self, url: str) -> None:
        await self.page.goto(url)
        assert await asyncio.wait_for(self.page.evaluate("window.tickline.ready"), 30) is True, self.errors

    async def js(self, expression: str, arg: Any = None) -> Any:
        return await self.page.evaluate(expression, arg)


async def _player(browser: Any, url: str) -> Player:
    player = Player(await browser.new_page(viewport={"width": 1200, "height": 800}, device_scale_factor=1))
    await player.open(url)
    return player


def _write(tmp_path: Path, name: str, page: str) -> str:
    path = tmp_path / name
    path.write_text(page, encoding="utf-8")
    return path.as_uri()


def _positions(replay: Replay, view: dict[str, Any], tick: int) -> dict[tuple[str, str], tuple[float, float]]:
    """Where each drawn entity of ``view`` (at ``tick``) is, in world units, as the declaration says."""
    out = {}
    for name, table in replay.rules.view_schema().tables.items():
        draw = table.draw
        if draw is None:
            continue
        for eid, e in view.get(name, {}).items():
            x, y = to_units(table.fields[draw.x], e[draw.x]), to_units(table.fields[draw.y], e[draw.y])
            if draw.vx:
                dt = tick - e[draw.since]
                x += to_units(table.fields[draw.vx], e[draw.vx]) * dt
                y += to_units(table.fields[draw.vy], e[draw.vy]) * dt
            out[(name, eid)] = (x, y)
    return out


def _drawn(entities: list[dict[str, Any]]) -> dict[tuple[str, str], tuple[float, float]]:
    return {(e["table"], e["id"]): (e["x"], e["y"]) for e in entities}


def _rgb(colour: str) -> tuple[int, int, int]:
    return int(colour[1:3], 16), int(colour[3:5], 16), int(colour[5:7], 16)


def _all_alive_at(replay: Replay, sampled: list[int], after: int) -> int:
    for tick in sampled:
        players = replay.state_at(tick)["players"]
        if tick >= after and len(players) == 3 and all(p["alive"] for p in players.values()):
            return tick
    raise AssertionError(f"the scripted match has no sampled tick after {after} with every player alive")


# ---------------------------------------------------------------------- tests


async def test_the_player_draws_each_player_where_the_replay_has_it(browser, arena, tmp_path: Path) -> None:
    _url, replay = arena
    page = render_html(replay, title="arena test")
    player = await _player(browser, _write(tmp_path, "arena.html", page))
    assert await player.js("window.tickline.tick()") == 1

    # Play until the page has moved on by itself, then pause: the playhead stays put.
    await player.js("window.tickline.setSpeed(4); window.tickline.play()")
    await player.page.wait_for_function("window.tickline.tick() >= 60", timeout=20_000)
    await player.js("window.tickline.pause()")
    paused_at = await player.js("window.tickline.time()")
    two_frames = "new Promise(r => requestAnimationFrame(() => requestAnimationFrame(() => r(window.tickline.time()))))"
    assert await player.js(two_frames) == paused_at
    assert await player.js("window.tickline.playing()") is False

    sampled = read_data(page)["ticks"]
    tick = _all_alive_at(replay, sampled, after=CHASE_TICKS + 60)
    assert await player.js("t => window.tickline.seek(t)", tick) == tick
    assert await player.js("window.tickline.tick()") == tick
    expected = _positions(replay, replay.full_view(replay.state_at(tick)), tick)
    drawn = _drawn(await player.js("window.tickline.entities()"))
    assert drawn.keys() == expected.keys()
    origin = await player.js("window.tickline.canvasPoint(0, 0)")
    one = await player.js("window.tickline.canvasPoint(1, 0)")
    pixel = 1 / (one["x"] - origin["x"])  # one canvas pixel, in world units
    for pid in NAMES:
        got, want = drawn[("players", str(pid))], expected[("players", str(pid))]
        assert got == pytest.approx(want, abs=pixel), f"player {pid} drawn at {got}, the replay has it at {want}"
    # Between two samples (60 Hz sampled at 30), positions are interpolated: players walk
    # straight at a constant speed here, so to within a pixel of where the replay has them.
    between = tick + 1
    assert between not in sampled and await player.js("t => window.tickline.seek(t)", between) == between
    midway = _drawn(await player.js("window.tickline.entities()"))
    truth = _positions(replay, replay.full_view(replay.state_at(between)), between)
    for pid in NAMES:
        got, want = midway[("players", str(pid))], truth[("players", str(pid))]
        assert got != drawn[("players", str(pid))] and got == pytest.approx(want, abs=pixel), (pid, got, want)
    await player.js("t => window.tickline.seek(t)", tick)

    # The screenshot: at each player's position, that player's colour (not the map's).
    await player.page.screenshot(path=str(tmp_path / "replay-player.png"))
    if os.environ.get(ARTIFACTS):
        keep = Path(os.environ[ARTIFACTS])
        keep = keep if keep.is_absolute() else ROOT / keep
        keep.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(tmp_path / "replay-player.png", keep / "replay-player.png")
    shot = await player.page.locator("#canvas").screenshot()
    from PIL import Image

    image = Image.open(io.BytesIO(shot)).convert("RGB")
    ratio = image.width / await player.js("document.getElementById('canvas').width")
    background = _rgb("#1b1f2a")
    for pid in NAMES:
        x, y = expected[("players", str(pid))]
        point = await player.js("([x, y]) => window.tickline.canvasPoint(x, y)", [x, y])
        seen = image.getpixel((round(point["x"] * ratio), round(point["y"] * ratio)))
        assert isinstance(seen, tuple)
        colour = _rgb(await player.js("p => window.tickline.colourOf(p)", pid))
        assert seen != background
        assert all(abs(a - b) <= 8 for a, b in zip(seen, colour, strict=True)), (
            f"player {pid} at canvas {point}: pixel {seen}, its colour is {colour}"
        )
    assert player.errors == []


async def test_timeline_marks_are_the_kills_and_a_click_on_one_seeks_to_it(browser, arena, tmp_path: Path) -> None:
    _url, replay = arena
    kills = sorted({m.tick for m in replay.summary.marks})  # a mutual kill: one mark, two lines
    assert len(kills) >= 2 and all(m.event["k"] == "kill" for m in replay.summary.marks), "the script must kill"
    player = await _player(browser, _write(tmp_path, "arena.html", render_html(replay)))
    marks = player.page.locator(".mark")
    assert [int(t) for t in await marks.evaluate_all("ms => ms.map(m => m.dataset.tick)")] == kills
    # The mark farthest from the others: a real click lands on it and on nothing else.
    ticks = [0, *kills, replay.ticks + 1]
    loneliest = max(range(len(kills)), key=lambda i: min(ticks[i + 1] - ticks[i], ticks[i + 2] - ticks[i + 1]))
    await marks.nth(loneliest).click()
    assert await player.js("window.tickline.tick()") == kills[loneliest]
    assert await player.js("document.getElementById('scrub').value") == str(kills[loneliest])
    assert "killed" in (await marks.nth(loneliest).get_attribute("title") or "")
    # The speeds on offer, and the step buttons.
    assert await player.page.locator("#speed option").all_inner_texts() == [
        "0.25x",
        "0.5x",
        "1x",
        "2x",
        "4x",
        "8x",
        "16x",
    ]
    await player.page.click("#forward")
    assert await player.js("window.tickline.tick()") == kills[loneliest] + 1
    await player.page.click("#back")
    await player.page.click("#back")
    assert await player.js("window.tickline.tick()") == kills[loneliest] - 1
    assert player.errors == []


async def test_following_a_player_shows_only_what_it_saw(browser, arena, tmp_path: Path) -> None:
    _url, replay = arena
    page = render_html(replay)
    radius = VIEW_RADIUS * 100  # fixed units

    def alone(tick: int) -> bool:
        players = replay.state_at(tick)["players"]
        me = players[1]
        far = [(p["x"] - me["x"]) ** 2 + (p["y"] - me["y"]) ** 2 > radius**2 for q, p in players.items() if q != 1]
        return me["alive"] and len(far) == 2 and all(far)

    tick = next((t for t in read_data(page)["ticks"][::15] if t > CHASE_TICKS and alone(t)), None)
    assert tick is not None, "the script must leave player 1 farther than view_radius from everyone"
    player = await _player(browser, _write(tmp_path, "arena.html", page))
    await player.js("t => window.tickline.seek(t)", tick)
    everyone = _drawn(await player.js("window.tickline.entities()"))
    await player.page.select_option("#follow", "1")
    assert await player.js("window.tickline.following()") == 1
    seen = _drawn(await player.js("window.tickline.entities()"))
    assert {k for k in seen if k[0] == "players"} == {("players", "1")}
    assert {k for k in everyone if k[0] == "players"} == {("players", "1"), ("players", "2"), ("players", "3")}
    view = replay.view(replay.state_at(tick), 1)
    assert seen.keys() == {(table, eid) for table in ("players", "shots", "pickups") for eid in view[table]}
    await player.page.select_option("#follow", "0")
    assert _drawn(await player.js("window.tickline.entities()")) == everyone
    assert player.errors == []


async def test_a_goofspiel_match_plays_without_a_map_and_without_errors(browser, goofspiel, tmp_path: Path) -> None:
    replay = goofspiel
    assert replay.rules.draw_hook and replay.rules.view_schema().world is None
    player = await _player(browser, _write(tmp_path, "goofspiel.html", render_html(replay)))
    for mark in replay.summary.marks:  # every round's reveal, drawn by the game's hook
        await player.js("t => window.tickline.seek(t)", mark.tick)
    text = await player.page.locator("aside").inner_text()
    assert all(name in text for name in NAMES.values()) and "hands" in text and "revealed" in text
    await player.page.select_option("#follow", "2")
    await player.js("t => window.tickline.seek(t)", replay.summary.marks[0].tick + 1)
    text = await player.page.locator("aside").inner_text()
    assert "bob sees" in text and "hands" not in text  # a player never sees the others' hands
    await player.js("window.tickline.setSpeed(16); window.tickline.play()")
    await player.page.wait_for_function("!window.tickline.playing()", timeout=20_000)  # to the end
    assert await player.js("window.tickline.tick()") == replay.ticks
    counters = await player.js("window.tickline.counters")
    assert counters["hookCalls"] > len(replay.summary.marks) and counters["hookErrors"] == 0
    assert player.errors == []


async def test_the_page_is_one_file_holding_every_view_as_keyframes_and_deltas(arena) -> None:
    _url, replay = arena
    page = render_html(replay, title="<b>&")
    assert "<title>&lt;b&gt;&amp;</title>" in page
    # Nothing to fetch: no address but inline data (the icon: none, said inline so none is asked for).
    assert re.findall(r"\b(?:src|href)\s*=\s*\"([^\"]*)\"", page) == ["data:,"]
    assert "http://" not in page and "https://" not in page and "@import" not in page
    data = read_data(page)
    assert data["ticks"] == [*range(1, ARENA_TICKS, 2), ARENA_TICKS]  # every other tick, and the last
    assert data["keyframe_every"] == 150  # 60 Hz sampled at 30 a second: a whole view every 5 seconds
    assert data["players"] == {str(pid): name for pid, name in NAMES.items()}
    assert data["schema"]["world"] == [1000, 1000] and data["schema"]["tables"]["players"]["draw"]["label"] == "name"

    # Rebuilt as the page does, every stream's view at every sample is the replay's.
    sampled = iter(data["ticks"])
    want = next(sampled)
    views: dict[str, dict[str, Any]] = {}
    i = 0
    for frame in replay.frames():
        if frame.tick != want:
            continue
        full = replay.full_view(frame.state)
        for stream, frames in data["streams"].items():
            f = frames[i]
            if f == 0:
                views[stream] = full
            elif stream != "full":  # a player's view: its difference from the whole map's
                assert set(f) <= {"s", "n", "u", "r"}
                views[stream] = apply(views["full"], f)
            elif i % data["keyframe_every"] == 0:
                views[stream] = f
            else:
                assert set(f) <= {"s", "n", "u", "r"}
                views[stream] = apply(views[stream], f)
            truth = full if stream == "full" else replay.view(frame.state, int(stream))
            assert views[stream] == truth, f"stream {stream} at tick {frame.tick}"
        i += 1
        want = next(sampled, -1)
    assert i == len(data["ticks"])

    assert read_data(render_html(replay, fps=10))["ticks"][:3] == [1, 7, 13]
    assert page_data(replay, start=100, stop=200, follow=2)["ticks"][-1] == 200
    with pytest.raises(ValueError, match="not within the match"):
        render_html(replay, start=0)
    with pytest.raises(ValueError, match="player 9 is not in this match"):
        render_html(replay, follow=9)


async def test_the_http_side_lists_the_log_and_serves_a_match_page(start_server, arena) -> None:
    url, _replay = arena
    srv = await start_server(metrics_port=0, db_url=url)
    base = f"http://127.0.0.1:{srv.server.metrics_port}"
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{base}/replays") as response:
            assert response.status == 200 and response.content_type == "text/html"
            listing = await response.text()
        assert f'href="/replays/{ARENA_MATCH}"' in listing and "finished" in listing and "12.0 s" in listing
        async with http.get(f"{base}/replays/{ARENA_MATCH[:8]}") as response:
            assert response.status == 200 and response.content_type == "text/html"
            data = read_data(await response.text())
        assert data["match_id"] == ARENA_MATCH and set(data["streams"]) == {"full", "1", "2", "3"}
        async with http.get(f"{base}/replays/0123456789") as response:
            assert response.status == 404
            assert "no match '0123456789'" in await response.text()


async def test_the_served_page_plays_in_the_browser(browser, start_server, arena) -> None:
    url, _replay = arena
    srv = await start_server(metrics_port=0, db_url=url)
    page = await browser.new_page()
    player = Player(page)
    await page.goto(f"http://127.0.0.1:{srv.server.metrics_port}/replays")
    await page.click(f'a[href="/replays/{ARENA_MATCH}"]')
    await page.wait_for_url(f"**/replays/{ARENA_MATCH}")
    assert await asyncio.wait_for(page.evaluate("window.tickline.ready"), 30) is True
    assert {e["id"] for e in await player.js("window.tickline.entities()") if e["table"] == "players"} == {
        "1",
        "2",
        "3",
    }
    assert await player.js("t => window.tickline.seek(t)", 400) == 400
    assert player.errors == []
