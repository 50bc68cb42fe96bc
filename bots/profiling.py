"""Where a server's time goes: a py-spy recording of its process, summarised.

``tickline capacity --profile-out FILE`` records the server at its capacity and
prints the functions and areas (event log, QUIC, the game's rules, deltas, ...)
that took its CPU. py-spy is optional (``pip install py-spy``); without it the
profile says so and the rest of the run is unaffected.
"""

from __future__ import annotations

import asyncio
import linecache
import os
import re
import shutil
import sys
from collections import Counter
from pathlib import Path
from typing import Any

# Where a leaf frame's file puts its self time (the first match wins; C code counts for its caller).
AREAS = (
    ("event log (SQLite writer)", ("server/eventlog.py", "aiosqlite/", "sqlalchemy/", "sqlite3/")),
    ("metrics and HTTP", ("server/http.py", "prometheus_client/", "aiohttp/", "multidict/", "yarl/")),
    ("QUIC and TLS (aioquic)", ("aioquic/",)),
    ("asyncio loop and UDP sockets", ("asyncio/", "selectors.py", "socket.py")),
    ("game rules and views (shared/arena, shared/game)", ("shared/arena.py", "shared/game.py", "shared/games.py")),
    ("deltas and wire encoding (shared/delta, shared/protocol)", ("shared/",)),
    ("match loop and sessions (server/)", ("server/",)),
)

_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")
# A leaf frame on one of these lines is a thread that waits (on a queue, an event, a poll;
# a thread pool's idle worker in ``get(block=True)``): py-spy does not always leave such
# threads out.
_BLOCKING_LINE = re.compile(r"\.get\((?:block=True)?\)|\.wait\(|select\(|epoll")


async def profile_process(pid: int, seconds: float, out: Path, rate: int = 100, native: bool = False) -> dict[str, Any]:
    """``py-spy record -f raw`` of process ``pid`` for ``seconds`` (``rate`` samples a second;
    ``native``: C frames too) into ``out``; its summary (:func:`summarize_profile`), or
    ``{"error": ...}`` saying why there is none."""
    spy = shutil.which("py-spy", path=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]))
    if spy is None:
        return {"error": "py-spy not found (pip install py-spy)"}
    proc = await asyncio.create_subprocess_exec(
        spy,
        "record",
        "-o",
        str(out),
        "-f",
        "raw",
        "-p",
        str(pid),
        "-d",
        str(max(1, round(seconds))),
        "-r",
        str(rate),
        *(("--native",) if native else ()),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(seconds + 30):
            _, err = await proc.communicate()
    except TimeoutError:
        proc.kill()
        await proc.wait()
        return {"error": "py-spy did not finish"}
    if proc.returncode != 0:
        return {"error": f"py-spy failed ({proc.returncode}): {err.decode(errors='replace').strip()[-300:]}"}
    # Reading and summing a recording of thousands of stacks is work for a thread, not the loop.
    return await asyncio.to_thread(summarize_profile, out)


def _is_waiting(func: str, file: str, line: int | None) -> bool:
    """Frames where a thread waits rather than works."""
    if func in ("epoll_wait", "epoll_pwait"):  # py-spy --native: a loop blocked in the kernel
        return True
    if file.endswith("selectors.py") and func.endswith("select"):
        return True
    if file.endswith("threading.py") and func.split(".")[-1] in ("wait", "_wait_for_tstate_lock"):
        return True
    return line is not None and bool(_BLOCKING_LINE.search(linecache.getline(file, line)))


def summarize_profile(path: Path, top: int = 20) -> dict[str, Any]:
    """From a py-spy raw (collapsed) file: the share of samples spent waiting, then, of the
    working samples, self time (leaf frames) by function and by area, and inclusive time by
    function (the frames every stack shares left out)."""
    self_time: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    areas: Counter[str] = Counter()
    total = waiting = 0
    for raw in path.read_text(errors="replace").splitlines():
        stack, _, count = raw.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        weight = int(count)
        parsed = [m for f in stack.split(";") if (m := _FRAME.match(f.strip()))]
        if not parsed:
            continue
        total += weight
        leaf = parsed[-1]
        if _is_waiting(leaf.group("func"), leaf.group("file"), int(leaf.group("line")) if leaf.group("line") else None):
            waiting += weight
            continue
        names = [_frame_name(m) for m in parsed]
        self_time[names[-1]] += weight
        file = leaf.group("file")
        areas[next((area for area, marks in AREAS if any(mark in file for mark in marks)), "other")] += weight
        for name in set(names):
            inclusive[name] += weight
    busy = total - waiting

    def share(count: int) -> float:
        return round(count / busy, 4) if busy else 0.0

    roots = [f for f, c in inclusive.items() if c >= 0.9 * busy]
    return {
        "samples": total,
        "waiting_share": round(waiting / total, 4) if total else None,
        "busy_samples": busy,
        "areas": [{"area": a, "share": share(c)} for a, c in areas.most_common()],
        "self": [{"frame": f, "share": share(c)} for f, c in self_time.most_common(top)],
        "inclusive": [
            {"frame": f, "share": share(c)} for f, c in inclusive.most_common(top + len(roots)) if f not in roots
        ][:top],
    }


def _frame_name(m: re.Match[str]) -> str:
    file = m.group("file")
    for marker in ("site-packages/", f"/python{sys.version_info[0]}.{sys.version_info[1]}/"):
        if marker in file:
            file = file.split(marker, 1)[1]
    return f"{m.group('func')} ({file})"


def print_summary(summary: dict[str, Any], say: Any) -> None:
    """The summary for people, one line at a time through ``say``."""
    if "error" in summary:
        say(f"  profile: {summary['error']}")
        return
    say(
        f"  profile: {summary['samples']} samples, {summary['waiting_share']:.0%} waiting (select, queues); "
        "of the rest, by area:"
    )
    for row in summary["areas"]:
        say(f"    {row['share']:6.1%}  {row['area']}")
    say("  top self time:")
    for row in summary["self"]:
        say(f"    {row['share']:6.1%}  {row['frame']}")
    say("  top inclusive time:")
    for row in summary["inclusive"][:12]:
        say(f"    {row['share']:6.1%}  {row['frame']}")
