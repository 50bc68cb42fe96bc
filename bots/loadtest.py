"""``tickline bots`` as a load tester: bots over worker processes, live progress, a report.

The bots are spread over P worker processes (one event loop each, so the
load generator is not the bottleneck), ramped up at a given rate. Each worker
sends this process a snapshot every second; this process shows live progress
(a rich table on a terminal, plain lines otherwise), scrapes the server's own
``/metrics`` for the same window when given its URL, and ends with a report:
a table for people, one JSON line for machines, optionally a JSON file and
PNG charts.

Everything is bounded: the workers stop after ``duration``; a worker that has
not finished ``duration + ramp + 30 s`` after the start is terminated by its PID.
"""

from __future__ import annotations

import asyncio
import math
import multiprocessing as mp
import os
import queue as queue_module
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from bots.client import ClientOptions
from bots.swarm import BotResult, Swarm, summarize


@dataclass(slots=True)
class LoadConfig:
    host: str
    port: int
    n: int
    duration: float
    workers: int = 0  # 0: what the machine's cores allow
    ramp: float = 50.0  # bots started per second
    behaviour: str = "arena"
    cafile: str | None = None
    seed: int = 1
    reconnect_s: float = 20.0
    metrics_url: str | None = None
    report_path: Path | None = None
    plots_dir: Path | None = None
    progress: bool = True
    client: ClientOptions = field(default_factory=ClientOptions)  # fast path, input rate
    # The workers' event loop (a picklable factory such as uvloop.new_event_loop; None: asyncio's).
    loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = None

    def worker_count(self) -> int:
        if self.workers > 0:
            return min(self.workers, self.n)
        # Leave a core for the server when it shares the machine; ~100 bots a worker.
        cores = os.cpu_count() or 1
        return max(1, min(cores, math.ceil(self.n / 100), self.n))


# ---------------------------------------------------------------------- the workers


def _worker(cfg: dict[str, Any], index: int, first: int, count: int, start_at: float, out: Any) -> None:
    """A worker process: its share of the bots, one snapshot a second to ``out``."""
    try:
        with asyncio.Runner(loop_factory=cfg["loop_factory"]) as runner:
            results = runner.run(_worker_main(cfg, index, first, count, start_at, out))
        out.put(("done", index, [_plain(r) for r in results]))
    except BaseException as exc:  # noqa: BLE001 - reported to the parent, which fails the run
        out.put(("failed", index, f"{type(exc).__name__}: {exc}"))


async def _worker_main(cfg: dict[str, Any], index: int, first: int, count: int, start_at: float, out: Any) -> list[BotResult]:
    ramp_s = 1.0 / cfg["ramp"]
    await asyncio.sleep(max(0.0, start_at + first * ramp_s - time.time()))
    swarm = Swarm(cfg["host"], cfg["port"], count, cfg["duration"], cafile=cfg["cafile"], ramp_s=ramp_s,
                  seed=cfg["seed"], reconnect_s=cfg["reconnect_s"], behaviour=cfg["behaviour"], first_index=first,
                  options=cfg["client"])
    return await swarm.run(on_progress=lambda snap: out.put(("progress", index, snap)))


def _plain(result: BotResult) -> dict[str, Any]:
    """What crosses the process boundary: everything but the live connection."""
    return {f.name: getattr(result, f.name) for f in fields(result) if f.name != "client"}


# ---------------------------------------------------------------------- the server's figures


@dataclass(slots=True)
class Scrape:
    t: float
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float]


async def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    import aiohttp
    from prometheus_client.parser import text_string_to_metric_families

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as http:
        async with http.get(url) as response:
            text = await response.text()
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def _sum(samples: dict, name: str, **fixed: str) -> float:
    return sum(v for (n, labels), v in samples.items()
               if n == name and all(dict(labels).get(k) == val for k, val in fixed.items()))


def _buckets(samples: dict, name: str) -> dict[float, float]:
    """Cumulative counts by upper bound, summed over every match."""
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
    for bound, cumulative in zip(bounds, counts):
        if cumulative >= rank:
            if math.isinf(bound):
                return lower
            inside = cumulative - below
            return lower + (bound - lower) * ((rank - below) / inside if inside else 1.0)
        lower, below = bound, cumulative
    return lower


def server_window(first: Scrape, last: Scrape, scrapes: list[Scrape]) -> dict[str, Any]:
    """The server's own figures between two scrapes of its /metrics (server-wide series,
    which only grow, so a match that ends inside the window still counts)."""
    a, b = first.samples, last.samples
    wall = max(1e-9, last.t - first.t)

    def rate(name: str) -> float:
        return round((_sum(b, name) - _sum(a, name)) / wall, 1)

    def quantile(q: float, name: str) -> float | None:
        value = histogram_quantile(q, _buckets(a, name), _buckets(b, name))
        return None if value is None else round(value * 1000, 3)

    return {
        "window_s": round(wall, 2),
        "cpu_percent": round(100 * (_sum(b, "process_cpu_seconds_total") - _sum(a, "process_cpu_seconds_total")) / wall, 1),
        "rss_mb": round(_sum(b, "process_resident_memory_bytes") / 2**20, 1),
        "matches_max": max((_sum(s.samples, "tickline_matches") for s in scrapes), default=0),
        "players_max": max((_sum(s.samples, "tickline_server_players") for s in scrapes), default=0),
        "ticks_per_s": rate("tickline_server_ticks_total"),
        "inputs_applied_per_s": rate("tickline_server_inputs_applied_total"),
        "bytes_down_per_s": rate("tickline_server_bytes_down_total"),
        "tick_late_ms_p50": quantile(0.5, "tickline_server_tick_lateness_seconds"),
        "tick_late_ms_p99": quantile(0.99, "tickline_server_tick_lateness_seconds"),
        "tick_duration_ms_p99": quantile(0.99, "tickline_server_tick_duration_seconds"),
        "eventlog_lag_s_max": round(max((_sum(s.samples, "tickline_eventlog_lag_seconds") for s in scrapes), default=0.0), 4),
        "connections_kicked": _sum(b, "tickline_connections_kicked_total") - _sum(a, "tickline_connections_kicked_total"),
    }


# ---------------------------------------------------------------------- the run


@dataclass(slots=True)
class Timeline:
    rows: list[dict[str, Any]] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    ack_latencies: list[float] = field(default_factory=list)  # the input each delta names


def _latency_summary(lat: list[float]) -> dict[str, Any] | None:
    return None if not lat else {
        "p50": round(_percentile(lat, 50) * 1000, 2), "p99": round(_percentile(lat, 99) * 1000, 2),
        "max": round(max(lat) * 1000, 2), "samples": len(lat),
    }


def _percentile(values: list[float], p: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(p / 100 * len(ordered)) - 1))]


class Progress:
    """Live progress on stderr: a rich table on a terminal, a plain line every few seconds otherwise."""

    def __init__(self, cfg: LoadConfig) -> None:
        self.cfg = cfg
        self.tty = cfg.progress and sys.stderr.isatty()
        self._live: Any = None
        self._last_plain = 0.0

    def __enter__(self) -> Progress:
        if self.tty:
            from rich.console import Console
            from rich.live import Live

            self._live = Live(console=Console(stderr=True), refresh_per_second=2, transient=False)
            self._live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._live is not None:
            self._live.__exit__(None, None, None)

    def show(self, row: dict[str, Any]) -> None:
        if not self.cfg.progress:
            return
        if self._live is not None:
            from rich.table import Table

            table = Table(title=f"tickline bots → {self.cfg.host}:{self.cfg.port}", show_edge=False)
            for name in ("t", "connected", "deltas/s", "down kB/s/bot", "RTT p50 ms", "RTT p99 ms", "errors", "server CPU %", "tick late p99 ms"):
                table.add_column(name, justify="right")
            table.add_row(*(_cell(v) for v in (
                row["t"], f"{row['connected']}/{self.cfg.n}", row["deltas_per_s"], row["down_kb_s_per_bot"],
                row["rtt_ms_p50"], row["rtt_ms_p99"], row["errors"], row.get("server_cpu_percent"),
                row.get("tick_late_ms_p99"))))
            self._live.update(table)
        elif row["t"] - self._last_plain >= 2.0:
            self._last_plain = row["t"]
            print(f"t={row['t']:.0f}s connected={row['connected']}/{self.cfg.n} deltas/s={row['deltas_per_s']} "
                  f"down={row['down_kb_s_per_bot']}kB/s/bot rtt p50={_cell(row['rtt_ms_p50'])}ms "
                  f"p99={_cell(row['rtt_ms_p99'])}ms errors={row['errors']}"
                  + (f" server cpu={row['server_cpu_percent']}% tick-late p99={_cell(row['tick_late_ms_p99'])}ms"
                     if row.get("server_cpu_percent") is not None else ""),
                  file=sys.stderr, flush=True)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value:.1f}" if isinstance(value, float) else str(value)


async def run_load(cfg: LoadConfig) -> dict[str, Any]:
    """Run the load test; returns the report (also written and plotted when asked)."""
    workers = cfg.worker_count()
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    plain = {"host": cfg.host, "port": cfg.port, "duration": cfg.duration, "cafile": cfg.cafile,
             "ramp": cfg.ramp, "seed": cfg.seed, "reconnect_s": cfg.reconnect_s, "behaviour": cfg.behaviour,
             "client": cfg.client, "loop_factory": cfg.loop_factory}
    share, extra = divmod(cfg.n, workers)
    start_at = time.time() + 1.0  # spawned interpreters need a moment to import
    procs, first = [], 0
    for w in range(workers):
        count = share + (1 if w < extra else 0)
        proc = ctx.Process(target=_worker, args=(plain, w, first, count, start_at, out), daemon=True)
        procs.append(proc)
        first += count
    for proc in procs:
        proc.start()
    deadline = time.monotonic() + 1.0 + cfg.duration + cfg.n / cfg.ramp + 30

    loop = asyncio.get_running_loop()
    latest: dict[int, dict[str, Any]] = {}
    finals: dict[int, list[dict[str, Any]]] = {}
    failures: list[str] = []
    ended: set[int] = set()
    timeline = Timeline()
    scrapes: list[Scrape] = []
    previous: dict[str, Any] | None = None
    started = time.monotonic()

    def get() -> Any:
        try:
            return out.get(timeout=0.25)
        except queue_module.Empty:
            return None

    scrape_errors: list[str] = []

    async def scrape_now() -> None:
        if cfg.metrics_url:
            try:
                scrapes.append(Scrape(time.monotonic(), await scrape(cfg.metrics_url)))
            except Exception as exc:  # noqa: BLE001 - a missed scrape is reported, not fatal
                scrape_errors.append(f"metrics scrape of {cfg.metrics_url} failed: {exc}")

    await scrape_now()
    next_row = time.monotonic() + 1.0
    with Progress(cfg) as progress:
        while len(ended) < workers:
            if time.monotonic() > deadline:
                failures.append("workers did not finish in time; terminated")
                break
            if out.empty():
                dead = [w for w, p in enumerate(procs) if not p.is_alive() and p.exitcode not in (0, None) and w not in ended]
                if dead:
                    failures.append(f"worker {dead[0]} died with exit code {procs[dead[0]].exitcode}")
                    ended.add(dead[0])
            message = await loop.run_in_executor(None, get)  # a blocking get, off the event loop
            if message is not None:
                kind, worker, body = message
                if kind == "progress":
                    timeline.latencies += body.pop("latencies")
                    timeline.ack_latencies += body.pop("ack_latencies")
                    latest[worker] = body
                elif kind == "done":
                    finals[worker] = body
                    ended.add(worker)
                else:
                    failures.append(f"worker {worker} failed: {body}")
                    ended.add(worker)
            if time.monotonic() >= next_row:
                next_row += 1.0
                await scrape_now()
                row = _row(latest, previous, timeline, scrapes, started)
                previous = {"t": row["t"], **_totals(latest)}
                timeline.rows.append(row)
                progress.show(row)
    await scrape_now()
    for proc in procs:
        proc.join(timeout=5)
        if proc.is_alive():
            proc.terminate()  # ours, by PID
            proc.join(timeout=5)
    results = [BotResult(**r) for rs in finals.values() for r in rs]
    if scrape_errors:
        failures.append(f"{scrape_errors[0]} ({len(scrape_errors)} scrapes failed)")
    return finish_report(cfg, workers, results, timeline, scrapes, failures)


def _totals(latest: dict[int, dict[str, Any]]) -> dict[str, Any]:
    keys = ("connected", "joined", "errors", "disconnects", "deltas", "bytes_down", "bytes_up")
    return {k: sum(s.get(k, 0) for s in latest.values()) for k in keys}


def _row(latest: dict[int, dict[str, Any]], previous: dict[str, Any] | None, timeline: Timeline,
         scrapes: list[Scrape], started: float) -> dict[str, Any]:
    now = _totals(latest)
    t = round(time.monotonic() - started, 1)
    dt = max(1e-9, t - previous["t"]) if previous else 1.0
    before = previous or {k: 0 for k in now}
    bots = max(1, now["connected"])
    recent = timeline.latencies[-5000:]
    row: dict[str, Any] = {
        "t": t, "connected": now["connected"], "errors": now["errors"], "disconnects": now["disconnects"],
        "deltas_per_s": round((now["deltas"] - before["deltas"]) / dt, 1),
        "down_kb_s_per_bot": round((now["bytes_down"] - before["bytes_down"]) / dt / bots / 1000, 2),
        "up_kb_s_per_bot": round((now["bytes_up"] - before["bytes_up"]) / dt / bots / 1000, 2),
        "rtt_ms_p50": None if not recent else round(_percentile(recent, 50) * 1000, 1),
        "rtt_ms_p99": None if not recent else round(_percentile(recent, 99) * 1000, 1),
    }
    if len(scrapes) >= 2:
        window = server_window(scrapes[-2], scrapes[-1], scrapes[-2:])
        row["server_cpu_percent"] = window["cpu_percent"]
        row["tick_late_ms_p99"] = window["tick_late_ms_p99"]
        row["tick_late_ms_p50"] = window["tick_late_ms_p50"]
    return row


def finish_report(cfg: LoadConfig, workers: int, results: list[BotResult], timeline: Timeline,
                  scrapes: list[Scrape], failures: list[str]) -> dict[str, Any]:
    report = summarize(results)
    report.update({
        "workers": workers,
        "duration_s": cfg.duration,
        "input_to_visible_ms": _latency_summary(timeline.latencies),
        "named_input_to_visible_ms": _latency_summary(timeline.ack_latencies),
        "failures": failures,
    })
    if len(scrapes) >= 2:
        # The steady part: from when the last bot should have started until the
        # bots' time is up (the idle tail after them is not load).
        begin = scrapes[0].t + 1.0 + cfg.n / cfg.ramp
        end = scrapes[0].t + 1.0 + cfg.duration
        steady = [s for s in scrapes if begin <= s.t <= end + 1.0]
        if len(steady) < 2:
            steady = scrapes
        report["server"] = server_window(steady[0], steady[-1], steady)
    if cfg.report_path is not None:
        full = {**report, "timeline": timeline.rows}
        cfg.report_path.parent.mkdir(parents=True, exist_ok=True)
        import orjson

        cfg.report_path.write_bytes(orjson.dumps(full, option=orjson.OPT_INDENT_2))
    if cfg.plots_dir is not None:
        from bots.plots import write_plots

        report["plots"] = [str(p) for p in write_plots(cfg.plots_dir, timeline.rows, timeline.latencies)]
    return report


def print_table(report: dict[str, Any]) -> None:
    """The report for people, on stderr (stdout keeps the one JSON line)."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title="tickline load test", show_header=False)
    table.add_column("figure")
    table.add_column("value", justify="right")
    lat = report.get("input_to_visible_ms") or {}
    named = report.get("named_input_to_visible_ms") or {}
    rows = [
        ("bots connected", f"{report['connected']}/{report['bots']} over {report['workers']} workers"),
        ("behaviours", ", ".join(f"{k}={v}" for k, v in report["behaviours"].items())),
        ("deltas / s / bot", report["deltas_per_s_per_bot"]),
        ("down bytes / s / bot", report["bytes_down_per_s_per_bot"]),
        ("up bytes / s / bot", report["bytes_up_per_s_per_bot"]),
        ("input to visible p50 / p99 ms", f"{lat.get('p50', '-')} / {lat.get('p99', '-')}"),
        ("  the input each delta names", f"{named.get('p50', '-')} / {named.get('p99', '-')}"),
        ("disconnects / reconnects / errors", f"{report['disconnects']} / {report['reconnects']} / {report['errors']}"),
    ]
    server = report.get("server")
    if server:
        rows += [
            ("server CPU % of a core", server["cpu_percent"]),
            ("server tick late p50 / p99 ms", f"{server['tick_late_ms_p50']} / {server['tick_late_ms_p99']}"),
            ("server ticks / s, matches, players", f"{server['ticks_per_s']}, {server['matches_max']:.0f}, {server['players_max']:.0f}"),
            ("event log lag max s", server["eventlog_lag_s_max"]),
        ]
    for name, value in rows:
        table.add_row(name, str(value))
    for failure in report.get("failures", []):
        table.add_row("[red]failure[/red]", failure)
    Console(stderr=True).print(table)


def report_json(report: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in report.items() if k != "timeline"}


