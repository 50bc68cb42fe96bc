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

from tickline.bots.behaviours import DEFAULT
from tickline.bots.client import ClientOptions
from tickline.bots.metrics import Scrape, percentile, scrape, server_window
from tickline.bots.swarm import BotResult, Swarm, summarize
from tickline.shared.games import load


@dataclass(slots=True)
class LoadConfig:
    host: str
    port: int
    n: int
    duration: float
    workers: int = 0  # 0: what the machine's cores allow
    ramp: float = 50.0  # bots started per second
    behaviour: str = DEFAULT
    game: str | None = None  # a game to load in every worker (package.module:Class, or a name)
    cafile: str | None = None
    seed: int = 1
    reconnect_s: float = 20.0
    metrics_url: str | None = None
    report_path: Path | None = None
    plots_dir: Path | None = None
    progress: bool = True
    client: ClientOptions = field(default_factory=ClientOptions)  # fast path, input rate
    tokens_url: str | None = None  # the server's HTTP side: each bot fetches a connect token there
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
        if cfg["game"]:
            load(cfg["game"])  # a game given as package.module:Class: known by name in this process too
        with asyncio.Runner(loop_factory=cfg["loop_factory"]) as runner:
            results = runner.run(_worker_main(cfg, index, first, count, start_at, out))
        out.put(("done", index, [_plain(r) for r in results]))
    except BaseException as exc:  # noqa: BLE001 - reported to the parent, which fails the run
        out.put(("failed", index, f"{type(exc).__name__}: {exc}"))


async def _worker_main(
    cfg: dict[str, Any], index: int, first: int, count: int, start_at: float, out: Any
) -> list[BotResult]:
    ramp_s = 1.0 / cfg["ramp"]
    await asyncio.sleep(max(0.0, start_at + first * ramp_s - time.time()))
    swarm = Swarm(
        cfg["host"],
        cfg["port"],
        count,
        cfg["duration"],
        cafile=cfg["cafile"],
        ramp_s=ramp_s,
        seed=cfg["seed"],
        reconnect_s=cfg["reconnect_s"],
        behaviour=cfg["behaviour"],
        first_index=first,
        options=cfg["client"],
        tokens_url=cfg["tokens_url"],
    )
    return await swarm.run(on_progress=lambda snap: out.put(("progress", index, snap)))


def _plain(result: BotResult) -> dict[str, Any]:
    """What crosses the process boundary: everything but the live connection."""
    return {f.name: getattr(result, f.name) for f in fields(result) if f.name != "client"}


# ---------------------------------------------------------------------- the run


@dataclass(slots=True)
class Timeline:
    rows: list[dict[str, Any]] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    ack_latencies: list[float] = field(default_factory=list)  # the input each delta names


def _latency_summary(lat: list[float]) -> dict[str, Any] | None:
    return (
        None
        if not lat
        else {
            "p50": round(percentile(lat, 50) * 1000, 2),
            "p99": round(percentile(lat, 99) * 1000, 2),
            "max": round(max(lat) * 1000, 2),
            "samples": len(lat),
        }
    )


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
            for name in (
                "t",
                "connected",
                "deltas/s",
                "down kB/s/bot",
                "RTT p50 ms",
                "RTT p99 ms",
                "errors",
                "server CPU %",
                "tick late p99 ms",
            ):
                table.add_column(name, justify="right")
            table.add_row(
                *(
                    _cell(v)
                    for v in (
                        row["t"],
                        f"{row['connected']}/{self.cfg.n}",
                        row["deltas_per_s"],
                        row["down_kb_s_per_bot"],
                        row["rtt_ms_p50"],
                        row["rtt_ms_p99"],
                        row["errors"],
                        row.get("server_cpu_percent"),
                        row.get("tick_late_ms_p99"),
                    )
                )
            )
            self._live.update(table)
        elif row["t"] - self._last_plain >= 2.0:
            self._last_plain = row["t"]
            print(
                f"t={row['t']:.0f}s connected={row['connected']}/{self.cfg.n} deltas/s={row['deltas_per_s']} "
                f"down={row['down_kb_s_per_bot']}kB/s/bot rtt p50={_cell(row['rtt_ms_p50'])}ms "
                f"p99={_cell(row['rtt_ms_p99'])}ms errors={row['errors']}"
                + (
                    f" server cpu={row['server_cpu_percent']}% tick-late p99={_cell(row['tick_late_ms_p99'])}ms"
                    if row.get("server_cpu_percent") is not None
                    else ""
                ),
                file=sys.stderr,
                flush=True,
            )


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value:.1f}" if isinstance(value, float) else str(value)


class LoadTest:
    """One load test. :meth:`run` returns the report; meanwhile ``on_snapshot(worker,
    snapshot)`` hears every snapshot a worker sends (once a second: ``Swarm.snapshot``,
    with ``mono``, the machine-wide monotonic time it was taken, and ``per_bot``, every
    bot's own delta count), and afterwards ``results`` holds every bot's own result."""

    def __init__(self, cfg: LoadConfig, on_snapshot: Callable[[int, dict[str, Any]], None] | None = None) -> None:
        self.cfg = cfg
        self.on_snapshot = on_snapshot
        self.results: list[BotResult] = []

    async def run(self) -> dict[str, Any]:
        """Run the load test; returns the report (also written and plotted when asked)."""
        cfg = self.cfg
        workers = cfg.worker_count()
        ctx = mp.get_context("spawn")
        out = ctx.Queue()
        plain = {
            "host": cfg.host,
            "port": cfg.port,
            "duration": cfg.duration,
            "cafile": cfg.cafile,
            "ramp": cfg.ramp,
            "seed": cfg.seed,
            "reconnect_s": cfg.reconnect_s,
            "behaviour": cfg.behaviour,
            "game": cfg.game,
            "client": cfg.client,
            "loop_factory": cfg.loop_factory,
            "tokens_url": cfg.tokens_url,
        }
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
        try:
            with Progress(cfg) as progress:
                while len(ended) < workers:
                    if time.monotonic() > deadline:
                        failures.append("workers did not finish in time; terminated")
                        break
                    if out.empty():
                        dead = [
                            w
                            for w, p in enumerate(procs)
                            if not p.is_alive() and p.exitcode not in (0, None) and w not in ended
                        ]
                        if dead:
                            failures.append(f"worker {dead[0]} died with exit code {procs[dead[0]].exitcode}")
                            ended.add(dead[0])
                    message = await loop.run_in_executor(None, get)  # a blocking get, off the event loop
                    if message is not None:
                        kind, worker, body = message
                        if kind == "progress":
                            if self.on_snapshot is not None:
                                self.on_snapshot(worker, body)
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
                        row = timeline_row(latest, previous, timeline, scrapes, started, time.monotonic())
                        previous = {"t": row["t"], **_totals(latest)}
                        timeline.rows.append(row)
                        progress.show(row)
            await scrape_now()
            # The last row: what the workers' final snapshots (every bot done) add.
            timeline.rows.append(timeline_row(latest, previous, timeline, scrapes, started, time.monotonic()))
        finally:
            for proc in procs:
                proc.join(timeout=5)
                if proc.is_alive():
                    proc.terminate()  # ours, by PID
                    proc.join(timeout=5)
        self.results = [BotResult(**r) for rs in finals.values() for r in rs]
        if scrape_errors:
            failures.append(f"{scrape_errors[0]} ({len(scrape_errors)} scrapes failed)")
        return finish_report(cfg, workers, self.results, timeline, scrapes, failures)


async def run_load(cfg: LoadConfig) -> dict[str, Any]:
    """Run a load test (:class:`LoadTest`); returns the report."""
    return await LoadTest(cfg).run()


def _totals(latest: dict[int, dict[str, Any]]) -> dict[str, Any]:
    keys = ("connected", "joined", "errors", "disconnects", "deltas", "bytes_down", "bytes_up")
    return {k: sum(s.get(k, 0) for s in latest.values()) for k in keys}


def timeline_row(
    latest: dict[int, dict[str, Any]],
    previous: dict[str, Any] | None,
    timeline: Timeline,
    scrapes: list[Scrape],
    started: float,
    now: float,
) -> dict[str, Any]:
    """One second of the timeline: the workers' ``latest`` snapshots against the ``previous``
    row's totals, at ``now`` (time.monotonic()) in a run that began at ``started``."""
    totals = _totals(latest)
    t = round(now - started, 1)
    dt = max(1e-9, t - previous["t"]) if previous else 1.0
    before = previous or dict.fromkeys(totals, 0)
    # Per bot: over the bots connected at either end of the second (the bytes of bots
    # that ended in it were theirs); no bots, no per-bot figure.
    bots = max(totals["connected"], before["connected"])
    recent = timeline.latencies[-5000:]
    row: dict[str, Any] = {
        "t": t,
        "connected": totals["connected"],
        "errors": totals["errors"],
        "disconnects": totals["disconnects"],
        "deltas_per_s": round((totals["deltas"] - before["deltas"]) / dt, 1),
        "down_kb_s_per_bot": round((totals["bytes_down"] - before["bytes_down"]) / dt / bots / 1000, 2)
        if bots
        else None,
        "up_kb_s_per_bot": round((totals["bytes_up"] - before["bytes_up"]) / dt / bots / 1000, 2) if bots else None,
        "rtt_ms_p50": None if not recent else round(percentile(recent, 50) * 1000, 1),
        "rtt_ms_p99": None if not recent else round(percentile(recent, 99) * 1000, 1),
    }
    if len(scrapes) >= 2:
        window = server_window(scrapes[-2], scrapes[-1], scrapes[-2:])
        row["server_cpu_percent"] = window["cpu_percent"]
        row["tick_late_ms_p99"] = window["tick_late_ms_p99"]
        row["tick_late_ms_p50"] = window["tick_late_ms_p50"]
    return row


def finish_report(
    cfg: LoadConfig,
    workers: int,
    results: list[BotResult],
    timeline: Timeline,
    scrapes: list[Scrape],
    failures: list[str],
) -> dict[str, Any]:
    report = summarize(results)
    report.update(
        {
            "workers": workers,
            "duration_s": cfg.duration,
            "input_to_visible_ms": _latency_summary(timeline.latencies),
            "named_input_to_visible_ms": _latency_summary(timeline.ack_latencies),
            "failures": failures,
        }
    )
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
        from tickline.bots.plots import write_plots

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
            (
                "server ticks / s, matches, players",
                f"{server['ticks_per_s']}, {server['matches_max']:.0f}, {server['players_max']:.0f}",
            ),
            ("event log lag max s", server["eventlog_lag_s_max"]),
        ]
    for name, value in rows:
        table.add_row(name, str(value))
    for failure in report.get("failures", []):
        table.add_row("[red]failure[/red]", failure)
    Console(stderr=True).print(table)


def report_json(report: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in report.items() if k != "timeline"}
