"""One capacity probe: a fresh ``tickline serve`` process, ``n`` bots through the load
tester, and the verdict over a steady window.

The server is a child process (``--port 0 --metrics-port 0``, a temporary data
folder, ``max_players=n+1``, a time and score limit no probe reaches), pinned
to the first CPU when the machine has two or more; the bot workers, started
while this process runs on the other CPUs, stay there. The bots play the
``wander`` behaviour, ramped at ``ramp`` a second, bound to 127.0.0.1. Once
every bot is in and a settling time has passed, two scrapes of the server's
own ``/metrics`` bound the window; each bot's own delta count, from its
worker's snapshots nearest the window's ends, says whether it kept up. Then
the server is stopped with SIGTERM (its goodbye ends the bots) and waited for.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from tickline.bots.capacity.search import verdict, window_shares
from tickline.bots.client import ClientOptions
from tickline.bots.loadtest import LoadConfig, LoadTest
from tickline.bots.metrics import Scrape, sample_sum, scrape, scrape_at, server_window
from tickline.bots.procstat import CpuSampler, affinity, children, cpu_plan

Snaps = dict[int, list[tuple[float, list[int | None]]]]  # worker -> [(monotonic, per-bot counts)]


@dataclass(slots=True)
class ProbeSettings:
    tick_rate: int = 60
    send_rate: int = 30
    bound_ms: float = 4.0
    ramp: float = 40.0  # players started per second
    steady_s: float = 8.0  # the judged window
    settle_s: float = 1.0  # after the last player is in, before the window
    serve_loop: str = "auto"  # the server's event loop


async def stop_process(proc: asyncio.subprocess.Process, timeout: float = 20.0) -> int:
    """SIGTERM our child by PID and wait for it; SIGKILL after ``timeout``."""
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
    try:
        async with asyncio.timeout(timeout):
            return await proc.wait()
    except TimeoutError:
        proc.kill()
        return await proc.wait()


def stop_workers() -> None:
    """Stop load workers this process started and left behind (after a cancelled probe), by PID."""
    for pid in children(marker=b"spawn_main"):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)


async def read_ready_line(
    proc: asyncio.subprocess.Process, what: str, log_path: Path, timeout: float = 30.0
) -> dict[str, Any]:
    """The JSON line a server prints once it is ready; a clear error if it never comes."""
    assert proc.stdout is not None
    try:
        async with asyncio.timeout(timeout):
            line = await proc.stdout.readline()
    except TimeoutError:
        await stop_process(proc, 5)
        raise RuntimeError(f"{what} did not start within {timeout:g} s; see {log_path}") from None
    if not line:
        await proc.wait()
        raise RuntimeError(f"{what} exited ({proc.returncode}) before it was ready; see {log_path}")
    ready: dict[str, Any] = orjson.loads(line)
    return ready


async def _start_server(
    n: int, ps: ProbeSettings, data_dir: Path, log_path: Path, cpus: set[int] | None
) -> tuple[asyncio.subprocess.Process, dict[str, Any]]:
    # Started while this thread is on ``cpus``: the child and every thread it makes stay there.
    with log_path.open("ab") as log_file, affinity(cpus):
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tickline",
            "--loop",
            ps.serve_loop,
            "serve",
            "--port",
            "0",
            "--no-require-tokens",  # its bots connect directly
            # Its bots all come from one address, faster than a person's budget allows.
            "--new-connections-per-s-per-address",
            "10000",
            "--max-half-open-per-address",
            "1024",
            "--max-connections-per-address",
            "100000",
            "--metrics-port",
            "0",
            "--data-dir",
            str(data_dir),
            "--tick-rate",
            str(ps.tick_rate),
            "--send-rate",
            str(ps.send_rate),
            "--set",
            "time_limit_s=3600",
            "--set",
            "score_limit=100000",
            "--set",
            f"max_players={n + 1}",
            stdout=asyncio.subprocess.PIPE,
            stderr=log_file,
        )
    return proc, await read_ready_line(proc, "tickline serve", log_path)


async def probe_tickline(
    n: int,
    ps: ProbeSettings,
    workdir: Path,
    index: int,
    on_window: Callable[[int, float], Coroutine[Any, Any, Any]] | None = None,
) -> dict[str, Any]:
    """One probe at ``n`` players; its verdict (``pass``, ``why``) and figures. ``on_window(pid,
    seconds)`` runs beside the window (a profiler)."""
    began = time.monotonic()
    server_cpus, load_cpus, _ = cpu_plan()
    name = f"p{index:02d}-tickline-{n}"
    data_dir, log_path = workdir / name, workdir / f"{name}.log"
    proc, ready = await _start_server(n, ps, data_dir, log_path, server_cpus)
    url = f"http://127.0.0.1:{ready['metrics_port']}/metrics"
    # Generous: the bots end when the server stops, right after the window.
    duration = n / ps.ramp + ps.settle_s + ps.steady_s + 30.0
    load_cfg = LoadConfig(
        host="127.0.0.1",
        port=ready["port"],
        n=n,
        duration=duration,
        ramp=ps.ramp,
        behaviour="wander",
        cafile=ready["cert"],
        metrics_url=url,
        progress=False,
        client=ClientOptions(local_host="127.0.0.1"),
    )
    snaps: Snaps = {}
    datagram_snaps: Snaps = {}

    def keep(worker: int, snap: dict[str, Any]) -> None:
        snaps.setdefault(worker, []).append((snap["mono"], snap["per_bot"]))
        datagram_snaps.setdefault(worker, []).append((snap["mono"], snap["per_bot_datagrams"]))

    load = LoadTest(load_cfg, on_snapshot=keep)
    window: dict[str, Any] = {}
    report: dict[str, Any] = {}
    status: int | None = None
    stop_at = 0.0
    limit_s = duration + n / ps.ramp + 60
    stage = "ramping the bots up"  # what the probe waited for, should it run out of time
    try:
        async with asyncio.timeout(limit_s):
            with affinity(load_cpus), CpuSampler() as cpu:
                running = asyncio.create_task(load.run(), name=f"load-{n}")
                try:
                    all_in, all_in_at = await _wait_all_in(url, n, running, time.monotonic() + 11.0 + n / ps.ramp)
                    stage = "the steady window"
                    await asyncio.sleep(ps.settle_s)
                    first = await _scrape_window_end(url)
                    async with asyncio.TaskGroup() as beside:
                        if on_window is not None:
                            beside.create_task(on_window(proc.pid, ps.steady_s))
                        await asyncio.sleep(max(0.0, first.t + ps.steady_s - time.monotonic()))
                        last = await _scrape_window_end(url)
                        cpu.sample()
                        stage = "the profiler"
                    window = server_window(first, last, [first, last])
                    window["players_begin"] = sample_sum(first.samples, "tickline_server_players")
                    window["players_end"] = sample_sum(last.samples, "tickline_server_players")
                    window["all_in"] = all_in
                    window.update(cpu.figures(server_cpus, load_cpus, window["cpu_percent"], first.t, last.t))
                    window["bounds"] = (all_in_at, first.t, last.t)
                finally:
                    # The server's goodbye ends every bot at once.
                    stop_at = time.monotonic()
                    stage = "the server to stop"
                    status = await stop_process(proc)
                    stage = "the bot workers to finish after the server stopped"
                    report = await running
    except TimeoutError:
        raise RuntimeError(
            f"the probe took over {limit_s:.0f} s, waiting for {stage}; "
            f"its server log: {log_path} (kept with --keep-dir)"
        ) from None
    finally:
        if proc.returncode is None:
            status = await stop_process(proc, 5)
        stop_workers()
    return _verdict(n, ps, window, report, load, snaps, datagram_snaps, stop_at, load_cpus) | {
        "server_exit": status,
        "seconds": round(time.monotonic() - began, 1),
    }


async def _scrape_window_end(url: str) -> Scrape:
    """A scrape that bounds the window; a server too busy to answer it fails the probe, saying so."""
    try:
        return await scrape_at(url)
    except (OSError, TimeoutError, aiohttp.ClientError) as exc:
        raise RuntimeError(f"the server's /metrics did not answer ({type(exc).__name__}): it is overloaded") from None


async def _wait_all_in(url: str, n: int, load: asyncio.Task[Any], give_up: float) -> tuple[bool, float]:
    """Poll the server's player count until all ``n`` are in (or ``give_up``); (all in, when)."""
    while not load.done() and time.monotonic() < give_up:
        try:
            players = sample_sum(await scrape(url), "tickline_server_players")
        except Exception:  # noqa: BLE001 - the server is starting or busy; ask again
            players = 0
        if players >= n:
            return True, time.monotonic()
        await asyncio.sleep(0.5)
    return False, time.monotonic()


def _verdict(
    n: int,
    ps: ProbeSettings,
    window: dict[str, Any],
    report: dict[str, Any],
    load: LoadTest,
    snaps: Snaps,
    datagram_snaps: Snaps,
    stop_at: float,
    load_cpus: set[int] | None,
) -> dict[str, Any]:
    connected = [r for r in load.results if r.connected]
    shares: list[float] = []
    span = stream_share = None
    if "bounds" in window:
        all_in_at, begin, end = window.pop("bounds")
        shares, span = window_shares(snaps, begin, end, all_in_at, stop_at, ps.send_rate)
        by_datagram, _ = window_shares(datagram_snaps, begin, end, all_in_at, stop_at, ps.send_rate)
        if shares and by_datagram:
            stream_share = round(max(0.0, 1 - sum(by_datagram) / sum(shares)), 3)
    lost = report.get("disconnects", 0) + report.get("reconnects", 0)
    # The load test scrapes /metrics once more after its bots end, which is after we stopped
    # the server: that scrape fails by design. The window's figures are our own scrapes.
    failures = [f for f in report.get("failures", []) if not f.startswith("metrics scrape of")]
    batch = max(1, ps.tick_rate // ps.send_rate)
    deltas = sum(r.deltas for r in connected)
    datagrams_up = sum(r.inputs_sent for r in connected) / batch
    return verdict(
        n,
        window,
        shares,
        span,
        connected=report.get("connected", 0),
        errors=report.get("errors", 0),
        lost=lost,
        failures=failures,
        tick_rate=ps.tick_rate,
        bound_ms=ps.bound_ms,
        load_cpus=load_cpus,
    ) | {
        "tick_catch_ups": window.get("tick_catch_ups"),
        "error_reasons": report.get("error_reasons") or None,
        "delta_bytes": round(sum(r.bytes_down for r in connected) / deltas, 1) if deltas else None,
        "input_bytes": round(sum(r.bytes_up for r in connected) / datagrams_up, 1) if datagrams_up else None,
        "deltas_per_s_per_bot": report.get("deltas_per_s_per_bot"),
        # Deltas over the datagram limit go on the control stream, one at a time:
        # while one is unacknowledged the server skips that player's sends.
        "stream_delta_share": stream_share,
    }
