"""PNG charts of a load test: what a person would rather look at than read.

Needs matplotlib (the ``plots`` extra). Drawn with the Agg backend, off-screen.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any


class PlotsUnavailable(RuntimeError):
    pass


def write_plots(folder: Path, rows: list[dict[str, Any]], latencies: list[float]) -> list[Path]:
    """tick_lateness.png, rtt.png and bytes_per_client.png in ``folder``; returns their paths."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise PlotsUnavailable("--plots needs matplotlib: pip install 'tickline[plots]'") from None
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    t = [r["t"] for r in rows]

    fig, ax = plt.subplots(figsize=(8, 4))
    late = [
        (r["t"], _nan(r.get("tick_late_ms_p99")), _nan(r.get("tick_late_ms_p50")))
        for r in rows
        if r.get("tick_late_ms_p99") is not None
    ]
    if late:
        ax.plot([x for x, _, _ in late], [y for _, y, _ in late], label="p99")
        ax.plot([x for x, _, _ in late], [y for _, _, y in late], label="p50")
        ax.legend()
    else:
        ax.text(0.5, 0.5, "no server metrics (run with --metrics URL)", ha="center", transform=ax.transAxes)
    ax.set(title="Server tick lateness, per second", xlabel="seconds", ylabel="ms late")
    written.append(_save(fig, folder / "tick_lateness.png", plt))

    fig, ax = plt.subplots(figsize=(8, 4))
    if latencies:
        ms = sorted(x * 1000 for x in latencies)
        ax.hist(ms, bins=60)
        p50, p99 = ms[len(ms) // 2], ms[min(len(ms) - 1, int(len(ms) * 0.99))]
        for value, name in ((p50, "p50"), (p99, "p99")):
            ax.axvline(value, color="black", linestyle="--")
            ax.text(value, ax.get_ylim()[1] * 0.9, f" {name} {value:.1f} ms")
    ax.set(title="Input to visible (input sent until the server echoes it applied)", xlabel="ms", ylabel="inputs")
    written.append(_save(fig, folder / "rtt.png", plt))

    fig, ax = plt.subplots(figsize=(8, 4))
    # Seconds with no bot connected have no per-bot figure: gaps in the lines.
    ax.plot(t, [_nan(r["down_kb_s_per_bot"]) for r in rows], label="down")
    ax.plot(t, [_nan(r["up_kb_s_per_bot"]) for r in rows], label="up")
    ax.set(title="Bytes per client", xlabel="seconds", ylabel="kB/s per bot")
    twin = ax.twinx()
    twin.plot(t, [r["connected"] for r in rows], color="grey", linestyle=":", label="connected")
    twin.set_ylabel("bots connected")
    ax.legend(loc="upper left")
    written.append(_save(fig, folder / "bytes_per_client.png", plt))
    return written


def _nan(value: float | None) -> float:
    return math.nan if value is None else value


def _save(fig: Any, path: Path, plt: Any) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
