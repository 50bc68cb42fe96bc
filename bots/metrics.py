"""Reading a server's own figures: its Prometheus ``/metrics``, between two scrapes.

The load tester, the capacity search and the benchmarks judge a server by what
it says of itself over a window: counters and histograms only grow, so the
difference between two scrapes is what happened in between, whatever match
started or ended meanwhile. This module scrapes and does that arithmetic; it
knows the series' names, not the server's code.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]  # (name, sorted labels) -> value


@dataclass(slots=True)
class Scrape:
    t: float  # time.monotonic() when the server read its figures (the request's middle)
    samples: Samples


async def scrape(url: str, timeout: float = 2.0) -> Samples:
    """Every sample of the Prometheus text at ``url``."""
    import aiohttp
    from prometheus_client.parser import text_string_to_metric_families

    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as http,
        http.get(url) as response,
    ):
        text = await response.text()
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


async def scrape_at(url: str) -> Scrape:
    """A scrape, timed at the middle of its request (the server reads its figures then)."""
    before = time.monotonic()
    samples = await scrape(url)
    return Scrape((before + time.monotonic()) / 2, samples)


def sample_sum(samples: Samples, name: str, **fixed: str) -> float:
    """The sum of series ``name`` over every label set that has the ``fixed`` labels."""
    return sum(
        v
        for (n, labels), v in samples.items()
        if n == name and all(dict(labels).get(k) == val for k, val in fixed.items())
    )


def histogram_buckets(samples: Samples, name: str) -> dict[float, float]:
    """Cumulative counts by upper bound of histogram ``name``, summed over its label sets."""
    out: dict[float, float] = {}
    for (n, labels), v in samples.items():
        if n == name + "_bucket":
            le = float(dict(labels)["le"])
            out[le] = out.get(le, 0.0) + v
    return out


def histogram_quantile(q: float, before: dict[float, float], after: dict[float, float]) -> float | None:
    """The q-quantile of what a cumulative histogram gained between two scrapes (as Prometheus does it)."""
    bounds = sorted(after)
    counts = [after[b] - before.get(b, 0.0) for b in bounds]
    if not counts or counts[-1] <= 0:
        return None
    rank = q * counts[-1]
    lower, below = 0.0, 0.0
    for bound, cumulative in zip(bounds, counts, strict=True):
        if cumulative >= rank:
            if math.isinf(bound):
                return lower
            inside = cumulative - below
            return lower + (bound - lower) * ((rank - below) / inside if inside else 1.0)
        lower, below = bound, cumulative
    return lower


def cumulative_buckets(values: list[float], bounds: tuple[float, ...]) -> dict[float, float]:
    """``values`` counted into cumulative buckets, as a Prometheus histogram with ``bounds`` holds them."""
    return {bound: float(sum(1 for x in values if x <= bound)) for bound in (*bounds, math.inf)}


def percentile(values: list[float], p: float) -> float:
    """The ``p``-th percentile (0-100) of ``values``, nearest rank; NaN when there are none."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(p / 100 * len(ordered)) - 1))]


def server_window(first: Scrape, last: Scrape, scrapes: list[Scrape]) -> dict[str, Any]:
    """The server's own figures between two scrapes of its /metrics (server-wide series,
    which only grow, so a match that ends inside the window still counts)."""
    a, b = first.samples, last.samples
    wall = max(1e-9, last.t - first.t)

    def rate(name: str) -> float:
        return round((sample_sum(b, name) - sample_sum(a, name)) / wall, 1)

    def quantile(q: float, name: str) -> float | None:
        value = histogram_quantile(q, histogram_buckets(a, name), histogram_buckets(b, name))
        return None if value is None else round(value * 1000, 3)

    def most(name: str) -> float:
        return max((sample_sum(s.samples, name) for s in scrapes), default=0.0)

    cpu_s = sample_sum(b, "process_cpu_seconds_total") - sample_sum(a, "process_cpu_seconds_total")
    return {
        "window_s": round(wall, 2),
        "cpu_percent": round(100 * cpu_s / wall, 1),
        "rss_mb": round(sample_sum(b, "process_resident_memory_bytes") / 2**20, 1),
        "matches_max": most("tickline_matches"),
        "players_max": most("tickline_server_players"),
        "ticks_per_s": rate("tickline_server_ticks_total"),
        "inputs_applied_per_s": rate("tickline_server_inputs_applied_total"),
        "bytes_down_per_s": rate("tickline_server_bytes_down_total"),
        "tick_late_ms_p50": quantile(0.5, "tickline_server_tick_lateness_seconds"),
        "tick_late_ms_p99": quantile(0.99, "tickline_server_tick_lateness_seconds"),
        "tick_duration_ms_p99": quantile(0.99, "tickline_server_tick_duration_seconds"),
        "tick_catch_ups": sample_sum(b, "tickline_server_tick_catch_ups_total")
        - sample_sum(a, "tickline_server_tick_catch_ups_total"),
        "eventlog_lag_s_max": round(most("tickline_eventlog_lag_seconds"), 4),
        "connections_kicked": sample_sum(b, "tickline_connections_kicked_total")
        - sample_sum(a, "tickline_connections_kicked_total"),
    }
