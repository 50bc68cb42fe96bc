"""Pictures of a recorded match, drawn with Pillow: a heat map, a kill map and a score chart
(PNG), and animated GIFs of any stretch of it, kill-cams among them.

Everything here is drawn from the replay API (``replays/replay.py``) and the view's
declaration (``shared/schema.py``): ``View.world`` gives the map, each table's ``Draw``
hints say where and how its entities go. A game that declares them gets its pictures
with no code of its own, so this module must not know any game by name; a game that
declares no map still gets its score chart, and a one-line :class:`NoMap` for the rest.

One function draws a view (:func:`draw_frame`): the GIF's frames are its pictures, and
the map pictures share its geometry (:class:`Layout`), positions and colours.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from PIL import GifImagePlugin, Image, ImageChops, ImageColor, ImageDraw, ImageFont

from tickline.replays.replay import Frame, Replay
from tickline.shared.game import Rules, State
from tickline.shared.schema import Draw, Table, View, to_units

log = logging.getLogger(__name__)

RGB = tuple[int, int, int]
Font = ImageFont.FreeTypeFont | ImageFont.ImageFont

# A dark theme: player colours stay vivid on it, and the heat ramp starts clear of it.
BACKGROUND: RGB = (20, 22, 28)
FLOOR: RGB = (34, 37, 46)  # inside the map; also "no heat"
OUTLINE: RGB = (128, 132, 146)
TEXT: RGB = (232, 232, 236)
DIM: RGB = (150, 152, 164)
GRID: RGB = (52, 56, 68)
NOTE_BOX: RGB = (10, 11, 14)
FOCUS: RGB = (255, 255, 255)
NEUTRAL: RGB = (170, 170, 170)  # an entity of no player
BAR_BACK: RGB = (70, 72, 80)
BAR_COLOURS: tuple[RGB, RGB, RGB] = ((96, 200, 104), (240, 180, 60), (230, 80, 70))  # full, half, low
# One colour per player, by id (1 is the first); chosen to stay apart from each other on the dark floor.
PLAYER_COLOURS: tuple[RGB, ...] = (
    (93, 165, 218),
    (250, 164, 58),
    (237, 102, 93),
    (178, 145, 230),
    (241, 226, 86),
    (122, 214, 203),
    (241, 124, 176),
    (190, 130, 80),
    (140, 210, 90),
    (120, 130, 240),
)
# Viridis at nine even steps: perceptually even, readable in grey, and its dark end is not the floor.
HEAT_RAMP: tuple[RGB, ...] = (
    (68, 1, 84),
    (71, 45, 123),
    (59, 82, 139),
    (44, 114, 142),
    (33, 145, 140),
    (40, 174, 128),
    (94, 201, 98),
    (173, 220, 48),
    (253, 231, 37),
)

PICTURE_SIZE = 800  # px, the PNGs' width
PAD = 20  # px around the map in the PNGs
TITLE_H = 40
LEGEND_H = 48
HEAT_CELLS = 96  # heat map cells along the map's longer side
HEAT_SAMPLES_PER_S = 20  # full views counted per second of match time: a walking player's trail stays whole
GIF_MAX_FPS = 50  # GIF delays are in 1/100 s, and viewers slow anything under 2/100 s down to 1/10 s
MIN_RADIUS_PX = 2.0


class NoMap(ValueError):
    """A game whose views declare no map (no ``View.world``, or no table with draw hints)."""


# ---------------------------------------------------------------------- geometry


@dataclass(frozen=True, slots=True)
class Layout:
    """Where the world lands in a picture of ``width`` x ``height`` pixels: the world point
    (x, y) is at pixel (left + x * scale, top + y * scale)."""

    width: int
    height: int
    left: float
    top: float
    scale: float
    world: tuple[float, float]

    def to_px(self, x: float, y: float) -> tuple[float, float]:
        return self.left + x * self.scale, self.top + y * self.scale

    def map_box(self) -> tuple[int, int, int, int]:
        """The map's outline: its first and last pixel on each axis."""
        w, h = self.world
        left, top = round(self.left), round(self.top)
        return left, top, left + max(1, round(w * self.scale)) - 1, top + max(1, round(h * self.scale)) - 1


def frame_layout(world: tuple[float, float], size: int) -> Layout:
    """A GIF frame: the map alone, its longer side ``size`` pixels."""
    w, h = world
    scale = size / max(w, h)
    return Layout(max(1, round(w * scale)), max(1, round(h * scale)), 0.0, 0.0, scale, world)


def picture_layout(world: tuple[float, float], size: int = PICTURE_SIZE) -> Layout:
    """A map picture (heat map, kill map): ``size`` wide, a title above the map, a legend below."""
    w, h = world
    scale = (size - 2 * PAD) / max(w, h)
    return Layout(
        size, TITLE_H + max(1, round(h * scale)) + PAD + LEGEND_H, (size - w * scale) / 2, TITLE_H, scale, world
    )


def map_problem(rules: Rules) -> str | None:
    """Why this game's matches have no map picture (one line), or None when they have one."""
    schema = rules.view_schema()
    if schema.world is None or min(schema.world) <= 0:
        return f"{rules.name} has no map to draw: its view declares no world size (View.world)"
    if not any(table.draw is not None for table in schema.tables.values()):
        return f"{rules.name} has no map to draw: no table of its view has draw hints (Table.draw)"
    return None


def _world(rules: Rules) -> tuple[float, float]:
    problem = map_problem(rules)
    world = rules.view_schema().world
    if problem is not None or world is None:
        raise NoMap(f"{problem}; the score chart still works")
    return world


def entity_position(table: Table, entity: Mapping[str, Any], tick: int) -> tuple[float, float] | None:
    """Where an entity of ``table`` is at ``tick``, in world units (its draw hints' x and y in
    their declared units, moved along vx/vy since ``since``); None if its view lacks them."""
    hints = table.draw
    if hints is None:
        return None
    try:
        x = float(to_units(table.fields[hints.x], entity[hints.x]))
        y = float(to_units(table.fields[hints.y], entity[hints.y]))
        if hints.vx and hints.vy and hints.since:
            elapsed = tick - int(entity[hints.since])
            x += float(to_units(table.fields[hints.vx], entity[hints.vx])) * elapsed
            y += float(to_units(table.fields[hints.vy], entity[hints.vy])) * elapsed
    except (KeyError, TypeError, ValueError):
        return None  # a view may leave a field out; such an entity has no place on the map
    return x, y


def _shown(hints: Draw, entity: Mapping[str, Any]) -> bool:
    """False for an entity its ``hidden_when`` field marks as out of play (a dead player)."""
    return not hints.hidden_when or entity.get(hints.hidden_when) is not False


# ---------------------------------------------------------------------- colours and text


def player_colour(pid: int) -> RGB:
    """The colour of player ``pid`` in every picture (ids from 1; 0 or none: grey)."""
    return PLAYER_COLOURS[(pid - 1) % len(PLAYER_COLOURS)] if pid > 0 else NEUTRAL


def _pid(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0  # an id that is no number belongs to no player


@lru_cache(maxsize=64)
def _css(colour: str) -> RGB:
    try:
        r, g, b = ImageColor.getrgb(colour)[:3]
    except ValueError:
        return NEUTRAL  # a colour Pillow cannot read still draws, in grey
    return r, g, b


def _entity_colour(hints: Draw, entity_id: str, entity: Mapping[str, Any]) -> RGB:
    if hints.colour != "player":
        return _css(hints.colour)
    return player_colour(_pid(entity.get(hints.colour_by) if hints.colour_by else entity_id))


def _mix(a: RGB, b: RGB, share_b: float) -> RGB:
    r1, g1, b1 = a
    r2, g2, b2 = b
    return (
        round(r1 + (r2 - r1) * share_b),
        round(g1 + (g2 - g1) * share_b),
        round(b1 + (b2 - b1) * share_b),
    )


def _ramp(t: float) -> RGB:
    t = min(1.0, max(0.0, t)) * (len(HEAT_RAMP) - 1)
    i = min(int(t), len(HEAT_RAMP) - 2)
    return _mix(HEAT_RAMP[i], HEAT_RAMP[i + 1], t - i)


@lru_cache(maxsize=16)
def _font(size: int) -> Font:
    return ImageFont.load_default(size=size)


def _fit(pen: ImageDraw.ImageDraw, text: str, font: Font, width: float) -> str:
    """``text``, cut short with an ellipsis to fit ``width`` pixels."""
    if pen.textlength(text, font=font) <= width:
        return text
    while text and pen.textlength(text + "…", font=font) > width:
        text = text[:-1]
    return text + "…"


# ---------------------------------------------------------------------- one frame


def draw_frame(
    view: Mapping[str, Any],
    schema: View,
    tick: int,
    size: int,
    *,
    focus: int = 0,
    note: str = "",
    line: tuple[int, int] | None = None,
) -> Image.Image:
    """A picture of ``view`` (a full view or one player's) at ``tick``, the map's longer side
    ``size`` pixels, drawn from ``schema``'s draw hints alone: every table that has them, the
    players' table on top. ``focus`` rings that player; ``note`` is written top left; ``line``
    joins two players (a hitscan shot, from shooter to target)."""
    if schema.world is None:
        raise NoMap("this view declares no world size (View.world): it has no map to draw")
    layout = frame_layout(schema.world, size)
    image = Image.new("RGB", (layout.width, layout.height), FLOOR)
    pen = ImageDraw.Draw(image)
    pen.rectangle(layout.map_box(), outline=OUTLINE)
    font = _font(max(10, size // 40))
    texts: list[tuple[tuple[float, float], str, RGB]] = []  # drawn after every shape, so none hides one
    # The players' table last: a player is never hidden under a shot or a pickup.
    for name, table in sorted(schema.tables.items(), key=lambda item: item[0] == schema.players):
        if table.draw is None:
            continue
        players = name == schema.players
        for entity_id, entity in (view.get(name) or {}).items():
            ringed = players and focus != 0 and _pid(entity_id) == focus
            texts += _draw_entity(pen, layout, table, table.draw, str(entity_id), entity, tick, ringed)
    if line is not None:
        _draw_line(pen, layout, view, schema, tick, line)
    for at, text, colour in texts:
        pen.text(at, text, fill=colour, font=font)
    if note:
        _draw_note(pen, note, _font(max(11, size // 32)))
    return image


def _draw_entity(
    pen: ImageDraw.ImageDraw,
    layout: Layout,
    table: Table,
    hints: Draw,
    entity_id: str,
    entity: Mapping[str, Any],
    tick: int,
    ringed: bool,
) -> list[tuple[tuple[float, float], str, RGB]]:
    """Draw one entity's shape and bar; its label, to be written last."""
    at = entity_position(table, entity, tick)
    if at is None:
        return []
    x, y = layout.to_px(*at)
    r = max(MIN_RADIUS_PX, hints.size * layout.scale)
    shown = _shown(hints, entity)
    colour = _entity_colour(hints, entity_id, entity)
    if not shown:
        colour = _mix(colour, FLOOR, 0.6)
    box = (x - r, y - r, x + r, y + r)
    if hints.shape == "square":
        pen.rectangle(box, fill=colour)
    elif hints.shape == "ring":
        pen.ellipse(box, outline=colour, width=max(1, round(r / 3)))
    else:
        pen.ellipse(box, fill=colour)
    if ringed:
        pen.ellipse((x - r - 3, y - r - 3, x + r + 3, y + r + 3), outline=FOCUS, width=2)
    if hints.bar and shown and hints.bar_max > 0 and hints.bar in table.fields:
        value = entity.get(hints.bar)
        if isinstance(value, int | float) and not isinstance(value, bool):
            share = min(1.0, max(0.0, float(to_units(table.fields[hints.bar], value)) / hints.bar_max))
            half = max(6.0, r)
            top = y - r - 6
            pen.rectangle((x - half, top, x + half, top + 2), fill=BAR_BACK)
            fill = BAR_COLOURS[0] if share > 0.5 else BAR_COLOURS[1] if share > 0.25 else BAR_COLOURS[2]
            if share > 0:
                pen.rectangle((x - half, top, x - half + 2 * half * share, top + 2), fill=fill)
    if hints.label and entity.get(hints.label) not in (None, ""):
        return [((x + r + 3, y - r), str(entity[hints.label])[:16], TEXT if shown else DIM)]
    return []


def _draw_line(
    pen: ImageDraw.ImageDraw, layout: Layout, view: Mapping[str, Any], schema: View, tick: int, pair: tuple[int, int]
) -> None:
    table = schema.tables.get(schema.players)
    entities = view.get(schema.players) or {}
    if table is None:
        return
    ends = [entity_position(table, entities.get(str(pid)) or {}, tick) for pid in pair]
    if ends[0] is None or ends[1] is None:
        return
    (x0, y0), (x1, y1) = layout.to_px(*ends[0]), layout.to_px(*ends[1])
    pen.line((x0, y0, x1, y1), fill=player_colour(pair[0]), width=2)


def _draw_note(pen: ImageDraw.ImageDraw, note: str, font: Font) -> None:
    left, top, right, bottom = pen.textbbox((6, 4), note, font=font)
    pen.rectangle((left - 4, top - 3, right + 4, bottom + 3), fill=NOTE_BOX)
    pen.text((6, 4), note, fill=TEXT, font=font)


# ---------------------------------------------------------------------- the match's PNGs


@dataclass(slots=True)
class _Tally:
    """What one pass over the match gathers for the map pictures."""

    rules: Rules
    schema: View
    table: Table  # the players' table, which has draw hints
    every: int  # a full view every this many ticks
    cell: float  # heat cell side, world units
    cols: int
    rows: int
    heat: list[float]
    samples: int = 0
    # (x, y, killer, event) for each mark that names a victim with a place on the map
    kills: list[tuple[float, float, int, dict[str, Any]]] = field(default_factory=list)
    marks_seen: int = 0

    def visit(self, frame: Frame) -> None:
        kinds = self.rules.marks
        marked = [e for e in frame.events if e.get("k") in kinds]
        self.marks_seen += len(marked)
        sampled = frame.tick % self.every == 0
        if not sampled and not marked:
            return
        table = self.table
        assert table.draw is not None
        entities: Mapping[str, Any] = self.rules.spectator_view(frame.state).get(self.schema.players) or {}
        if sampled:
            self.samples += 1
            for entity in entities.values():
                at = entity_position(table, entity, frame.tick)
                if at is not None and _shown(table.draw, entity):  # the dead spend no time anywhere
                    col = min(self.cols - 1, max(0, int(at[0] / self.cell)))
                    row = min(self.rows - 1, max(0, int(at[1] / self.cell)))
                    self.heat[row * self.cols + col] += 1
        for event in marked:
            victim = entities.get(str(event.get("p")))
            at = None if victim is None else entity_position(table, victim, frame.tick)
            if at is not None:
                self.kills.append((at[0], at[1], _pid(event.get("by")), event))


def render_pngs(replay: Replay, out_dir: Path, *, size: int = PICTURE_SIZE) -> list[Path]:
    """Write ``heatmap.png``, ``kills.png`` and ``scores.png`` of the match into ``out_dir``;
    the paths written. A picture that cannot be drawn (a game with no map, a match with no
    placed marks) is left out, and why is logged as a warning on this module's logger.
    One pass re-simulates the whole match (``Replay.scan``)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    problem = _players_problem(replay.rules)
    if problem is not None:
        log.warning("no heatmap.png or kills.png: %s", problem)
    else:
        tally = _new_tally(replay)
        replay.scan(tally.visit)
        path = out_dir / "heatmap.png"
        _heatmap(replay, tally, size).save(path)
        written.append(path)
        if tally.kills:
            path = out_dir / "kills.png"
            _kill_map(replay, tally, size).save(path)
            written.append(path)
        elif tally.marks_seen:
            log.warning("no kills.png: this match's marks (%s) name no victim with a place on the map", _kinds(replay))
        else:
            log.warning("no kills.png: this match has no marks (%s)", _kinds(replay))
    path = out_dir / "scores.png"
    _score_chart(replay, size).save(path)  # its own pass, unless the scan above already summed the match
    written.append(path)
    return written


def _players_problem(rules: Rules) -> str | None:
    """Why this game has no heat map (nor kill map), or None."""
    problem = map_problem(rules)
    schema = rules.view_schema()
    table = schema.tables.get(schema.players)
    if problem is None and (table is None or table.draw is None):
        return f"{rules.name} has no players on its map: its players' table {schema.players!r} has no draw hints"
    return problem


def _kinds(replay: Replay) -> str:
    return ", ".join(replay.rules.marks) or "the game marks no events"


def _new_tally(replay: Replay) -> _Tally:
    schema = replay.rules.view_schema()
    w, h = _world(replay.rules)
    cell = max(w, h) / HEAT_CELLS
    cols, rows = max(1, math.ceil(w / cell)), max(1, math.ceil(h / cell))
    every = max(1, replay.tick_rate // HEAT_SAMPLES_PER_S)
    table = schema.tables[schema.players]
    return _Tally(replay.rules, schema, table, every, cell, cols, rows, [0.0] * (cols * rows))


def _map_picture(replay: Replay, size: int, title: str) -> tuple[Image.Image, ImageDraw.ImageDraw, Layout]:
    layout = picture_layout(_world(replay.rules), size)
    image = Image.new("RGB", (layout.width, layout.height), BACKGROUND)
    pen = ImageDraw.Draw(image)
    pen.rectangle(layout.map_box(), fill=FLOOR)
    pen.text((PAD, 12), _fit(pen, title, _font(16), size - 2 * PAD), fill=TEXT, font=_font(16))
    return image, pen, layout


def _title(replay: Replay, what: str) -> str:
    return f"{replay.header.game} {replay.header.match_id[:8]}: {what} · {replay.duration_s:.0f} s"


def _heatmap(replay: Replay, tally: _Tally, size: int) -> Image.Image:
    """Time spent around each cell, colour by its share of the busiest, square-root scaled (so
    that places passed through show beside places stood in)."""
    assert tally.table.draw is not None
    # Each sample spreads over about the disc the entity covers: a Gaussian (round, and separable),
    # cut where one sample's share falls under 2% (2.8 sigma), so one visit is a disc of its radius.
    sigma = max(0.75, tally.table.draw.size / tally.cell / 2.8)
    kernel = _gaussian(sigma)
    heat = _blur(_blur(tally.heat, tally.cols, tally.rows, kernel, across=True), tally.cols, tally.rows, kernel)
    peak = max(heat, default=0.0)
    floor = 0.02 * kernel[len(kernel) // 2] ** 2
    cells = bytearray()
    for value in heat:
        cells += bytes(FLOOR if value < floor else _ramp(math.sqrt(value / peak)))
    image, pen, layout = _map_picture(replay, size, _title(replay, "where players spent their time"))
    left, top, right, bottom = layout.map_box()
    grid = Image.frombytes("RGB", (tally.cols, tally.rows), bytes(cells))
    # The last cell of a side that is no whole number of cells reaches past the map: cut, not squeezed in.
    w, h = layout.world
    inside = (0.0, 0.0, w / tally.cell, h / tally.cell)
    image.paste(grid.resize((right - left + 1, bottom - top + 1), Image.Resampling.BILINEAR, box=inside), (left, top))
    pen.rectangle(layout.map_box(), outline=OUTLINE)
    # Legend: the ramp, and what its top means in time.
    font = _font(13)
    y = bottom + PAD
    pen.text((PAD, y), "less", fill=DIM, font=font)
    ramp_left = PAD + 36
    ramp_w = min(200, size // 4)
    for i in range(ramp_w):
        pen.line((ramp_left + i, y + 2, ramp_left + i, y + 12), fill=_ramp(math.sqrt(i / (ramp_w - 1))))
    pen.text((ramp_left + ramp_w + 6, y), "more", fill=DIM, font=font)
    busiest = max(tally.heat, default=0.0) * tally.every / replay.tick_rate
    caption = (
        f"square-root scale; busiest cell ({tally.cell:.3g} units): {busiest:.1f} player-s; {tally.samples} samples"
    )
    caption_left = ramp_left + ramp_w + 50
    pen.text((caption_left, y), _fit(pen, caption, font, size - PAD - caption_left), fill=DIM, font=font)
    return image


def _gaussian(sigma: float) -> list[float]:
    """A normalised Gaussian kernel out to 3 sigma (cells)."""
    reach = math.ceil(3 * sigma)
    weights = [math.exp(-(d * d) / (2 * sigma * sigma)) for d in range(-reach, reach + 1)]
    total = sum(weights)
    return [w / total for w in weights]


def _blur(values: list[float], cols: int, rows: int, kernel: list[float], *, across: bool = False) -> list[float]:
    """``values`` (rows of ``cols``) convolved with ``kernel`` along one axis, zeros beyond the edges."""
    out = [0.0] * len(values)
    reach = len(kernel) // 2
    for i, value in enumerate(values):
        if not value:
            continue  # most cells were never visited: spread only what is there
        row, col = divmod(i, cols)
        for k, weight in enumerate(kernel):
            c, r = (col + k - reach, row) if across else (col, row + k - reach)
            if 0 <= c < cols and 0 <= r < rows:
                out[r * cols + c] += value * weight
    return out


def _kill_map(replay: Replay, tally: _Tally, size: int) -> Image.Image:
    """A cross at each victim's place, in its killer's colour; who killed how often below."""
    what = f"{_kinds(replay)} marks, where each victim was ({len(tally.kills)})"
    image, pen, layout = _map_picture(replay, size, _title(replay, what))
    pen.rectangle(layout.map_box(), outline=OUTLINE)
    arm = 7
    for x, y, killer, _ in tally.kills:
        px, py = layout.to_px(x, y)
        for width, colour in ((6, NOTE_BOX), (3, player_colour(killer))):  # a dark edge keeps it off any floor
            pen.line((px - arm, py - arm, px + arm, py + arm), fill=colour, width=width)
            pen.line((px - arm, py + arm, px + arm, py - arm), fill=colour, width=width)
    counts: dict[int, int] = {}
    for _, _, killer, _ in tally.kills:
        counts[killer] = counts.get(killer, 0) + 1
    names = replay.summary.players
    entries = [
        (player_colour(pid), f"{names.get(pid, f'player {pid}') if pid else 'nobody'} ({n})")
        for pid, n in sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    ]
    _legend_row(pen, "killer:", entries, layout.map_box()[3] + PAD, size)
    return image


def _legend_row(pen: ImageDraw.ImageDraw, lead: str, entries: list[tuple[RGB, str]], y: int, size: int) -> None:
    """Swatches and names along one row; what does not fit is counted, not drawn."""
    font = _font(13)
    pen.text((PAD, y), lead, fill=DIM, font=font)
    x = PAD + pen.textlength(lead, font=font) + 10
    for i, (colour, text) in enumerate(entries):
        width = 16 + pen.textlength(text, font=font) + 16
        if x + width > size - PAD - 70 and i < len(entries) - 1:
            pen.text((x, y), f"+{len(entries) - i} more", fill=DIM, font=font)
            return
        pen.rectangle((x, y + 2, x + 10, y + 12), fill=colour)
        pen.text((x + 16, y), text, fill=TEXT, font=font)
        x += width


def _nice_step(span: float, ticks: int = 6) -> float:
    """A round axis step (1, 2 or 5 times a power of ten) giving about ``ticks`` divisions."""
    raw = max(span, 1e-9) / ticks
    magnitude = 10.0 ** math.floor(math.log10(raw))
    return next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw)


def _steps(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    out = points[:1]
    for t, s in points[1:]:
        out += [(t, out[-1][1]), (t, s)]
    return out


def _score_chart(replay: Replay, size: int) -> Image.Image:
    """Each player's score over the match, sampled once a second (``Replay.summary.scores``)."""
    summary = replay.summary
    rate = replay.tick_rate
    series: dict[int, list[tuple[float, float]]] = {}
    for tick, scores in summary.scores:
        for key, score in scores.items():
            series.setdefault(_pid(key), []).append((tick / rate, float(score)))
    width, height = size, round(size * 0.6)
    image = Image.new("RGB", (width, height), BACKGROUND)
    pen = ImageDraw.Draw(image)
    font, small = _font(16), _font(12)
    pen.text((PAD, 12), _fit(pen, _title(replay, "score over time"), font, width - 2 * PAD), fill=TEXT, font=font)
    left, top, right, bottom = 56, TITLE_H + 10, width - 180, height - 44
    t_max = max([replay.duration_s] + [t for points in series.values() for t, _ in points])
    s_max = max([1.0] + [s for points in series.values() for _, s in points])
    t_step, s_step = _nice_step(t_max), max(1.0, _nice_step(s_max, 5))
    t_max = max(t_max, 1e-9)
    s_top = math.ceil(s_max / s_step) * s_step

    def at(t: float, s: float) -> tuple[float, float]:
        return left + (right - left) * t / t_max, bottom - (bottom - top) * s / s_top

    for i in range(int(t_max / t_step) + 1):
        x, _ = at(i * t_step, 0)
        pen.line((x, top, x, bottom), fill=GRID)
        label = f"{i * t_step:g}"
        pen.text((x - pen.textlength(label, font=small) / 2, bottom + 6), label, fill=DIM, font=small)
    for i in range(int(s_top / s_step) + 1):
        _, y = at(0, i * s_step)
        pen.line((left, y, right, y), fill=GRID)
        label = f"{i * s_step:g}"
        pen.text((left - 8 - pen.textlength(label, font=small), y - 7), label, fill=DIM, font=small)
    pen.rectangle((left, top, right, bottom), outline=OUTLINE)
    pen.text(((left + right) / 2 - 30, bottom + 24), "time (s)", fill=DIM, font=small)
    pen.text((8, top - 20), "score", fill=DIM, font=small)
    if not series:
        pen.text((left + 20, top + 20), "no scores recorded", fill=DIM, font=font)
    for pid in sorted(series):
        # Steps: a score holds until the next sample shows it changed (they are a second apart).
        points = [at(t, s) for t, s in _steps(series[pid])]
        if len(points) > 1:
            pen.line(points, fill=player_colour(pid), width=2)
        x, y = points[-1]
        pen.ellipse((x - 3, y - 3, x + 3, y + 3), fill=player_colour(pid))
    # Legend: highest final score first.
    y = top
    ranked = sorted(series, key=lambda pid: (-series[pid][-1][1], pid))
    for i, pid in enumerate(ranked):
        if y > bottom - 16 and i < len(ranked) - 1:
            pen.text((right + 16, y), f"+{len(ranked) - i} more", fill=DIM, font=small)
            break
        name = summary.players.get(pid, f"player {pid}")
        pen.rectangle((right + 16, y + 3, right + 26, y + 13), fill=player_colour(pid))
        text = _fit(pen, f"{name} {series[pid][-1][1]:g}", small, width - right - 40)
        pen.text((right + 32, y), text, fill=TEXT, font=small)
        y += 20
    return image


# ---------------------------------------------------------------------- GIFs


def gif_ticks(start: int, stop: int, tick_rate: int, *, speed: float = 1.0, fps: int = 15) -> tuple[list[int], float]:
    """The ticks a GIF of ``start``..``stop`` shows, and each frame's duration in ms: ``fps`` frames a
    second of match time scaled by ``speed``, a frame every ``tick_rate * speed / fps`` ticks. Slower
    than a tick a frame, every tick is shown, each for longer (no frame is shown twice)."""
    per_frame = tick_rate * speed / fps
    frame_ms = 1000 / fps
    if per_frame < 1:
        per_frame, frame_ms = 1.0, 1000 / (tick_rate * speed)
    ticks = []
    k = 0
    while (tick := start + int(k * per_frame + 1e-9)) <= stop:
        ticks.append(tick)
        k += 1
    return ticks, frame_ms


def render_gif(
    replay: Replay,
    path: Path,
    *,
    start: int = 1,
    stop: int | None = None,
    size: int = 480,
    speed: float = 1.0,
    fps: int = 15,
    follow: int = 0,
    hold: tuple[int, int] | None = None,
    hold_ms: int = 800,
) -> Path:
    """An animated GIF of ticks ``start`` to ``stop`` (default: the last), the map's longer side
    ``size`` pixels, at ``fps`` frames a second of match time times ``speed`` (see :func:`gif_ticks`),
    with the time and tick written top left.

    ``follow``: draw that player's own view (what it was shown, fog included) and ring it;
    0 draws the whole match. ``hold``: ``(tick, seen)``: at ``tick`` (always among the frames)
    show the followed player's view as of tick ``seen``, itself where it was at ``tick``, a line
    to whoever the event at ``tick`` names, and keep that frame ``hold_ms`` longer: a kill-cam's
    firing moment, what the shooter saw when it fired (``clip.shooter_view_tick``)."""
    _world(replay.rules)
    stop = replay.ticks if stop is None else stop
    if not 1 <= start <= stop <= replay.ticks:
        raise ValueError(f"ticks {start} to {stop} are not within the match (1 to {replay.ticks})")
    if not 1 <= fps <= GIF_MAX_FPS:
        raise ValueError(f"fps must be 1 to {GIF_MAX_FPS} (a GIF's delays are in hundredths of a second)")
    if speed <= 0 or size < 32:
        raise ValueError("speed must be above 0 and size at least 32 pixels")
    if hold is not None and not start <= hold[0] <= stop:
        raise ValueError(f"the held tick {hold[0]} is not within ticks {start} to {stop}")
    ticks, frame_ms = gif_ticks(start, stop, replay.tick_rate, speed=speed, fps=fps)
    if hold is not None and hold[0] not in ticks:
        ticks = sorted([*ticks, hold[0]])
    # Each frame ends on the GIF's 1/100 s grid at its exact time, so long clips keep the match's pace.
    ends = [10 * round((i + 1) * frame_ms / 10) for i in range(len(ticks))]
    durations = [end - before for end, before in zip(ends, [0, *ends[:-1]], strict=True)]
    if hold is not None:
        durations[ticks.index(hold[0])] += 10 * round(hold_ms / 10)
    palette = _gif_palette(replay.rules.view_schema())
    part = path.with_name(path.name + ".part")
    try:
        _write_gif(part, zip(_gif_frames(replay, ticks, size, follow, hold, palette), durations, strict=True))
        part.replace(path)
    finally:
        part.unlink(missing_ok=True)
    return path


def _gif_frames(
    replay: Replay, ticks: list[int], size: int, follow: int, hold: tuple[int, int] | None, palette: Image.Image
) -> Iterator[Image.Image]:
    schema = replay.rules.view_schema()
    wanted = set(ticks)
    rate = replay.tick_rate
    for frame in replay.frames(ticks[0], ticks[-1]):
        if frame.tick not in wanted:
            continue
        note = f"{frame.tick / rate:.2f} s  tick {frame.tick}"
        line = None
        held = hold is not None and frame.tick == hold[0]
        if held and follow and hold is not None:
            view = view_as_seen(replay, follow, frame.state, hold[1])
            line = _held_line(replay, frame, follow)
        else:
            view = replay.view(frame.state, follow) if follow else replay.full_view(frame.state)
        if follow:
            note += f"  {_name(view, schema, follow)}'s view"
        if held and follow and hold is not None:
            note += f" as seen at tick {hold[1]}"
        image = draw_frame(view, schema, frame.tick, size, focus=follow, note=note, line=line)
        # One fixed palette for every frame: no colour flicker, and each frame diffs against the last.
        yield image.quantize(palette=palette, dither=Image.Dither.NONE)


def view_as_seen(replay: Replay, player: int, state: State, seen: int) -> dict[str, Any]:
    """``player``'s view of the match as of tick ``seen``, with its own entity as ``state`` has
    it: what a lag-compensated shooter saw when firing (the others where its screen drew them,
    some ticks back; itself where it was, as client prediction shows it)."""
    schema = replay.rules.view_schema()
    now = replay.view(state, player)
    then = replay.view(replay.state_at(seen), player)
    players = dict(then.get(schema.players) or {})
    me = (now.get(schema.players) or {}).get(str(player))
    if me is not None:
        players[str(player)] = me
    return {**then, schema.players: players}


def _held_line(replay: Replay, frame: Frame, player: int) -> tuple[int, int] | None:
    """The shooter and the first player a marked event at this tick says it hit."""
    for event in frame.events:
        if event.get("k") in replay.rules.marks and _pid(event.get("by")) == player and _pid(event.get("p")):
            return player, _pid(event["p"])
    return None


def _name(view: Mapping[str, Any], schema: View, pid: int) -> str:
    table = schema.tables.get(schema.players)
    entity = (view.get(schema.players) or {}).get(str(pid)) or {}
    if table is not None and table.draw is not None and table.draw.label and entity.get(table.draw.label):
        return str(entity[table.draw.label])
    return f"player {pid}"


def _gif_palette(schema: View) -> Image.Image:
    """The colours every frame is mapped to: the theme's, each player's (full and faded), the
    tables' own, their blends with the floor (text and shape edges) and a grey ramp; 256 at most."""
    fixed = [_css(t.draw.colour) for t in schema.tables.values() if t.draw is not None and t.draw.colour != "player"]
    base = [BACKGROUND, FLOOR, OUTLINE, TEXT, DIM, GRID, NOTE_BOX, FOCUS, NEUTRAL, BAR_BACK, *BAR_COLOURS]
    colours: list[RGB] = [*base, *PLAYER_COLOURS, *fixed]
    for colour in [*PLAYER_COLOURS, *fixed, TEXT, DIM, FOCUS]:
        colours += [_mix(colour, FLOOR, share) for share in (0.2, 0.4, 0.6, 0.8)]
    colours += [_mix(TEXT, NOTE_BOX, share / 8) for share in range(1, 8)]
    colours += [(v, v, v) for v in range(0, 256, 8)]
    unique = list(dict.fromkeys(colours))[:256]
    image = Image.new("P", (1, 1))
    image.putpalette([channel for colour in unique for channel in colour] + [0] * 3 * (256 - len(unique)))
    return image


def _write_gif(path: Path, frames: Iterable[tuple[Image.Image, int]]) -> int:
    """Write palette frames (one palette, as :func:`_gif_palette` makes) with their durations in ms
    as a looping GIF, each cropped to what changed since the last; how many were written.

    Frame by frame, with Pillow's GIF header and frame encoders, because ``Image.save(append_images=...)``
    keeps every frame in memory until it writes: a whole match is thousands of frames."""
    count = 0
    previous: Image.Image | None = None
    with path.open("wb") as out:
        for image, duration in frames:
            if previous is None:
                header, _ = GifImagePlugin.getheader(image.copy(), info={"loop": 0})
                out.write(b"".join(header))
                box: tuple[int, int, int, int] = (0, 0, *image.size)
            else:
                # An unchanged frame is still written (one pixel), to keep its place and duration.
                box = ImageChops.subtract_modulo(image, previous).getbbox() or (0, 0, 1, 1)
            for chunk in GifImagePlugin.getdata(image.crop(box), offset=box[:2], duration=duration):
                out.write(chunk)
            previous = image
            count += 1
        out.write(b";")  # the GIF trailer
    return count
