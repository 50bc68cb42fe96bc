"""What every benchmark here shares: the JSON line writer and small number helpers.

A benchmark prints one JSON object per figure on stdout and nothing else there
(progress goes to stderr); docs/benchmarks.md says what each line holds.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
from pathlib import Path
from typing import Any

import tickline.server.fastpath  # noqa: F401 - imported for its choice of twin, which native.report() then names
from tickline.shared import native


class Report:
    """Prints one JSON object per figure on stdout (and, with ``json_out``, the same lines to a file)."""

    def __init__(self, json_out: Path | None) -> None:
        self.lines: list[str] = []
        self.json_out = json_out

    def emit(self, fig: dict[str, Any]) -> None:
        # Whether the framework's hot paths ran native code (its children, servers and bots,
        # load the same modules under the same environment): a silent fall back shows.
        fig.setdefault("native", native.report())
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


def round_args(
    prog: str, doc: str, argv: list[str] | None, rounds: tuple[int, int], seconds: tuple[float, float], unit: str
) -> tuple[argparse.ArgumentParser, argparse.Namespace]:
    """The command line of a benchmark run in rounds of timed ``unit`` s: ``--quick``,
    ``--rounds``, ``--seconds``, ``--json-out``; ``rounds`` and ``seconds`` are (full, quick)."""
    parser = argparse.ArgumentParser(prog=prog, description=doc.split("\n\n")[0])
    parser.add_argument(
        "--quick", action="store_true", help=f"{rounds[1]} round(s) of {seconds[1]:g} s {unit} (about a minute)"
    )
    parser.add_argument("--rounds", type=int, help=f"rounds (default: {rounds[0]}, or {rounds[1]} with --quick)")
    parser.add_argument(
        "--seconds", type=float, help=f"seconds per {unit} (default: {seconds[0]:g}, or {seconds[1]:g} with --quick)"
    )
    parser.add_argument("--json-out", type=Path, help="also write the JSON lines here")
    args = parser.parse_args(argv)
    args.rounds = args.rounds or rounds[1 if args.quick else 0]
    args.seconds = args.seconds or seconds[1 if args.quick else 0]
    if args.rounds < 1 or args.seconds <= 0:
        parser.error("--rounds must be at least 1 and --seconds positive")
    return parser, args
