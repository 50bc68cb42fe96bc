"""Players one tickline server holds, against clients a bare server holds: ``capacity_players``.

    python -m bench.capacity [--quick] [--json-out FILE] [same options as `tickline capacity`]

Two capacity searches in turns (a tickline probe, then a bare one, ...), so that
both see the same machine: ``tickline capacity``'s own search against real
``tickline serve`` processes with real bots, and the same search, judged by the
same rules, against the transport ceiling (``bench.ceiling``: tickline's QUIC
endpoint with no game), its datagrams the average delta and input sizes that
the tickline probe nearest in ``n`` measured.

One JSON line on stdout (bench/README.md's format). The ratio is given only when
both searches answered with a figure (a closed, confirmed bracket; the load
generator not saturated at the failure; the failure not one other processes may
have caused); otherwise ``ratio`` is null and ``why`` says which search could
not answer and why. ``ratio_bounds`` is what the two brackets allow either way.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import shutil
import sys
import time
from typing import Any

import orjson

from bench.ceiling import probe_ceiling
from tickline.bots.capacity.probe import probe_tickline
from tickline.bots.capacity.run import (
    CapacityConfig,
    Contender,
    add_arguments,
    announce,
    at_capacity,
    common_json,
    config_from_args,
    run_searches,
    say,
    search_json,
    workdir_for,
    write_json_line,
)
from tickline.bots.procstat import cpu_plan
from tickline.shared import native
from tickline.shared.protocol import MAX_DATAGRAM

TARGET = 0.7
MAX_DATAGRAM_BYTES = MAX_DATAGRAM - 1  # bare datagrams stay below tickline's datagram limit
FALLBACK_SIZES = (200, 60)  # delta, input bytes: only if no tickline probe measured any


def sizes_for(n: int, tickline_probes: list[dict[str, Any]]) -> tuple[int, int, int | None]:
    """(delta bytes, input bytes, from the tickline probe at n) nearest in n among those that measured them."""
    measured = [p for p in tickline_probes if p.get("delta_bytes") and p.get("input_bytes")]
    if not measured:
        return FALLBACK_SIZES[0], FALLBACK_SIZES[1], None
    best = min(measured, key=lambda p: (abs(p["n"] - n), -p["n"]))
    return (
        min(MAX_DATAGRAM_BYTES, round(best["delta_bytes"])),
        min(MAX_DATAGRAM_BYTES, round(best["input_bytes"])),
        best["n"],
    )


def ratio_bounds(tickline: dict[str, Any], ceiling: dict[str, Any]) -> list[float | None]:
    """What the two brackets allow: each capacity lies in [at_least, below - 1] (below None: unknown)."""
    t_lo, t_hi = tickline["at_least"], tickline["below"]
    b_lo, b_hi = ceiling["at_least"], ceiling["below"]
    low = round(t_lo / (b_hi - 1), 3) if b_hi and b_hi > 1 else None
    high = round((t_hi - 1) / b_lo, 3) if t_hi is not None and b_lo else None
    return [low, high]


def figure(
    cfg: CapacityConfig, tickline: Contender, ceiling: Contender, pinning: str, elapsed: float
) -> dict[str, Any]:
    t, b = search_json(tickline), search_json(ceiling)
    value, baseline = t["players"], b["players"]
    ratio = round(value / baseline, 3) if value is not None and baseline else None
    why = None
    if ratio is None:
        why = "; ".join(
            f"{name}: {found['why'] or 'no clients held'}"
            for name, found in (("tickline", t), ("ceiling", b))
            if not found["players"]
        )
    t_cap, b_cap = at_capacity(tickline), at_capacity(ceiling)
    delta, inp, from_n = sizes_for(value or t["at_least"] or cfg.start, tickline.probes)
    return {
        "figure": "capacity_players",
        "value": value,
        "unit": "players",
        "baseline": baseline,
        "baseline_of": "tickline's QUIC endpoint with no game, same datagram sizes and rates",
        "ratio": ratio,
        "target": f">= {TARGET}",
        "holds": None if ratio is None else ratio >= TARGET,
        "why": why,
        "runs": 1,
        "spread": [ratio, ratio],
        "ratio_bounds": ratio_bounds(t, b),
        "tickline_bracket": [t["at_least"], t["below"]],
        "ceiling_bracket": [b["at_least"], b["below"]],
        **common_json(cfg, pinning),
        "server_cpu_percent_at_capacity": t_cap and t_cap["server_cpu_percent"],
        "baseline_cpu_percent_at_ceiling": b_cap and b_cap["server_cpu_percent"],
        "delta_bytes": delta,
        "input_bytes": inp,
        "sizes_from_tickline_n": from_n,
        "tickline": t,
        "ceiling": b,
        "elapsed_s": round(elapsed, 1),
    }


async def run(cfg: CapacityConfig, ceiling_loop: str) -> dict[str, Any]:
    began = time.monotonic()
    _, _, pinning = cpu_plan()
    announce(cfg, "capacity_players (tickline vs the transport ceiling)", pinning)
    workdir = workdir_for(cfg)
    tickline = Contender("tickline", lambda n, i: probe_tickline(n, cfg.probe, workdir, i))

    async def bare(n: int, index: int) -> dict[str, Any]:
        delta, inp, from_n = sizes_for(n, tickline.probes)
        # (read as packets come, as the ceiling always was: reading a tick's QUIC packets in one
        # batch makes aioquic's work one long turn, and the ceiling a different thing to measure)
        args = ("--loop", ceiling_loop, "--read-per-packet")
        p = await probe_ceiling(n, cfg.probe, workdir, index, delta, inp, server_args=args)
        return p | {"sizes_from_tickline_n": from_n}

    ceiling = Contender("ceiling", bare, overhead_s=4.0)
    try:
        await run_searches(cfg, [tickline, ceiling])
        return figure(cfg, tickline, ceiling, pinning, time.monotonic() - began)
    finally:
        if cfg.keep_dir is None:
            shutil.rmtree(workdir, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.capacity", description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    parser.add_argument(
        "--ceiling-loop",
        default="asyncio",
        choices=["auto", "uvloop", "asyncio"],
        help="the bare server's event loop (default: asyncio, where it held the most clients)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    try:
        cfg = config_from_args(args)
    except ValueError as exc:
        parser.error(str(exc))
    if args.budget_s is None:
        cfg.budget_s *= 2  # two searches share the time: each gets what `tickline capacity` gives one
    result = asyncio.run(run(cfg, args.ceiling_loop))
    result["native"] = native.report()
    write_json_line(orjson.dumps(result).decode(), args.json_out)
    say(
        f"capacity: tickline {result['tickline_bracket']}, ceiling {result['ceiling_bracket']}, ratio "
        f"{result['ratio']} (target {result['target']}: "
        + (
            "cannot tell: " + result["why"]
            if result["ratio"] is None
            else "holds"
            if result["holds"]
            else "does not hold"
        )
        + f"); {result['elapsed_s']:.0f} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
