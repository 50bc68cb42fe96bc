"""Clips of a match (kill-cams): which event, which ticks around it, whose eyes, and what a
lag-compensated shooter saw when it fired.

Look-ups over the replay API (``replays/replay.py``) and the event's own fields: ``p``
names the player an event is about (arena's victim), ``by`` who caused it (the killer).
Drawing is ``replays/pictures.py``'s; :func:`render_clip` only joins the two.
"""

from __future__ import annotations

from pathlib import Path

from tickline.replays.pictures import render_gif
from tickline.replays.replay import Mark, Replay

POVS = ("killer", "victim", "map")


def find_event(replay: Replay, spec: str) -> Mark:
    """The event ``spec`` names, ``KIND:N``: the N-th (from 1) event of that kind, such as ``kill:3``.
    Kinds the game marks (``Rules.marks``) come from the replay's summary; any other kind is
    looked for in one pass over the match."""
    kind, sep, number = spec.partition(":")
    if not sep or not kind or not number.isdigit() or int(number) < 1:
        raise ValueError(f"event {spec!r} must be KIND:N with N from 1, such as kill:3")
    n = int(number)
    if kind in replay.rules.marks:
        found = [mark for mark in replay.summary.marks if mark.event.get("k") == kind]
    else:
        found = [Mark(f.tick, e) for f in replay.frames() for e in f.events if e.get("k") == kind]
    if not found:
        marked = ", ".join(replay.rules.marks) or "none"
        raise ValueError(f"this match has no {kind!r} events (the kinds {replay.rules.name} marks: {marked})")
    if n > len(found):
        raise ValueError(
            f"there is no {kind}:{n}: this match has {len(found)} {kind!r} events ({kind}:1 to {kind}:{len(found)})"
        )
    return found[n - 1]


def clip_range(replay: Replay, mark: Mark, before_s: float, after_s: float) -> tuple[int, int]:
    """The ticks (first, last) from ``before_s`` seconds before the mark to ``after_s`` after it,
    cut to the match."""
    if before_s < 0 or after_s < 0:
        raise ValueError("a clip's seconds before and after its event cannot be negative")
    rate = replay.tick_rate
    return max(1, mark.tick - round(before_s * rate)), min(replay.ticks, mark.tick + round(after_s * rate))


def clip_follow(mark: Mark, pov: str) -> int:
    """The player whose view a clip of ``mark`` shows: ``"killer"`` is the event's ``by``,
    ``"victim"`` its ``p`` (an event with no ``by`` is seen through its ``p`` either way);
    ``"map"``, or an event that names nobody: 0, the whole map."""
    if pov not in POVS:
        raise ValueError(f"point of view {pov!r} must be one of {', '.join(POVS)}")
    event = mark.event
    if pov == "map":
        return 0
    if pov == "killer" and isinstance(event.get("by"), int):
        return int(event["by"])
    return int(event["p"]) if isinstance(event.get("p"), int) else 0


def shooter_view_tick(replay: Replay, mark: Mark) -> int:
    """The tick the killer (``by``) was looking at when it fired the shot of ``mark``: the ``vt``
    its input carried at the mark's tick, or the last it sent before (a game keeps a player's
    last controls, and arena's hitscan judges a shot at that tick), at most the mark's tick;
    the mark's tick itself when the killer never sent one (a projectile weapon, an old client).

    This is the tick the client drew; arena also caps its rewind at ``lag_comp_ms``, which only
    matters to a client more than that far behind."""
    killer = mark.event.get("by")
    if not isinstance(killer, int):
        return mark.tick
    for tick in range(mark.tick, 0, -1):
        inputs = replay.inputs(tick)
        seen = (inputs.inputs.get(killer) or {}).get("vt")
        if isinstance(seen, int):
            return max(1, min(mark.tick, seen))
        if any(pid == killer for pid, _ in inputs.joins):
            break  # nothing it sent before it joined counts
    return mark.tick


def render_clip(
    replay: Replay,
    spec: str,
    path: Path,
    *,
    before_s: float = 3.0,
    after_s: float = 2.0,
    pov: str = "killer",
    size: int = 480,
    speed: float = 1.0,
    fps: int = 15,
) -> Path:
    """A GIF of the event ``spec`` (``kill:3``) through ``pov``'s eyes. Seen by the killer, the
    tick of the kill shows what the killer saw when it fired, held a moment."""
    mark = find_event(replay, spec)
    start, stop = clip_range(replay, mark, before_s, after_s)
    follow = clip_follow(mark, pov)
    hold = None
    if pov == "killer" and follow and follow == mark.event.get("by"):
        hold = (mark.tick, shooter_view_tick(replay, mark))
    return render_gif(replay, path, start=start, stop=stop, size=size, speed=speed, fps=fps, follow=follow, hold=hold)
