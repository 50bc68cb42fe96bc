"""What every benchmark here shares: the BENCH.md line writer and small number helpers."""

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
    return int(round(value)) if digits <= 0 else round(value, digits)


def med(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")
