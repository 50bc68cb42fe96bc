"""``tickline bench capacity``: how many players one tickline server process holds.

At a given simulation rate and send rate, the search finds the largest number
of players one ``tickline serve`` process holds while it keeps up. A probe at
``n`` players **passes** when, over a steady window (``--steady-s``, measured
``--settle-s`` after the last bot is in):

1. the server's tick lateness p99 is under ``--bound-ms`` (from its own
   ``/metrics`` histogram, ``tickline_server_tick_lateness_seconds``, over the
   window, as ``bots.loadtest.server_window`` reads it);
2. no tick is skipped: the server ran at least 99 % of ``tick_rate`` ticks per
   second over the window;
3. no send is skipped: every bot received at least 95 % of ``send_rate`` deltas
   per second over the window (each bot's own count, from its worker's snapshots
   nearest the window's ends, divided by the time between them);
4. every bot connected, none lost its connection or reconnected, none had an
   error, the load test reported no failure, and all ``n`` were in the match at
   both ends of the window.

Each probe starts a fresh ``tickline serve`` child (``--port 0 --metrics-port 0``,
a temporary ``--data-dir``, ``max_players=n+1``, a time and score limit no probe
reaches), pinned to the first CPU when the machine has two or more (the bot
workers, which inherit this process's affinity during the probe, get the
others), runs ``n`` ``wander`` bots through ``bots.loadtest.run_load`` (ramped at
``--ramp`` per second), judges the window, then stops the server with SIGTERM
(the bots end with it) and waits for it.

**The baseline** is the transport ceiling: the same search against a bare
aioquic server with no game (``tickline.transport_ceiling``): same tick loop
schedule, same rates, datagrams of the sizes the tickline probes measured (the
average delta and input datagram, from the tickline probe nearest in ``n``),
judged by the same four rules (lateness p99 over its own ticks, read through
the same histogram buckets; ticks per second; datagrams received per client
per second; every client connected and kept).

**The search:** ``n`` doubles from ``--start`` (16) until a probe fails or
``--max-players`` is reached, then bisects between the largest pass and the
smallest failure until they are within ``--tolerance`` (10 %; ``--quick``: 25 %)
of the pass. The two searches run in turns (a tickline probe, a bare probe, ...)
so that both see the same machine, and stop when ``--budget-s`` would be
exceeded. The machine is shared: before each probe the run waits (up to
``--quiet-wait-s``) for other processes to leave the CPUs mostly idle, each
probe reports how much CPU other processes took on the server's and on the
generator's CPUs during its window, and a probe that fails while they took more
than 8 % of the server's core (15 % of the generator's) is run once more, as is
one that failed on its lateness tail alone while the server used less than 80 %
of its core (a few stalled ticks of 480 in an 8 s window are the p99; one such
probe at 16 clients once ended a bare-aioquic search at 15). A probe
whose generator CPUs were 90 % busy says so (``generator_saturated``): there the
clients, not the server, may have been the limit.

Output: one JSON line on stdout (``capacity_players``, as BENCH.md describes);
progress on stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import platform
import re
import resource
import shutil
import signal
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from shared.protocol import MAX_DATAGRAM

ROOT = Path(__file__).resolve().parent.parent
MIN_TICK_SHARE = 0.99  # ticks run per second, of tick_rate
MIN_RECV_SHARE = 0.95  # deltas received per second by each client, of send_rate
MAX_DATAGRAM_BYTES = MAX_DATAGRAM - 1  # bare datagrams stay below tickline's datagram limit
FALLBACK_SIZES = (200, 60)  # delta, input bytes: only if no tickline probe measured any
CRITERIA = (
    "pass = over a steady window (all players in, then settle_s): tick lateness p99 < bound_ms "
    "(server's own histogram); ticks/s >= 99% of tick_rate; every client received >= 95% of send_rate "
    "per second over the window (its own count); all n connected and kept (no error, disconnect, reconnect)"
)


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


@dataclass(slots=True)
class CapacityConfig:
    tick_rate: int = 60
    send_rate: int = 30
    bound_ms: float = 4.0
    start: int = 16
    max_players: int = 400
    tolerance: float = 0.10
    ramp: float = 40.0
    steady_s: float = 8.0
    settle_s: float = 1.0
    budget_s: float = 480.0
    quick: bool = False
    only: tuple[str, ...] = ("tickline", "transport")
    profile_out: Path | None = None
    keep_dir: Path | None = None
    quiet_wait_s: float = 15.0  # longest wait before a probe for other processes to quieten
    serve_loop: str = "auto"  # tickline serve's event loop
    ceiling_loop: str = "asyncio"  # the bare server's event loop


# ---------------------------------------------------------------------- the search (pure)


@dataclass(slots=True)
class Search:
    """Doubling from ``start`` until a failure or ``cap``, then bisection to ``tolerance``.

    ``lo`` is the largest n that passed (0: none yet), ``hi`` the smallest that
    failed (None: none yet). ``next()`` gives the next n to probe, or None when
    done; ``record()`` takes its verdict.
    """

    start: int
    cap: int
    tolerance: float
    lo: int = 0
    hi: int | None = None
    history: list[tuple[int, bool]] = field(default_factory=list)
    stopped: str = ""  # why the search ended early (e.g. out of time)

    def __post_init__(self) -> None:
        self.start = max(1, min(self.start, self.cap))

    def next(self) -> int | None:
        if self.stopped:
            return None
        if not self.history:
            return self.start
        if self.hi is None:
            return None if self.lo >= self.cap else min(max(1, self.lo * 2), self.cap)
        if self.hi - self.lo <= max(1.0, self.tolerance * self.lo):
            return None
        mid = (self.lo + self.hi) // 2
        return mid if self.lo < mid < self.hi else None

    def record(self, n: int, passed: bool) -> None:
        self.history.append((n, passed))
        if passed:
            self.lo = max(self.lo, n)
        else:
            self.hi = n if self.hi is None else min(self.hi, n)

    @property
    def done(self) -> bool:
        return self.next() is None

    @property
    def capped(self) -> bool:
        """The cap passed: the capacity is at least ``cap``, not measured."""
        return self.hi is None and self.lo >= self.cap

    def summary(self) -> dict[str, Any]:
        return {"capacity": self.lo, "bracket": [self.lo, self.hi], "capped": self.capped,
                "stopped_early": self.stopped or None, "probes_run": len(self.history)}


def search(judge: Callable[[int], bool], start: int = 16, cap: int = 400, tolerance: float = 0.10) -> Search:
    """Run a whole search with ``judge(n) -> passed``; the finished Search (``lo`` is the answer)."""
    s = Search(start, cap, tolerance)
    while (n := s.next()) is not None:
        s.record(n, judge(n))
    return s


# ---------------------------------------------------------------------- judging (pure)


def judge(n: int, *, connected: int, errors: int, lost: int, failures: list[str], players_begin: float,
          players_end: float, late_p99_ms: float | None, ticks_per_s: float, recv_shares: list[float],
          tick_rate: int, bound_ms: float, window_ok: bool = True) -> list[str]:
    """Why a probe at ``n`` failed; an empty list when it passed."""
    why = []
    if not window_ok:
        why.append("no full steady window (not every client got in)")
    if connected < n:
        why.append(f"{n - connected} of {n} never connected")
    if errors:
        why.append(f"{errors} client errors")
    if lost:
        why.append(f"{lost} lost their connection")
    if failures:
        why.append(f"load failure: {failures[0]}")
    if min(players_begin, players_end) < n:
        why.append(f"players in the window {players_begin:.0f}..{players_end:.0f} < {n}")
    if late_p99_ms is None:
        why.append("no tick lateness measured")
    elif late_p99_ms >= bound_ms:
        why.append(f"tick lateness p99 {late_p99_ms:.2f} ms >= {bound_ms:g} ms")
    if ticks_per_s < MIN_TICK_SHARE * tick_rate:
        why.append(f"{ticks_per_s:.1f} ticks/s < {MIN_TICK_SHARE:.0%} of {tick_rate}")
    if len(recv_shares) < n:
        why.append(f"receive rates known for {len(recv_shares)} of {n} clients")
    elif recv_shares and min(recv_shares) < MIN_RECV_SHARE:
        short = sum(1 for s in recv_shares if s < MIN_RECV_SHARE)
        why.append(f"{short} clients received < {MIN_RECV_SHARE:.0%} of the send rate (worst {min(recv_shares):.1%})")
    return why


def lateness_buckets(late_ms: list[float]) -> dict[float, float]:
    """Cumulative counts over ``server.http.TICK_BUCKETS`` (seconds), as a Prometheus histogram holds them."""
    from server.http import TICK_BUCKETS

    out: dict[float, float] = {}
    for bound in (*TICK_BUCKETS, math.inf):
        out[bound] = float(sum(1 for x in late_ms if x / 1000 <= bound))
    return out


def choose_window(points: list[tuple[float, float]], n: int, settle_s: float, steady_s: float) -> tuple[int, int] | None:
    """Indices (begin, end) into ``points`` [(t, clients)]: begin is the first point ``settle_s``
    after the first with ``n`` clients, end the first ``steady_s - 0.5`` s after begin."""
    all_in = next((t for t, c in points if c >= n), None)
    if all_in is None:
        return None
    begin = next((i for i, (t, _) in enumerate(points) if t >= all_in + settle_s), None)
    if begin is None:
        return None
    end = next((i for i, (t, _) in enumerate(points) if i > begin and t >= points[begin][0] + steady_s - 0.5), None)
    return None if end is None else (begin, end)


def window_shares(snaps: dict[int, list[tuple[float, list[int | None]]]], begin: float, end: float,
                  earliest: float, latest: float, send_rate: int) -> tuple[list[float], float | None]:
    """Each client's received count per second over the window, as a share of ``send_rate``.

    ``snaps`` holds, per worker, ``(time.monotonic(), [count or None per client])`` snapshots.
    For each worker, the snapshots nearest ``begin`` and ``end`` among those taken between
    ``earliest`` (every client in) and ``latest`` (the server stopped) bound its clients'
    window; a client not connected at either end gets no share. Returns the shares and the
    shortest span used (None when some worker had no two usable snapshots)."""
    shares: list[float] = []
    shortest: float | None = math.inf
    for taken in snaps.values():
        usable = [s for s in taken if earliest <= s[0] <= latest]
        if len(usable) < 2:
            shortest = None
            continue
        a = min(usable, key=lambda s: abs(s[0] - begin))
        b = min(usable, key=lambda s: abs(s[0] - end))
        span = b[0] - a[0]
        if span < 0.5:
            shortest = None
            continue
        if shortest is not None:
            shortest = min(shortest, span)
        for before, after in zip(a[1], b[1]):
            if before is not None and after is not None:
                shares.append((after - before) / (span * send_rate))
    return shares, (None if shortest is None or math.isinf(shortest) else round(shortest, 2))


# ---------------------------------------------------------------------- processes, CPUs


CORES = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
_CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def cpu_plan() -> tuple[set[int] | None, set[int] | None, str]:
    """(server CPUs, load generator CPUs, a sentence saying so)."""
    if not hasattr(os, "sched_getaffinity"):
        return None, None, "no CPU pinning (this platform has no sched_setaffinity)"
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return None, None, f"no CPU pinning (only {len(cpus)} CPU available)"
    server, rest = {cpus[0]}, set(cpus[1:])
    return server, rest, (f"server pinned to CPU {cpus[0]}; bot/client workers (and this process) to "
                          f"CPU {','.join(map(str, sorted(rest)))}")


@contextmanager
def affinity(cpus: set[int] | None) -> Iterator[None]:
    """This thread (and the processes it starts meanwhile) on ``cpus``; restored after."""
    if cpus is None:
        yield
        return
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, cpus)
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


def _proc_cpu_s(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields_ = f.read().rsplit(b")", 1)[1].split()
    except OSError:
        return None
    return (int(fields_[11]) + int(fields_[12])) / _CLK_TCK


def _worker_pids() -> list[int]:
    """This process's multiprocessing (spawn) children: the load's worker processes."""
    me, out = os.getpid(), []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                if int(f.read().rsplit(b")", 1)[1].split()[1]) != me:
                    continue
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                if b"spawn_main" in f.read():
                    out.append(int(entry))
        except (OSError, ValueError, IndexError):
            continue
    return out


def _cpu_busy_s() -> dict[int, float]:
    """Seconds each CPU has been busy (not idle, not waiting for I/O) since boot, from /proc/stat."""
    out: dict[int, float] = {}
    try:
        with open("/proc/stat") as f:
            for line in f:
                if line.startswith("cpu") and line[3].isdigit():
                    name, *ticks = line.split()
                    values = [int(x) for x in ticks]
                    out[int(name[3:])] = (sum(values[:8]) - values[3] - values[4]) / _CLK_TCK
    except OSError:
        pass
    return out


class CpuSampler:
    """Twice a second: the load generator's own CPU (its worker processes and this one, from
    /proc/PID/stat and getrusage) and how busy each CPU was (/proc/stat), so that a probe can
    say what else ran on the server's CPU and on the generator's during its window."""

    def __init__(self) -> None:
        self.samples: list[tuple[float, dict[int, float], dict[int, float]]] = []
        self._task: asyncio.Task[None] | None = None

    def __enter__(self) -> CpuSampler:
        self._task = asyncio.get_running_loop().create_task(self._run())
        return self

    def __exit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()

    def sample(self) -> None:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        own = {pid: c for pid in _worker_pids() if (c := _proc_cpu_s(pid)) is not None}
        own[0] = usage.ru_utime + usage.ru_stime  # this process
        self.samples.append((time.monotonic(), own, _cpu_busy_s()))

    async def _run(self) -> None:
        while True:
            self.sample()
            await asyncio.sleep(0.5)

    def _pair(self, t0: float, t1: float) -> tuple[Any, Any] | None:
        if len(self.samples) < 2:
            return None
        a = min(self.samples, key=lambda s: abs(s[0] - t0))
        b = min(self.samples, key=lambda s: abs(s[0] - t1))
        return (a, b) if b[0] > a[0] else None

    def generator_percent(self, t0: float, t1: float) -> float | None:
        """CPU % (of one core) the load generator used between the samples nearest t0 and t1."""
        pair = self._pair(t0, t1)
        if pair is None:
            return None
        a, b = pair
        used = sum(b[1][pid] - a[1][pid] for pid in b[1] if pid in a[1])
        return round(100 * used / (b[0] - a[0]), 1)

    def busy_percent(self, cpus: set[int] | None, t0: float, t1: float) -> float | None:
        """How busy ``cpus`` were together, in % of one core (everything on them, not only ours)."""
        pair = self._pair(t0, t1)
        if pair is None or cpus is None:
            return None
        a, b = pair
        used = sum(b[2].get(c, 0.0) - a[2].get(c, 0.0) for c in cpus)
        return round(100 * used / (b[0] - a[0]), 1)

    def figures(self, server_cpus: set[int] | None, load_cpus: set[int] | None, server_percent: float | None,
                t0: float, t1: float) -> dict[str, Any]:
        gen = self.generator_percent(t0, t1)
        server_busy = self.busy_percent(server_cpus, t0, t1)
        load_busy = self.busy_percent(load_cpus, t0, t1)
        return {
            "generator_cpu_percent": gen,
            # What ran on the server's CPU besides the server, and on the generator's besides the generator.
            "other_on_server_cpu_percent": None if server_busy is None or server_percent is None
            else round(max(0.0, server_busy - server_percent), 1),
            "other_on_load_cpus_percent": None if load_busy is None or gen is None else round(max(0.0, load_busy - gen), 1),
            "load_cpus_busy_percent": load_busy,
        }


def _python_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])])
    return env


async def _stop(proc: asyncio.subprocess.Process, timeout: float = 20.0) -> int:
    """SIGTERM our child by PID and wait for it; SIGKILL after ``timeout``."""
    if proc.returncode is None:
        try:
            proc.send_signal(signal.SIGTERM)
        except ProcessLookupError:
            pass
    try:
        async with asyncio.timeout(timeout):
            return await proc.wait()
    except TimeoutError:
        proc.kill()
        return await proc.wait()


def _kill_workers() -> None:
    """Stop load workers this process started and left behind (after a cancelled probe), by PID."""
    for pid in _worker_pids():
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass


# ---------------------------------------------------------------------- hooks into bots.loadtest


def _loopback_worker(*args: Any) -> None:
    """``bots.loadtest._worker``, run in the worker process, with the bots' QUIC sockets bound
    to 127.0.0.1, and each progress snapshot carrying every bot's own delta count and the
    worker's ``time.monotonic()`` (the clock is system-wide, so the parent can place it)."""
    import bots.client
    import bots.loadtest
    import bots.swarm
    from tickline.transport_ceiling import loopback_connect

    bots.client.connect = loopback_connect  # type: ignore[assignment]
    snapshot = bots.swarm.Swarm.snapshot

    def with_counts(self: Any) -> dict[str, Any]:
        snap = snapshot(self)
        snap["mono"] = time.monotonic()
        snap["per_bot"] = [r.live()[0] if r.client is not None else None for r in self.results]
        # Datagrams on the live connection: deltas that did not come as datagrams came on the stream.
        snap["per_bot_datagrams"] = [r.client.stats.datagrams_down if r.client is not None else None for r in self.results]
        return snap

    bots.swarm.Swarm.snapshot = with_counts  # type: ignore[method-assign]
    bots.loadtest._worker(*args)


class LoadCapture:
    """While active, ``bots.loadtest.run_load`` (in this process) starts its workers through
    :func:`_loopback_worker`, and we keep what it only aggregates: every bot's own result
    (``finish_report``) and each worker's per-bot delta counts as they arrive (``_row``,
    called once a second with the newest snapshot of every worker). All restored on exit."""

    def __init__(self) -> None:
        self.results: list[Any] = []
        self.snaps: dict[int, list[tuple[float, list[int | None]]]] = {}
        self.datagram_snaps: dict[int, list[tuple[float, list[int | None]]]] = {}

    def __enter__(self) -> LoadCapture:
        import bots.loadtest as lt

        self._lt = lt
        self._saved = (lt.finish_report, lt._worker, lt._row)
        finish, row = lt.finish_report, lt._row

        def finish_report(cfg: Any, workers: int, results: list[Any], *rest: Any) -> dict[str, Any]:
            self.results = list(results)
            return finish(cfg, workers, results, *rest)

        def row_hook(latest: dict[int, dict[str, Any]], *rest: Any) -> dict[str, Any]:
            for worker, body in latest.items():
                if "mono" in body:
                    seen = self.snaps.setdefault(worker, [])
                    if not seen or seen[-1][0] != body["mono"]:
                        seen.append((body["mono"], body["per_bot"]))
                        self.datagram_snaps.setdefault(worker, []).append((body["mono"], body["per_bot_datagrams"]))
            return row(latest, *rest)

        lt.finish_report = finish_report  # type: ignore[assignment]
        lt._worker = _loopback_worker  # type: ignore[assignment]
        lt._row = row_hook  # type: ignore[assignment]
        return self

    def __exit__(self, *exc: object) -> None:
        self._lt.finish_report, self._lt._worker, self._lt._row = self._saved  # type: ignore[assignment]


# ---------------------------------------------------------------------- one tickline probe


async def _scrape_at(url: str) -> Any:
    """A scrape of /metrics, timed at the middle of its request (the server reads its figures then)."""
    from bots.loadtest import Scrape, scrape

    before = time.monotonic()
    samples = await scrape(url)
    return Scrape((before + time.monotonic()) / 2, samples)


async def _start_tickline(n: int, cfg: CapacityConfig, data_dir: Path, log_path: Path,
                          cpus: set[int] | None) -> tuple[asyncio.subprocess.Process, dict[str, Any]]:
    # Started while this thread is on ``cpus``: the child and every thread it makes stay there.
    with log_path.open("ab") as log_file, affinity(cpus):
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tickline", "--loop", cfg.serve_loop, "serve", "--port", "0", "--metrics-port", "0",
            "--data-dir", str(data_dir), "--tick-rate", str(cfg.tick_rate), "--send-rate", str(cfg.send_rate),
            "--set", "time_limit_s=3600", "--set", "score_limit=100000", "--set", f"max_players={n + 1}",
            stdout=asyncio.subprocess.PIPE, stderr=log_file, env=_python_env(),
        )
    assert proc.stdout is not None
    try:
        async with asyncio.timeout(30):
            line = await proc.stdout.readline()
    except TimeoutError:
        await _stop(proc, 5)
        raise RuntimeError(f"tickline serve did not start within 30 s; see {log_path}") from None
    if not line:
        await proc.wait()
        raise RuntimeError(f"tickline serve exited ({proc.returncode}) before it was ready; see {log_path}")
    return proc, orjson.loads(line)


async def probe_tickline(n: int, cfg: CapacityConfig, workdir: Path, index: int,
                         on_window: Callable[[int, float], Any] | None = None) -> dict[str, Any]:
    """One tickline probe at ``n`` players; its verdict and figures."""
    from bots.loadtest import LoadConfig, _sum, run_load, scrape, server_window

    began = time.monotonic()
    server_cpus, load_cpus, _ = cpu_plan()
    data_dir, log_path = workdir / f"p{index:02d}-tickline-{n}", workdir / f"p{index:02d}-tickline-{n}.log"
    proc, ready = await _start_tickline(n, cfg, data_dir, log_path, server_cpus)
    url = f"http://127.0.0.1:{ready['metrics_port']}/metrics"
    # Generous: the bots end when the server stops, right after the window.
    duration = n / cfg.ramp + cfg.settle_s + cfg.steady_s + 30.0
    load_cfg = LoadConfig(host="127.0.0.1", port=ready["port"], n=n, duration=duration, ramp=cfg.ramp,
                          behaviour="wander", cafile=ready["cert"], metrics_url=url, progress=False)
    window: dict[str, Any] = {}
    report: dict[str, Any] = {}
    profile_task: asyncio.Future[Any] | None = None
    status: int | None = None
    stop_at = 0.0
    limit_s = duration + n / cfg.ramp + 60
    stage = "ramping the bots up"  # what the probe waited for, should it run out of time
    try:
        async with asyncio.timeout(limit_s):
            with LoadCapture() as capture, affinity(load_cpus), CpuSampler() as cpu:
                started = time.monotonic()
                load = asyncio.create_task(run_load(load_cfg))
                try:
                    # Every bot in (or given up on), then settle, then the window.
                    give_up = started + 1.0 + n / cfg.ramp + 10.0
                    all_in = False
                    while not load.done() and time.monotonic() < give_up:
                        try:
                            players = _sum(await scrape(url), "tickline_server_players")
                        except Exception:  # noqa: BLE001 - the server is starting or busy; try again
                            players = 0
                        if players >= n:
                            all_in = True
                            break
                        await asyncio.sleep(0.5)
                    all_in_at = time.monotonic()
                    stage = "the steady window"
                    await asyncio.sleep(cfg.settle_s)
                    first = await _scrape_at(url)
                    if on_window is not None:
                        profile_task = asyncio.ensure_future(on_window(proc.pid, cfg.steady_s))
                    await asyncio.sleep(max(0.0, first.t + cfg.steady_s - time.monotonic()))
                    last = await _scrape_at(url)
                    cpu.sample()
                    window = server_window(first, last, [first, last])
                    window["players_begin"] = _sum(first.samples, "tickline_server_players")
                    window["players_end"] = _sum(last.samples, "tickline_server_players")
                    window["all_in"] = all_in
                    window.update(cpu.figures(server_cpus, load_cpus, window["cpu_percent"], first.t, last.t))
                    window["bounds"] = (all_in_at, first.t, last.t)
                finally:
                    # The server's goodbye ends every bot at once.
                    stop_at = time.monotonic()
                    stage = "the server to stop"
                    status = await _stop(proc)
                    stage = "the bot workers to finish after the server stopped"
                    report = await load
                if profile_task is not None:
                    stage = "py-spy"
                    await profile_task
    except TimeoutError:
        raise RuntimeError(f"the probe took over {limit_s:.0f} s, waiting for {stage}; its server log: {log_path} (kept with --keep-dir)") from None
    finally:
        if proc.returncode is None:
            status = await _stop(proc, 5)
        _kill_workers()
    results = capture.results
    connected = [r for r in results if r.connected]
    shares: list[float] = []
    span = stream_share = None
    if "bounds" in window:
        all_in_at, begin, end = window.pop("bounds")
        shares, span = window_shares(capture.snaps, begin, end, all_in_at, stop_at, cfg.send_rate)
        by_datagram, _ = window_shares(capture.datagram_snaps, begin, end, all_in_at, stop_at, cfg.send_rate)
        if shares and by_datagram:
            stream_share = round(max(0.0, 1 - sum(by_datagram) / sum(shares)), 3)
    lost = report.get("disconnects", 0) + report.get("reconnects", 0)
    # The load test scrapes /metrics once more after its bots end, which is after we stopped
    # the server: that scrape fails by design. The window's figures are our own scrapes.
    failures = [f for f in report.get("failures", []) if not f.startswith("metrics scrape of")]
    why = judge(
        n, connected=report.get("connected", 0), errors=report.get("errors", 0), lost=lost,
        failures=failures, players_begin=window.get("players_begin", 0),
        players_end=window.get("players_end", 0), late_p99_ms=window.get("tick_late_ms_p99"),
        ticks_per_s=window.get("ticks_per_s", 0.0), recv_shares=shares, tick_rate=cfg.tick_rate,
        bound_ms=cfg.bound_ms, window_ok=window.get("all_in", False),
    )
    batch = max(1, cfg.tick_rate // cfg.send_rate)
    deltas = sum(r.deltas for r in connected)
    datagrams_up = sum(r.inputs_sent for r in connected) / batch
    return {
        "n": n, "pass": not why, "why": why,
        "tick_late_ms_p99": window.get("tick_late_ms_p99"), "tick_late_ms_p50": window.get("tick_late_ms_p50"),
        "ticks_per_s": window.get("ticks_per_s"), "server_cpu_percent": window.get("cpu_percent"),
        "recv_share_min": round(min(shares), 4) if shares else None,
        "recv_share_mean": round(sum(shares) / len(shares), 4) if shares else None,
        "connected": report.get("connected", 0), "errors": report.get("errors", 0), "lost": lost,
        "error_reasons": report.get("error_reasons") or None,
        "delta_bytes": round(sum(r.bytes_down for r in connected) / deltas, 1) if deltas else None,
        "input_bytes": round(sum(r.bytes_up for r in connected) / datagrams_up, 1) if datagrams_up else None,
        "deltas_per_s_per_bot": report.get("deltas_per_s_per_bot"),
        # Deltas over the datagram limit go on the control stream, one at a time:
        # while one is unacknowledged the server skips that player's sends.
        "stream_delta_share": stream_share,
        "window_s": window.get("window_s"), "recv_span_s": span, **_cpu_keys(window, load_cpus),
        "server_exit": status, "seconds": round(time.monotonic() - began, 1),
    }


# ---------------------------------------------------------------------- one transport-ceiling probe


async def probe_transport(n: int, cfg: CapacityConfig, workdir: Path, index: int, delta_bytes: int,
                          input_bytes: int, server_args: tuple[str, ...] = (), client_loop: str = "asyncio",
                          on_window: Callable[[int, float], Any] | None = None) -> dict[str, Any]:
    """One bare-aioquic probe at ``n`` clients; its verdict and figures. ``server_args`` go to
    ``transport_ceiling serve`` (e.g. ``--fastpath``, ``--loop uvloop``); ``on_window(pid,
    seconds)`` is started ``settle_s`` after every client is in (bench/transport.py profiles)."""
    from bots.loadtest import histogram_quantile
    from tickline.transport_ceiling import run_clients

    began = time.monotonic()
    server_cpus, load_cpus, _ = cpu_plan()
    duration = n / cfg.ramp + cfg.settle_s + cfg.steady_s + 30.0
    log_path = workdir / f"p{index:02d}-transport-{n}.log"
    with log_path.open("ab") as log_file, affinity(server_cpus):
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tickline.transport_ceiling", "serve", "--port", "0",
            "--tick-rate", str(cfg.tick_rate), "--send-rate", str(cfg.send_rate),
            "--delta-bytes", str(delta_bytes), "--cert-dir", str(workdir / "ceiling-tls"),
            "--max-seconds", str(round(duration + n / cfg.ramp + 60)), *server_args,
            stdout=asyncio.subprocess.PIPE, stderr=log_file, env=_python_env(),
        )
    assert proc.stdout is not None
    lines: list[dict[str, Any]] = []
    window: dict[str, Any] = {}
    clients: dict[str, Any] = {"results": [], "failures": []}
    status: int | None = None
    stop_at = 0.0
    profile_task: asyncio.Future[Any] | None = None
    try:
        async with asyncio.timeout(duration + n / cfg.ramp + 60):
            line = await asyncio.wait_for(proc.stdout.readline(), 30)
            if not line:
                raise RuntimeError(f"the bare server exited ({await proc.wait()}) before it was ready; see {log_path}")
            ready = orjson.loads(line)

            async def read_lines() -> None:
                assert proc.stdout is not None
                while raw := await proc.stdout.readline():
                    lines.append(orjson.loads(raw))

            reader = asyncio.create_task(read_lines())
            with affinity(load_cpus), CpuSampler() as cpu:
                started = time.monotonic()
                run = asyncio.create_task(run_clients(ready["port"], n, duration, ramp=cfg.ramp,
                                                      send_rate=cfg.send_rate, input_bytes=input_bytes,
                                                      workers=_load_workers(n), loop=client_loop))
                try:
                    give_up = started + 1.0 + n / cfg.ramp + 10.0
                    chosen = None
                    while not run.done() and time.monotonic() < give_up + cfg.settle_s + cfg.steady_s + 2:
                        await asyncio.sleep(0.25)
                        points = [(x["t"], x["clients"]) for x in lines]
                        if on_window is not None and profile_task is None and any(c >= n for _, c in points):
                            profile_task = asyncio.ensure_future(
                                _later(cfg.settle_s, on_window, proc.pid, cfg.steady_s))
                        chosen = choose_window(points, n, cfg.settle_s, cfg.steady_s)
                        if chosen is not None:
                            break
                        if time.monotonic() > give_up and not any(c >= n for _, c in points):
                            break
                    all_in_at = next((x["t"] for x in lines if x["clients"] >= n), None)
                    if chosen is None:  # judge whatever ran, as a failure
                        window["all_in"] = False
                        chosen = (max(0, len(lines) - 1 - int(cfg.steady_s)), len(lines) - 1) if len(lines) >= 2 else None
                    else:
                        window["all_in"] = True
                    if chosen is not None:
                        a, b = lines[chosen[0]], lines[chosen[1]]
                        wall = max(1e-9, b["t"] - a["t"])
                        late = [x for line_ in lines[chosen[0] + 1: chosen[1] + 1] for x in line_["late_ms"]]
                        p99 = histogram_quantile(0.99, {}, lateness_buckets(late))
                        p50 = histogram_quantile(0.5, {}, lateness_buckets(late))
                        window.update({
                            "window_s": round(wall, 2),
                            "tick_late_ms_p99": None if p99 is None else round(p99 * 1000, 3),
                            "tick_late_ms_p50": None if p50 is None else round(p50 * 1000, 3),
                            "tick_late_ms_p99_exact": round(sorted(late)[min(len(late) - 1, math.ceil(0.99 * len(late)) - 1)], 3) if late else None,
                            "ticks_per_s": round((b["ticks"] - a["ticks"]) / wall, 1),
                            "cpu_percent": round(100 * (b["cpu_s"] - a["cpu_s"]) / wall, 1),
                            "received_per_s": round((b["received"] - a["received"]) / wall, 1),
                            "sent_per_s": round((b["sent"] - a["sent"]) / wall, 1),
                            # Server CPU per datagram (or fast-path packet) it sent or received.
                            "us_per_message": round(1e6 * (b["cpu_s"] - a["cpu_s"]) / max(
                                1, b["sent"] - a["sent"] + b["received"] - a["received"]), 3),
                            "players_begin": a["clients"], "players_end": b["clients"],
                        })
                        window.update(cpu.figures(server_cpus, load_cpus, window["cpu_percent"], a["t"], b["t"]))
                        if all_in_at is not None:
                            window["bounds"] = (all_in_at, a["t"], b["t"])
                finally:
                    if profile_task is not None:
                        await profile_task
                    stop_at = time.monotonic()
                    status = await _stop(proc)
                    clients = await run
            await reader
    finally:
        if proc.returncode is None:
            status = await _stop(proc, 5)
        _kill_workers()
    results = clients["results"]
    connected = [r for r in results if r["connected"]]
    shares: list[float] = []
    span = None
    if "bounds" in window:
        all_in_at, begin, end = window.pop("bounds")
        shares, span = window_shares(clients.get("snaps", {}), begin, end, all_in_at, stop_at, cfg.send_rate)
    # Closed before we stopped the server: lost.
    lost = sum(1 for r in connected if r["closed_at"] and r["closed_at"] < stop_at - 0.05)
    errors = Counter(r["error"] for r in results if r["error"])
    down = sum(r["received"] for r in connected)
    why = judge(
        n, connected=len(connected), errors=sum(errors.values()), lost=lost, failures=clients["failures"],
        players_begin=window.get("players_begin", 0), players_end=window.get("players_end", 0),
        late_p99_ms=window.get("tick_late_ms_p99"), ticks_per_s=window.get("ticks_per_s", 0.0),
        recv_shares=shares, tick_rate=cfg.tick_rate, bound_ms=cfg.bound_ms, window_ok=window.get("all_in", False),
    )
    return {
        "n": n, "pass": not why, "why": why,
        "tick_late_ms_p99": window.get("tick_late_ms_p99"), "tick_late_ms_p50": window.get("tick_late_ms_p50"),
        "tick_late_ms_p99_exact": window.get("tick_late_ms_p99_exact"),
        "ticks_per_s": window.get("ticks_per_s"), "server_cpu_percent": window.get("cpu_percent"),
        "recv_share_min": round(min(shares), 4) if shares else None,
        "recv_share_mean": round(sum(shares) / len(shares), 4) if shares else None,
        "connected": len(connected), "errors": sum(errors.values()), "lost": lost,
        "error_reasons": dict(errors) or None,
        # Of what the clients received, the share that came as fast-path packets (--fastpath).
        "fast_share_down": round(sum(r["fast_received"] for r in connected) / down, 4) if down else None,
        "delta_bytes": delta_bytes, "input_bytes": input_bytes, "us_per_message": window.get("us_per_message"),
        "received_per_s": window.get("received_per_s"), "sent_per_s": window.get("sent_per_s"),
        "window_s": window.get("window_s"), "recv_span_s": span, **_cpu_keys(window, load_cpus),
        "server_exit": status, "seconds": round(time.monotonic() - began, 1),
    }


# Other processes' CPU, in % of a core, above which a window counts as disturbed: on the
# server's CPU even a little shows in its lateness tail (our own loopback traffic's kernel
# time stays under ~5 %); on the generator's, what could slow the bots.
DISTURBED_SERVER_PERCENT = 8.0
DISTURBED_LOAD_PERCENT = 15.0
SATURATED_SHARE = 0.9  # the generator's CPUs this busy: the clients, not the server, may be the limit
# A probe that failed on its lateness tail alone while its server used less than this
# (% of its core) is run once more: far from saturation, a few stalled ticks are noise.
MARGINAL_SERVER_PERCENT = 80.0


def retry_reason(p: dict[str, Any]) -> str | None:
    """Why a failed probe should run once more, or None when its failure stands."""
    if p["pass"]:
        return None
    if p.get("disturbed"):
        return "disturbed by other processes"
    why = p.get("why") or []
    cpu = p.get("server_cpu_percent")
    if why and all(w.startswith("tick lateness p99") for w in why) and cpu is not None and cpu < MARGINAL_SERVER_PERCENT:
        return f"lateness alone at {cpu:.0f}% server CPU"
    return None


async def _later(delay: float, func: Callable[[int, float], Any], *args: Any) -> Any:
    await asyncio.sleep(delay)
    return await func(*args)


def _cpu_keys(window: dict[str, Any], load_cpus: set[int] | None) -> dict[str, Any]:
    keys = ("generator_cpu_percent", "load_cpus_busy_percent", "other_on_server_cpu_percent", "other_on_load_cpus_percent")
    out = {k: window.get(k) for k in keys}
    out["disturbed"] = ((window.get("other_on_server_cpu_percent") or 0) > DISTURBED_SERVER_PERCENT
                        or (window.get("other_on_load_cpus_percent") or 0) > DISTURBED_LOAD_PERCENT)
    busy = window.get("load_cpus_busy_percent")
    out["generator_saturated"] = None if busy is None or not load_cpus else busy >= 100 * SATURATED_SHARE * len(load_cpus)
    return out


def _load_workers(n: int) -> int:
    """As ``bots.loadtest.LoadConfig.worker_count`` chooses for the bots."""
    return max(1, min(os.cpu_count() or 1, math.ceil(n / 100), n))


# ---------------------------------------------------------------------- profiling (optional)


async def profile_server(pid: int, seconds: float, out: Path, rate: int = 100, native: bool = False) -> dict[str, Any]:
    """``py-spy record -f raw`` of the server for ``seconds`` (``rate`` samples/s; ``native``: C frames
    too); its top self-time frames."""
    spy = shutil.which("py-spy", path=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]))
    if spy is None:
        return {"error": "py-spy not found (pip install py-spy)"}
    proc = await asyncio.create_subprocess_exec(
        spy, "record", "-o", str(out), "-f", "raw", "-p", str(pid), "-d", str(max(1, round(seconds))),
        "-r", str(rate), *(("--native",) if native else ()),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(seconds + 30):
            _, err = await proc.communicate()
    except TimeoutError:
        proc.kill()
        await proc.wait()
        return {"error": "py-spy did not finish"}
    if proc.returncode != 0 or not out.exists():
        return {"error": f"py-spy failed ({proc.returncode}): {err.decode(errors='replace').strip()[-300:]}"}
    return summarize_profile(out)


_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")

# Where a leaf frame's file puts its self time (first match wins; C code counts for its caller).
AREAS = (
    ("event log (SQLite writer)", ("server/eventlog.py", "aiosqlite/", "sqlalchemy/", "sqlite3/")),
    ("metrics and HTTP", ("server/http.py", "prometheus_client/", "aiohttp/", "multidict/", "yarl/")),
    ("QUIC and TLS (aioquic)", ("aioquic/",)),
    ("asyncio loop and UDP sockets", ("asyncio/", "selectors.py", "socket.py")),
    ("game rules and views (shared/arena, shared/game)", ("shared/arena.py", "shared/game.py", "shared/games.py")),
    ("deltas and wire encoding (shared/delta, shared/protocol)", ("shared/delta.py", "shared/protocol.py", "shared/")),
    ("match loop and sessions (server/)", ("server/",)),
)


def _is_waiting(func: str, file: str, line: int | None) -> bool:
    """Frames where a thread waits rather than works (py-spy does not always tell them apart)."""
    if file.endswith("selectors.py") and func.endswith("select"):
        return True
    if func in ("epoll_wait", "epoll_pwait"):  # py-spy --native: a loop blocked in the kernel
        return True
    if file.endswith("threading.py") and func.split(".")[-1] in ("wait", "_wait_for_tstate_lock"):
        return True
    return func == "_connection_worker_thread" and line == _aiosqlite_wait_line()


def _aiosqlite_wait_line() -> int | None:
    """The line of aiosqlite's worker thread where it blocks on its queue (``tx.get()``)."""
    global _AIOSQLITE_LINE
    if _AIOSQLITE_LINE == -1:
        _AIOSQLITE_LINE = None
        try:
            import inspect

            import aiosqlite.core

            lines, first = inspect.getsourcelines(aiosqlite.core._connection_worker_thread)
            _AIOSQLITE_LINE = next((first + i for i, text in enumerate(lines) if ".get()" in text), None)
        except Exception:  # noqa: BLE001 - an aiosqlite without that function: nothing to skip
            pass
    return _AIOSQLITE_LINE


_AIOSQLITE_LINE: int | None = -1


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
    share = lambda c: round(c / busy, 4) if busy else 0.0  # noqa: E731
    roots = [f for f, c in inclusive.items() if c >= 0.9 * busy]
    return {
        "samples": total,
        "waiting_share": round(waiting / total, 4) if total else None,
        "busy_samples": busy,
        "areas": [{"area": a, "share": share(c)} for a, c in areas.most_common()],
        "self": [{"frame": f, "share": share(c)} for f, c in self_time.most_common(top)],
        "inclusive": [{"frame": f, "share": share(c)} for f, c in inclusive.most_common(top + len(roots))
                      if f not in roots][:top],
    }


def _frame_name(m: re.Match[str]) -> str:
    file = m.group("file")
    for marker in ("site-packages/", "/python3.11/", str(ROOT) + "/"):
        if marker in file:
            file = file.split(marker, 1)[1]
    return f"{m.group('func')} ({file})"


# ---------------------------------------------------------------------- the run


def _sizes_for(n: int, tickline_probes: list[dict[str, Any]]) -> tuple[int, int, int | None]:
    """(delta bytes, input bytes, from the tickline probe at n) nearest in n among those that measured them."""
    measured = [p for p in tickline_probes if p.get("delta_bytes") and p.get("input_bytes")]
    if not measured:
        return FALLBACK_SIZES[0], FALLBACK_SIZES[1], None
    best = min(measured, key=lambda p: (abs(p["n"] - n), -p["n"]))
    return (min(MAX_DATAGRAM_BYTES, round(best["delta_bytes"])), min(MAX_DATAGRAM_BYTES, round(best["input_bytes"])),
            best["n"])


def _brief(kind: str, p: dict[str, Any]) -> str:
    def f(v: Any, unit: str = "") -> str:
        return "-" if v is None else (f"{v:.2f}{unit}" if isinstance(v, float) else f"{v}{unit}")

    return (f"  {kind:9s} n={p['n']:<4d} {'PASS' if p['pass'] else 'fail'}  late p99={f(p['tick_late_ms_p99'], 'ms')} "
            f"ticks/s={f(p['ticks_per_s'])} server cpu={f(p['server_cpu_percent'], '%')} "
            f"recv min={f(p['recv_share_min'])} gen cpu={f(p.get('generator_cpu_percent'), '%')} "
            f"others cpu={f(p.get('other_on_server_cpu_percent'), '%')}/{f(p.get('other_on_load_cpus_percent'), '%')} "
            + (f"stream deltas={p['stream_delta_share']:.0%} " if p.get("stream_delta_share") else "")
            + ("GENERATOR SATURATED " if p.get("generator_saturated") else "")
            + f"({p['seconds']:.0f} s)" + ("" if p["pass"] else f"  [{'; '.join(p['why'])}]"))


async def run_capacity(cfg: CapacityConfig) -> dict[str, Any]:
    """Both searches, in turns; the figure's JSON object."""
    began = time.monotonic()
    deadline = began + cfg.budget_s
    _, _, pinning = cpu_plan()
    _say(f"tickline bench capacity: {cfg.tick_rate} Hz ticks, {cfg.send_rate} Hz sends, lateness p99 bound "
         f"{cfg.bound_ms:g} ms, start {cfg.start}, cap {cfg.max_players}, tolerance {cfg.tolerance:.0%}, "
         f"window {cfg.steady_s:g} s, budget {cfg.budget_s:.0f} s; {pinning}")
    workdir = Path(tempfile.mkdtemp(prefix="tickline-capacity-")) if cfg.keep_dir is None else cfg.keep_dir
    workdir.mkdir(parents=True, exist_ok=True)
    searches = {k: Search(cfg.start, cfg.max_players, cfg.tolerance) for k in cfg.only}
    probes: dict[str, list[dict[str, Any]]] = {k: [] for k in cfg.only}
    overhead = {"tickline": 6.0, "transport": 4.0}  # seconds a probe takes beyond ramp + settle + window
    index = 0
    try:
        while True:
            ran = False
            for kind, s in searches.items():
                n = s.next()
                if n is None:
                    continue
                expected = overhead[kind] + n / cfg.ramp + cfg.settle_s + cfg.steady_s + 1.0
                if time.monotonic() + expected > deadline:
                    s.stopped = f"time budget ({cfg.budget_s:.0f} s) reached before a probe at n={n}"
                    _say(f"  {kind}: {s.stopped}")
                    continue
                attempts: list[dict[str, Any]] = []
                while True:
                    index += 1
                    busy_before = await wait_for_quiet(cfg.quiet_wait_s)
                    p = await _probe(kind, n, cfg, workdir, index, probes)
                    p["machine_busy_before_percent"] = busy_before
                    attempts.append(p)
                    # A failure while other processes took the server's or the generator's CPU
                    # says more about them than about us, and a lateness tail far from
                    # saturation may be a stall of the machine: run that probe once more.
                    again = retry_reason(p)
                    if again is None or len(attempts) > 1:
                        break
                    _say(_brief(kind, p) + f"  ({again}: once more)")
                if len(attempts) > 1:
                    p["first_attempt"] = {k: attempts[0].get(k) for k in (
                        "pass", "why", "tick_late_ms_p99", "other_on_server_cpu_percent", "other_on_load_cpus_percent")}
                overhead[kind] = max(overhead[kind], p["seconds"] - (n / cfg.ramp + cfg.settle_s + cfg.steady_s))
                s.record(n, p["pass"])
                probes[kind].append(p)
                _say(_brief(kind, p))
                ran = True
            if not ran:
                break
        result = _figure(cfg, searches, probes, pinning, time.monotonic() - began)
        if cfg.profile_out is not None and "tickline" in searches:
            n = max(1, searches["tickline"].lo)
            _say(f"profiling the tickline server at n={n} with py-spy for {cfg.steady_s:g} s -> {cfg.profile_out}")
            holder: dict[str, Any] = {}

            async def spy(pid: int, seconds: float) -> None:
                holder.update(await profile_server(pid, seconds, cfg.profile_out))  # type: ignore[arg-type]

            p = await probe_tickline(n, cfg, workdir, index + 1, on_window=spy)
            _say(_brief("profiled", p))
            _print_profile(holder)
            result["profile"] = {"n": n, "file": str(cfg.profile_out), "probe": p, **holder}
        return result
    finally:
        if cfg.keep_dir is None:
            shutil.rmtree(workdir, ignore_errors=True)


QUIET_PERCENT = 25.0  # busy % of one core (all CPUs together) below which the machine counts as quiet


async def wait_for_quiet(limit_s: float) -> float:
    """Before a probe (when nothing of ours runs): wait, up to ``limit_s``, until other
    processes keep the machine's CPUs less than QUIET_PERCENT busy over a second. Returns
    the last second's busy %, which the probe reports."""
    began = time.monotonic()
    deadline = began + limit_s
    said = False
    while True:
        a, t0 = _cpu_busy_s(), time.monotonic()
        await asyncio.sleep(1.0)
        b, t1 = _cpu_busy_s(), time.monotonic()
        busy = round(100 * sum(b[c] - a.get(c, b[c]) for c in b) / (t1 - t0), 1)
        if busy < QUIET_PERCENT or time.monotonic() >= deadline:
            if said:
                _say(f"  (waited {time.monotonic() - began:.0f} s; the machine is {busy:.0f}% busy)")
            return busy
        if not said:
            _say(f"  (other processes keep the machine {busy:.0f}% busy; waiting up to {limit_s:g} s for them)")
            said = True


async def _probe(kind: str, n: int, cfg: CapacityConfig, workdir: Path, index: int,
                 probes: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    try:
        if kind == "tickline":
            return await probe_tickline(n, cfg, workdir, index)
        delta, inp, from_n = _sizes_for(n, probes.get("tickline", []))
        p = await probe_transport(n, cfg, workdir, index, delta, inp, server_args=("--loop", cfg.ceiling_loop))
        p["sizes_from_tickline_n"] = from_n
        return p
    except Exception as exc:  # noqa: BLE001 - a probe that breaks is a failed probe, said why
        return {"n": n, "pass": False, "why": [f"probe error: {type(exc).__name__}: {exc}"],
                "tick_late_ms_p99": None, "ticks_per_s": None, "server_cpu_percent": None,
                "recv_share_min": None, "seconds": 0.0}


def _print_profile(summary: dict[str, Any]) -> None:
    if "error" in summary:
        _say(f"  profile: {summary['error']}")
        return
    _say(f"  profile: {summary['samples']} samples, {summary['waiting_share']:.0%} waiting (select, queues); "
         "of the rest, by area:")
    for row in summary["areas"]:
        _say(f"    {row['share']:6.1%}  {row['area']}")
    _say("  top self time:")
    for row in summary["self"]:
        _say(f"    {row['share']:6.1%}  {row['frame']}")
    _say("  top inclusive time:")
    for row in summary["inclusive"][:12]:
        _say(f"    {row['share']:6.1%}  {row['frame']}")


def _figure(cfg: CapacityConfig, searches: dict[str, Search], probes: dict[str, list[dict[str, Any]]],
            pinning: str, elapsed: float) -> dict[str, Any]:
    def at_capacity(kind: str) -> dict[str, Any] | None:
        s = searches.get(kind)
        if s is None:
            return None
        return next((p for p in reversed(probes[kind]) if p["n"] == s.lo and p["pass"]), None)

    value = searches["tickline"].lo if "tickline" in searches else None
    baseline = searches["transport"].lo if "transport" in searches else None
    ratio = round(value / baseline, 3) if value is not None and baseline else None
    t_cap, b_cap = at_capacity("tickline"), at_capacity("transport")
    delta, inp, from_n = _sizes_for(value or cfg.start, probes.get("tickline", []))
    bounds = None
    if "tickline" in searches and "transport" in searches and baseline:
        # What the two brackets allow: each capacity lies in [lo, hi - 1] (hi None: capped or cut short).
        t, b = searches["tickline"], searches["transport"]
        b_max = b.hi - 1 if b.hi else None
        t_max = t.hi - 1 if t.hi else None
        bounds = [None if not b_max else round(t.lo / b_max, 3), None if t_max is None else round(t_max / b.lo, 3)]
    return {
        "figure": "capacity_players",
        "value": value,
        "unit": "players",
        "baseline": baseline,
        "baseline_of": "bare aioquic server, same datagram sizes and rates, no game",
        "ratio": ratio,
        "target": ">= 0.7",
        "holds": None if ratio is None else ratio >= 0.7,
        "runs": 1,
        "spread": [ratio, ratio],
        "cores": CORES,
        "python": platform.python_version(),
        "quick": cfg.quick,
        "tick_rate": cfg.tick_rate,
        "send_rate": cfg.send_rate,
        "bound_ms": cfg.bound_ms,
        "criteria": CRITERIA,
        "pinning": pinning,
        "ratio_bounds": bounds,
        "server_cpu_percent_at_capacity": t_cap and t_cap["server_cpu_percent"],
        "baseline_cpu_percent_at_ceiling": b_cap and b_cap["server_cpu_percent"],
        "delta_bytes": delta,
        "input_bytes": inp,
        "sizes_from_tickline_n": from_n,
        "tickline": _search_json(searches, probes, "tickline"),
        "transport": _search_json(searches, probes, "transport"),
        "settings": {"start": cfg.start, "max_players": cfg.max_players, "tolerance": cfg.tolerance,
                     "ramp_per_s": cfg.ramp, "steady_s": cfg.steady_s, "settle_s": cfg.settle_s,
                     "behaviour": "wander", "budget_s": cfg.budget_s},
        "elapsed_s": round(elapsed, 1),
    }


def _search_json(searches: dict[str, Search], probes: dict[str, list[dict[str, Any]]], kind: str) -> dict[str, Any] | None:
    if kind not in searches:
        return None
    mine = probes[kind]
    return {
        **searches[kind].summary(),
        # Probes whose verdict other processes may have swayed (after any rerun), and probes
        # where the clients' CPUs were the busier side.
        "disturbed_probes": [p["n"] for p in mine if p.get("disturbed")],
        "generator_saturated_probes": [p["n"] for p in mine if p.get("generator_saturated")],
        "probes": mine,
    }


# ---------------------------------------------------------------------- command line


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quick", action="store_true",
                   help="a shorter run (about 2.5 min): 4 s windows, bisection to 25 %%, a 150 s budget")
    p.add_argument("--tick-rate", type=int, default=60, help="simulation ticks per second (default: 60)")
    p.add_argument("--send-rate", type=int, default=30, help="deltas per second to each player (default: 30)")
    p.add_argument("--bound-ms", type=float, default=4.0, help="tick lateness p99 must stay under this (default: 4)")
    p.add_argument("--start", type=int, default=16, help="the first probe's player count; doubled from there (default: 16)")
    p.add_argument("--max-players", type=int, default=400, help="the largest count probed (default: 400)")
    p.add_argument("--tolerance", type=float, help="bisect until the bracket is within this share (default: 0.10; --quick 0.25)")
    p.add_argument("--ramp", type=float, default=40.0, help="players (clients) started per second (default: 40)")
    p.add_argument("--steady-s", type=float, help="seconds of the judged window (default: 8; --quick 4)")
    p.add_argument("--settle-s", type=float, default=1.0, help="seconds after the last player is in before the window (default: 1)")
    p.add_argument("--budget-s", type=float, help="stop probing past this many seconds (default: 480; --quick 150)")
    p.add_argument("--quiet-wait-s", type=float, metavar="S",
                   help="before each probe, wait up to S seconds for other processes to leave the CPUs mostly "
                   "idle (default: 15; --quick 5)")
    p.add_argument("--only", choices=["tickline", "transport"], help="run one of the two searches only (no ratio)")
    p.add_argument("--serve-loop", default="auto", choices=["auto", "uvloop", "asyncio"],
                   help="tickline serve's event loop (default: auto, uvloop where installed)")
    p.add_argument("--ceiling-loop", default="asyncio", choices=["auto", "uvloop", "asyncio"],
                   help="the bare aioquic server's event loop (default: asyncio, where it held the most clients)")
    p.add_argument("--json-out", metavar="FILE", help="also write the JSON line to FILE")
    p.add_argument("--profile-out", metavar="FILE",
                   help="after the search, probe once more at the capacity with py-spy recording the server "
                   "(raw format) into FILE, and print its top self-time functions on stderr")
    p.add_argument("--keep-dir", metavar="DIR", help="keep the probes' server logs and data in DIR")


def config_from_args(args: argparse.Namespace) -> CapacityConfig:
    if args.tick_rate < 1 or args.send_rate < 1 or args.tick_rate % args.send_rate:
        raise ValueError("--tick-rate and --send-rate must be positive, the send rate dividing the tick rate")
    if args.max_players < 1 or args.start < 1 or args.ramp <= 0 or args.bound_ms <= 0:
        raise ValueError("--max-players, --start, --ramp and --bound-ms must be positive")
    quick = args.quick
    return CapacityConfig(
        tick_rate=args.tick_rate, send_rate=args.send_rate, bound_ms=args.bound_ms, start=args.start,
        max_players=args.max_players, tolerance=args.tolerance if args.tolerance is not None else (0.25 if quick else 0.10),
        ramp=args.ramp, steady_s=args.steady_s if args.steady_s is not None else (4.0 if quick else 8.0),
        settle_s=args.settle_s, budget_s=args.budget_s if args.budget_s is not None else (150.0 if quick else 480.0),
        quiet_wait_s=args.quiet_wait_s if args.quiet_wait_s is not None else (5.0 if quick else 15.0),
        quick=quick, only=(args.only,) if args.only else ("tickline", "transport"),
        profile_out=Path(args.profile_out) if args.profile_out else None,
        keep_dir=Path(args.keep_dir) if args.keep_dir else None, ceiling_loop=args.ceiling_loop,
        serve_loop=args.serve_loop,
    )


def run(args: argparse.Namespace) -> int:
    """Run from parsed arguments: the JSON line on stdout (and --json-out)."""
    cfg = config_from_args(args)
    result = asyncio.run(run_capacity(cfg))
    line = orjson.dumps(result).decode()
    sys.stdout.write(line + "\n")
    sys.stdout.flush()
    if args.json_out:
        Path(args.json_out).parent.mkdir(parents=True, exist_ok=True)
        with open(args.json_out, "a") as f:
            f.write(line + "\n")
    _say(f"capacity: tickline {result['value']} players, bare aioquic {result['baseline']} clients, "
         f"ratio {result['ratio']} (target {result['target']}: {'holds' if result['holds'] else 'does not hold'}); "
         f"{result['elapsed_s']:.0f} s")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench/capacity.py", description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    import logging

    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    try:
        return run(args)
    except ValueError as exc:
        print(f"{parser.prog}: error: {exc}", file=sys.stderr)
        return 2
