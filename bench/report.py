"""What every benchmark here shares: the JSON line writer and small number helpers.

A benchmark prints one JSON object per figure on stdout and nothing else there
(progress goes to stderr); docs/benchmarks.md says what each line holds.
"""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path
from typing import Any


class Report:
    """Prints one JSON object per figure on stdout (and, with ``json_out``, the same lines to a file)."""

    def __init__(self, json_out: Path | None) -> None:
        self.lines: list[str] = []
        self.json_out = json_out

    def emit(self, fig: dict[str, Any]) -> None:
        line = json.dumps(fig)
        self.lines.append(line)
        print(line, flush=True)
        if self.json_out is not None:
            self.json_out.write_text("".join(f"{x}\n" for x in self.lines))


def rnd(value: float | None, digits: int) -> float | int | None:
    """``value`` rounded to ``digits`` (an int at 0 or fewer); None for None, NaN or infinity."""
    if value is None or not math.isfinite(value):
        return None
    return round(value) if digits <= 0 else round(value, digits)


def med(values: list[float]) -> float:
    """The median; NaN when there are no values."""
    return statistics.median(values) if values else float("nan")


def sig(value: float, figures: int = 3) -> float:
    """``value`` to ``figures`` significant figures (ratios span 0.001 to 100s); 0, NaN and infinity as they are."""
    return float(f"{value:.{figures}g}") if value and math.isfinite(value) else value


def udp_rcvbuf_errors() -> int:
    """UDP datagrams the kernel dropped at a full socket receive buffer, machine-wide (Linux's
    /proc/net/snmp ``Udp: RcvbufErrors``); 0 where unknown."""
    try:
        with open("/proc/net/snmp") as f:
            rows = [line.split() for line in f if line.startswith("Udp:")]
        return int(rows[1][rows[0].index("RcvbufErrors")])
    except (OSError, ValueError, IndexError):
        return 0
