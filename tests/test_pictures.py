"""Pictures and clips of a recorded match: the heat, kill and score PNGs, GIFs, and kill-cams,
drawn from the replay API and the view's draw hints alone.

The matches are recorded here, without a network: the rules step scripted inputs, and each
tick's input record, events and state hash go into a real :class:`Replay` (with keyframes),
as the event log would keep them.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from PIL import GifImagePlugin, Image

from tickline.replays.clip import clip_follow, clip_range, find_event, render_clip, shooter_view_tick
from tickline.replays.pictures import (
    FLOOR,
    NoMap,
    draw_frame,
    frame_layout,
    gif_ticks,
    picture_layout,
    player_colour,
    render_gif,
    render_pngs,
    view_as_seen,
)
from tickline.replays.replay import Mark, Replay, StoredStep
from tickline.shared.arena import UNIT
from tickline.shared.game import Rules, State, TickInputs, state_hash
from tickline.shared.games import make_rules
from tickline.shared.logformat import MatchHeader, encode_payload, encode_state

# A small arena where three players who aim at each other kill often; player 1 never walks.
DUEL = {
    "width": 300,
    "height": 300,
    "fire_cooldown_ms": 100,
    "respawn_ms": 500,
    "time_limit_s": 60,
    "view_radius": 120,
}
TICKS = 600  # 10 s at 60 Hz
Script = Callable[[Rules, State, int], TickInputs]


def record(game: str, config: dict[str, Any], ticks: int, script: Script, seed: int = 7) -> Replay:
    """Play ``script`` under the rules and keep what the log keeps: input records, hashes, keyframes."""
    rules = make_rules(game, config)
    header = MatchHeader("c" * 32, game, rules.version, seed, rules.config, rules.config["tick_rate"], 30, 1.0)
    state = rules.initial_state(seed)
    steps, keyframes = [], {}
    for tick in range(1, ticks + 1):
        inputs = script(rules, state, tick)
        events = rules.step(state, inputs)
        digest = state_hash(state)
        steps.append(StoredStep(tick, encode_payload(inputs.to_record(), events), digest))
        if tick % 120 == 0:
            keyframes[tick] = (encode_state(rules.dump_state(state)), digest)
        if rules.is_over(state):
            break
    return Replay(header, steps, keyframes)


def duel(rules: Rules, state: State, tick: int, *, vt_lag: int | None = None) -> TickInputs:
    """Everyone aims at the nearest live player and fires; 2 and 3 walk by a fixed pattern.
    With ``vt_lag``, inputs come every other tick and say the tick their sender saw."""
    inputs = TickInputs(joins=[(1, "still"), (2, "runner"), (3, "third")] if tick == 1 else [])
    if vt_lag is not None and tick % 2:
        return inputs  # nothing new this tick: each player keeps its last controls
    players = state["players"]
    for pid, me in players.items():
        others = [p for q, p in players.items() if q != pid and p["alive"]]
        target = min(others, key=lambda p: (p["x"] - me["x"]) ** 2 + (p["y"] - me["y"]) ** 2, default=None)
        controls: dict[str, Any] = {"fire": target is not None and tick % 2 == 0}
        if target is not None:
            controls |= {"ax": target["x"] - me["x"], "ay": target["y"] - me["y"]}
        if pid == 2:
            controls |= {"mx": (tick // 90) % 3 - 1, "my": (tick // 150) % 3 - 1}
        if pid == 3:
            controls |= {"mx": 1 - (tick // 120) % 3}
        if vt_lag is not None and tick > vt_lag:
            controls["vt"] = tick - vt_lag
        inputs.inputs[pid] = rules.validate_input(controls)
    return inputs


@pytest.fixture(scope="module")
def arena() -> Replay:
    return record("arena", DUEL, TICKS, duel)


@pytest.fixture(scope="module")
def hitscan() -> Replay:
    config = {**DUEL, "weapon": "hitscan", "hitscan_range": 400}
    return record("arena", config, 300, lambda rules, state, tick: duel(rules, state, tick, vt_lag=4))


def bidding(rules: Rules, state: State, tick: int) -> TickInputs:
    inputs = TickInputs(joins=[(1, "low"), (2, "high")] if tick == 1 else [])
    for pid, p in state["players"].items():
        if p["hand"]:
            inputs.inputs[pid] = rules.validate_input({"bid": min(p["hand"]) if pid == 1 else max(p["hand"])})
    return inputs


def alive_positions(replay: Replay) -> list[tuple[float, float]]:
    """Every live player's place at every tick, in world units, from the states themselves."""
    return [
        (p["x"] / UNIT, p["y"] / UNIT)
        for frame in replay.frames()
        for p in frame.state["players"].values()
        if p["alive"]
    ]


def rgb(image: Image.Image, at: tuple[float, float]) -> tuple[int, int, int]:
    r, g, b = image.convert("RGB").getpixel((round(at[0]), round(at[1])))  # type: ignore[misc]
    return r, g, b


# ---------------------------------------------------------------------- PNGs


def test_render_pngs_writes_a_heat_map_a_kill_map_and_a_score_chart_of_the_expected_size(
    arena: Replay, tmp_path: Path
) -> None:
    paths = render_pngs(arena, tmp_path / "pictures")
    assert [p.name for p in paths] == ["heatmap.png", "kills.png", "scores.png"]
    layout = picture_layout((300, 300), 800)
    for path, size in zip(paths, [(layout.width, layout.height)] * 2 + [(800, 480)], strict=True):
        with Image.open(path) as image:
            assert image.format == "PNG" and image.size == size, path.name
            assert len(image.convert("RGB").getcolors(1 << 16) or ()) > 20, f"{path.name} is nearly blank"


def test_the_heat_map_is_hot_where_players_stood_most_and_bare_where_nobody_went(arena: Replay, tmp_path: Path) -> None:
    (heat_path, *_) = render_pngs(arena, tmp_path)
    layout = picture_layout((300, 300), 800)
    positions = alive_positions(arena)
    (busiest, _), *_ = Counter((round(x), round(y)) for x, y in positions).most_common(1)
    places = {(round(x), round(y)) for x, y in positions}
    nobody = [
        (x, y) for x in range(5, 300, 10) for y in range(5, 300, 10) if all(math.dist((x, y), p) > 45 for p in places)
    ]
    assert nobody, "the scripted match should leave part of the map unvisited"
    with Image.open(heat_path) as heat:
        hot = rgb(heat, layout.to_px(*busiest))
        assert hot != FLOOR
        assert sum(hot) > sum(rgb(heat, layout.to_px(*nobody[0]))) + 100, "the busiest place should be bright"
        assert all(rgb(heat, layout.to_px(*p)) == FLOOR for p in nobody)


def test_the_kill_map_crosses_each_victims_place_in_its_killers_colour(arena: Replay, tmp_path: Path) -> None:
    _, kills_path, _ = render_pngs(arena, tmp_path)
    layout = picture_layout((300, 300), 800)
    kills = [m for m in arena.summary.marks if m.event["k"] == "kill"]
    assert len(kills) >= 5, "the scripted duel should kill often"
    places = []
    for mark in kills:
        victim = arena.state_at(mark.tick)["players"][mark.event["p"]]
        places.append(layout.to_px(victim["x"] / UNIT, victim["y"] / UNIT))
    with Image.open(kills_path) as image:
        checked = set()
        for i, (mark, at) in enumerate(zip(kills, places, strict=True)):
            assert rgb(image, at) != FLOOR, f"no cross at the place of {mark}"
            if all(math.dist(at, later) > 20 for later in places[i + 1 :]):  # no later cross covers it
                assert rgb(image, at) == player_colour(mark.event["by"]), f"{mark} in another colour"
                checked.add(mark.event["by"])
        assert len(checked) >= 2, "the crosses checked should be of more than one killer"


def test_a_game_without_a_map_gets_its_score_chart_and_a_one_line_reason_for_the_rest(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cards = record("goofspiel", {"cards": 5, "round_ms": 500}, 200, bidding)
    assert cards.rules.is_over(cards.state_at(cards.ticks))
    with caplog.at_level(logging.WARNING, logger="tickline.replays.pictures"):
        paths = render_pngs(cards, tmp_path)
    assert [p.name for p in paths] == ["scores.png"]
    with Image.open(paths[0]) as image:
        assert image.size == (800, 480)
        # The winner's line (player 2 bids high) in its colour somewhere on the chart.
        assert any(colour == player_colour(2) for _, colour in image.convert("RGB").getcolors(1 << 16) or ())
    assert any("goofspiel has no map to draw" in r.getMessage() for r in caplog.records)
    with pytest.raises(NoMap, match=r"^goofspiel has no map to draw: .*; the score chart still works$"):
        render_gif(cards, tmp_path / "cards.gif")
    with pytest.raises(NoMap, match="no world size"):
        draw_frame(cards.full_view(cards.state_at(3)), cards.rules.view_schema(), 3, 200)


# ---------------------------------------------------------------------- GIFs


def gif_frames(path: Path) -> list[tuple[Image.Image, int]]:
    with Image.open(path) as gif:
        assert isinstance(gif, GifImagePlugin.GifImageFile)
        frames = []
        for i in range(gif.n_frames):
            gif.seek(i)
            frames.append((gif.convert("RGB"), int(gif.info["duration"])))
        return frames


def test_a_gif_has_a_frame_every_tick_rate_times_speed_over_fps_ticks(arena: Replay, tmp_path: Path) -> None:
    path = render_gif(arena, tmp_path / "a.gif", start=1, stop=120, fps=15)
    frames = gif_frames(path)
    assert len(frames) == 30  # ticks 1, 5, ..., 117: 60 Hz at 15 frames a second
    assert all(image.size == (480, 480) for image, _ in frames)
    durations = [d for _, d in frames]
    assert set(durations) <= {60, 70} and sum(durations) == 2000  # 1000/15 ms each, on the GIF's 10 ms grid
    fast = gif_frames(render_gif(arena, tmp_path / "b.gif", start=1, stop=120, speed=2, fps=10, size=240))
    assert len(fast) == 10 and {d for _, d in fast} == {100} and fast[0][0].size == (240, 240)
    assert gif_ticks(1, 120, 60, speed=2, fps=10) == (list(range(1, 121, 12)), 100.0)
    slow_ticks, slow_ms = gif_ticks(10, 14, 60, speed=0.1, fps=15)  # slower than a tick a frame
    assert slow_ticks == [10, 11, 12, 13, 14] and slow_ms == pytest.approx(1000 / 6)


def test_a_gif_frame_draws_each_player_at_its_place_in_its_colour(arena: Replay, tmp_path: Path) -> None:
    tick = 301
    ((image, _),) = gif_frames(render_gif(arena, tmp_path / "one.gif", start=tick, stop=tick))
    layout = frame_layout((300, 300), 480)
    players = arena.state_at(tick)["players"]
    apart = [
        pid
        for pid, p in players.items()
        if p["alive"]
        and all(math.dist((p["x"], p["y"]), (q["x"], q["y"])) > 40 * UNIT for o, q in players.items() if o != pid)
    ]
    assert apart, "pick a tick where some live player stands clear of the others"
    for pid in apart:
        at = layout.to_px(players[pid]["x"] / UNIT, players[pid]["y"] / UNIT)
        assert rgb(image, at) == player_colour(pid)


def test_following_a_player_draws_only_what_its_view_showed(arena: Replay, tmp_path: Path) -> None:
    # A tick where someone stands beyond player 1's view radius (120) alive.
    tick, hidden = next(
        (frame.tick, pid)
        for frame in arena.frames(60)
        for pid, p in frame.state["players"].items()
        if pid != 1
        and p["alive"]
        and str(pid) not in arena.view(frame.state, 1)["players"]
        and all(
            math.dist((p["x"], p["y"]), (q["x"], q["y"])) > 40 * UNIT
            for o, q in frame.state["players"].items()
            if o != pid
        )
    )
    p = arena.state_at(tick)["players"][hidden]
    at = frame_layout((300, 300), 480).to_px(p["x"] / UNIT, p["y"] / UNIT)
    ((whole, _),) = gif_frames(render_gif(arena, tmp_path / "all.gif", start=tick, stop=tick))
    ((own, _),) = gif_frames(render_gif(arena, tmp_path / "own.gif", start=tick, stop=tick, follow=1))
    assert rgb(whole, at) == player_colour(hidden)
    assert rgb(own, at) == FLOOR


# ---------------------------------------------------------------------- clips


def test_find_event_gives_the_nth_event_of_a_kind_and_says_how_many_there_are(arena: Replay) -> None:
    kills = [m for m in arena.summary.marks if m.event["k"] == "kill"]
    assert find_event(arena, "kill:3") == kills[2]
    assert find_event(arena, f"kill:{len(kills)}") == kills[-1]
    respawn = find_event(arena, "respawn:1")  # not a marked kind: found in a pass over the match
    assert respawn.event["k"] == "respawn" and respawn.event["p"] == kills[0].event["p"]
    for bad in ("kill", "kill:0", "kill:x", ":3"):
        with pytest.raises(ValueError, match=r"must be KIND:N with N from 1, such as kill:3"):
            find_event(arena, bad)
    with pytest.raises(
        ValueError,
        match=rf"there is no kill:999: this match has {len(kills)} 'kill' events \(kill:1 to kill:{len(kills)}\)",
    ):
        find_event(arena, "kill:999")
    with pytest.raises(ValueError, match=r"this match has no 'teleport' events \(the kinds arena marks: kill\)"):
        find_event(arena, "teleport:1")


def test_clip_range_is_the_seconds_around_the_event_cut_to_the_match(arena: Replay) -> None:
    assert clip_range(arena, Mark(300, {"k": "kill"}), 3, 2) == (120, 420)
    assert clip_range(arena, Mark(30, {"k": "kill"}), 3, 2) == (1, 150)
    assert clip_range(arena, Mark(590, {"k": "kill"}), 0.5, 2) == (560, TICKS)
    with pytest.raises(ValueError, match="cannot be negative"):
        clip_range(arena, Mark(300, {"k": "kill"}), -1, 2)


def test_clip_follow_sees_a_kill_through_the_killer_or_the_victim() -> None:
    kill = Mark(10, {"k": "kill", "p": 2, "by": 3})
    assert (clip_follow(kill, "killer"), clip_follow(kill, "victim"), clip_follow(kill, "map")) == (3, 2, 0)
    assert clip_follow(Mark(10, {"k": "respawn", "p": 2}), "killer") == 2
    assert clip_follow(Mark(10, {"k": "resolved", "winner": 1}), "victim") == 0
    with pytest.raises(ValueError, match="must be one of killer, victim, map"):
        clip_follow(kill, "referee")


def test_shooter_view_tick_is_the_tick_a_hitscan_killer_said_it_saw(hitscan: Replay, arena: Replay) -> None:
    kills = [m for m in hitscan.summary.marks if m.event["k"] == "kill"]
    assert kills and any(m.tick % 2 for m in kills), "want kills on ticks with and without a new input"
    for mark in kills:
        sent = mark.tick - mark.tick % 2  # inputs come on even ticks, each saying it saw 4 ticks back
        assert shooter_view_tick(hitscan, mark) == sent - 4
        # ... which is the tick the rules rewound to when they judged the shot.
        (frame,) = hitscan.frames(mark.tick, mark.tick)
        (fire,) = [e for e in frame.events if e["k"] == "fire" and e["p"] == mark.event["by"]]
        assert shooter_view_tick(hitscan, mark) == mark.tick - fire["rewind"]
    # No vt sent (a projectile match): the kill's own tick.
    projectile_kill = find_event(arena, "kill:1")
    assert shooter_view_tick(arena, projectile_kill) == projectile_kill.tick


def test_a_kill_cam_holds_the_killers_view_as_it_saw_it_when_it_fired(hitscan: Replay, tmp_path: Path) -> None:
    mark = find_event(hitscan, "kill:2")
    killer, victim, seen = mark.event["by"], mark.event["p"], shooter_view_tick(hitscan, mark)
    state = hitscan.state_at(mark.tick)
    held = view_as_seen(hitscan, killer, state, seen)
    then, now = hitscan.view(hitscan.state_at(seen), killer), hitscan.view(state, killer)
    assert held["players"][str(victim)] == then["players"][str(victim)]  # the target where the shooter drew it
    assert held["players"][str(victim)]["alive"] and not now["players"][str(victim)]["alive"]
    assert held["players"][str(killer)] == now["players"][str(killer)]  # the shooter where it stood

    # Drawn, the held frame shows the victim alive (its full colour); the kill's tick itself, dead (faded).
    def victim_pixels(image: Image.Image) -> int:
        return {c: n for n, c in image.getcolors(1 << 16) or ()}.get(player_colour(victim), 0)

    ((plain, _),) = gif_frames(
        render_gif(hitscan, tmp_path / "plain.gif", start=mark.tick, stop=mark.tick, follow=killer)
    )
    ((kept, _),) = gif_frames(
        render_gif(
            hitscan, tmp_path / "kept.gif", start=mark.tick, stop=mark.tick, follow=killer, hold=(mark.tick, seen)
        )
    )
    assert victim_pixels(kept) > 500 and victim_pixels(plain) < 50

    path = render_clip(hitscan, "kill:2", tmp_path / "cam.gif", before_s=0.5, after_s=0.5)
    start, stop = clip_range(hitscan, mark, 0.5, 0.5)
    ticks, _ = gif_ticks(start, stop, 60)
    frames = gif_frames(path)
    assert len(frames) == len(set(ticks) | {mark.tick})  # the kill's tick is always a frame
    longest = max(range(len(frames)), key=lambda i: frames[i][1])
    assert frames[longest][1] >= 800 + 60 and sorted({*ticks, mark.tick}).index(mark.tick) == longest
