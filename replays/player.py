"""The replay player: one recorded match as one self-contained HTML page that plays it.

This module owns the page's data and its assembly. The data is what each player
was shown, and the whole map, at sampled ticks (at most ``fps`` a second):
the whole map's stream holds a whole view every 5 seconds, for seeking, and
between those the delta from the sample before (``shared/delta.py``'s format);
each player's stream holds, per sample, the delta from the whole map's view at
that sample to the player's, or ``0`` where they are equal. With the view schema (draw hints, units,
interpolated fields), the players, the timeline's marks and the game's draw
hook, it is JSON, gzip'd and base64'd into the page, which decompresses it
with the browser's own ``DecompressionStream``. The page's HTML and script are
real files beside this module (``player.html``, ``player.js``), inlined here.

It must not know the network or the server: the page loads nothing from
anywhere, and rendering is plain computation over a :class:`Replay` (callers
on an event loop run it in a worker thread).
"""

from __future__ import annotations

import base64
import dataclasses
import gzip
import html
import re
from functools import cache
from importlib import resources
from typing import Any

import orjson

from tickline.replays.replay import Replay
from tickline.shared.delta import diff
from tickline.shared.schema import View

FORMAT = 2  # the embedded data's layout; player.js reads this version
MAX_FPS = 1000
_DATA = re.compile(r'<script type="application/octet-stream" id="tickline-data">([A-Za-z0-9+/=]*)</script>')
_SLOT = re.compile(r"\{\{(title|data|script)\}\}")


def render_html(
    replay: Replay,
    *,
    start: int = 1,
    stop: int | None = None,
    follow: int = 0,
    fps: int | None = None,
    title: str = "",
) -> str:
    """The page that plays ticks ``start`` to ``stop`` (default: the last) of ``replay``,
    following player ``follow`` (0: the whole map), sampled at most ``fps`` times a second
    (default: the tick rate, at most 30; fewer for a match longer than 10 minutes, at least 10:
    ``default_fps``). ValueError for a range or player the match lacks."""
    data = page_data(replay, start=start, stop=stop, follow=follow, fps=fps)
    packed = base64.b64encode(gzip.compress(orjson.dumps(data), compresslevel=6, mtime=0)).decode("ascii")
    name = title or f"{data['game']} match {data['match_id'][:8]}".strip()
    slots = {"title": html.escape(name), "data": packed, "script": _script()}
    return _SLOT.sub(lambda m: slots[m.group(1)], _template())


# A page holds at most about this many seconds of samples at 30 a second, per stream: a longer
# match is sampled more sparsely (and interpolated), down to 10 a second, so that a
# 30-minute match's page stays a few tens of MB rather than a hundred.
SAMPLED_S = 600
KEYFRAME_S = 5
MIN_DEFAULT_FPS = 10


def default_fps(tick_rate: int, ticks: int) -> int:
    """Samples a second for ``ticks`` of a match: up to 30 (the tick rate, if lower), fewer for
    long matches (at least 10)."""
    seconds = max(1.0, ticks / tick_rate)
    return max(min(tick_rate, MIN_DEFAULT_FPS), min(tick_rate, 30, int(30 * SAMPLED_S / seconds)))


def page_data(
    replay: Replay, *, start: int = 1, stop: int | None = None, follow: int = 0, fps: int | None = None
) -> dict[str, Any]:
    """What the page embeds, before packing (see the module's docstring)."""
    last = replay.ticks
    stop = last if stop is None else stop
    if last < 1:
        raise ValueError("the match has no ticks to play yet")
    if not 1 <= start <= stop <= last:
        raise ValueError(f"ticks {start} to {stop} are not within the match (1 to {last})")
    rate = replay.tick_rate
    fps = default_fps(rate, stop - start + 1) if fps is None else fps
    if not 1 <= fps <= MAX_FPS:
        raise ValueError(f"fps {fps} is out of range; use 1 to {MAX_FPS}")
    players = {str(pid): name for pid, name in replay.players(stop).items()}
    if follow and str(follow) not in players:
        raise ValueError(f"player {follow} is not in this match; its players are {', '.join(players) or 'none'}")

    every = -(-rate // fps)  # ticks per sample, rounded up: at most fps samples a second
    # A whole view every KEYFRAME_S seconds of samples: seeking applies at most that many
    # deltas in the page (a few milliseconds), and whole views were most of a long match's bytes.
    keyframe_every = max(1, round(KEYFRAME_S * rate / every))
    sampled = list(range(start, stop + 1, every))
    if sampled[-1] != stop:
        sampled.append(stop)
    wanted = set(sampled)
    streams: dict[str, list[Any]] = {"full": [], **{pid: [] for pid in players}}
    before: dict[str, dict[str, Any]] = {}
    kinds = set(replay.rules.marks)
    marks: list[list[Any]] = []
    state: dict[str, Any] = {}
    # One pass over the range only (a clip of a long match re-simulates its seconds, not the match).
    for frame in replay.frames(start, stop):
        state = frame.state
        marks += [[frame.tick, event] for event in frame.events if event.get("k") in kinds]
        if frame.tick not in wanted:
            continue
        whole = len(streams["full"]) % keyframe_every == 0
        full = replay.full_view(frame.state)
        _add(streams["full"], before, "full", full, whole)
        for pid in players:
            view = replay.view(frame.state, int(pid))
            # A player's view is told as its difference from the whole map's at the same sample
            # (fog: mostly entities removed; arena's views share the entity dicts, so the diff
            # skips them by identity), or 0 where they are equal (no fog, not yet joined).
            streams[pid].append(0 if view == full else diff(full, view))

    header = replay.header
    return {
        "format": FORMAT,
        "game": header.game,
        "game_version": replay.rules.version,
        "match_id": header.match_id,
        "status": replay.status,
        "tick_rate": rate,
        "start": start,
        "stop": stop,
        "ticks": sampled,
        "keyframe_every": keyframe_every,
        "schema": schema_json(replay.rules.view_schema()),
        "players": players,
        "follow": str(follow) if follow else "",
        "marks": marks,
        "result": replay.rules.result(state),
        "draw_hook": replay.rules.draw_hook,
        "streams": streams,
    }


def _add(frames: list[Any], before: dict[str, dict[str, Any]], stream: str, view: dict[str, Any], whole: bool) -> None:
    """A stream's frame: the whole view at a keyframe, else the delta from its last view.
    Views are never changed once built (shared/delta.py), so keeping them is safe."""
    frames.append(view if whole else diff(before[stream], view))
    before[stream] = view


def schema_json(view: View) -> dict[str, Any]:
    """What the page needs of a game's view declaration: the map, each table's draw hints,
    interpolated fields and field units (``scale`` turns a value into its unit)."""
    return {
        "world": list(view.world) if view.world else None,
        "players": view.players,
        "tables": {
            name: {
                "doc": table.doc,
                "key": table.key,
                "interpolate": list(table.interpolate),
                "draw": dataclasses.asdict(table.draw) if table.draw is not None else None,
                "fields": {f: {"unit": s.unit, "scale": s.scale, "doc": s.doc} for f, s in table.fields.items()},
            }
            for name, table in view.tables.items()
        },
        "values": {name: {"unit": s.unit, "scale": s.scale, "doc": s.doc} for name, s in view.values.items()},
    }


def read_data(page: str) -> dict[str, Any]:
    """The data embedded in a page :func:`render_html` made (for tests and tools)."""
    found = _DATA.search(page)
    if found is None:
        raise ValueError("this page holds no tickline replay data")
    data: dict[str, Any] = orjson.loads(gzip.decompress(base64.b64decode(found.group(1))))
    return data


@cache
def _template() -> str:
    return (resources.files("tickline.replays") / "player.html").read_text(encoding="utf-8")


@cache
def _script() -> str:
    script = (resources.files("tickline.replays") / "player.js").read_text(encoding="utf-8")
    if "</script" in script.lower():
        raise RuntimeError("player.js must not contain '</script': it is inlined into the page")
    return script
