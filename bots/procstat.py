"""Where the CPU goes while a load test runs: processes' own CPU time, how busy each CPU
is, and which CPUs the server and the load generator run on.

A load test shares the machine with its server, and often with other work.
Its figures are only worth something when it can say how much CPU the server
used (from the server's own accounting, not wall time), how much the load
generator used, and whether anything else was taking the same CPUs. Linux's
``/proc`` has all three; elsewhere the functions here answer None, and
pinning is skipped.

This is the one reader of ``/proc/PID/stat`` and ``/proc/stat`` and the one
place that sets CPU affinity, for the capacity search and the benchmarks alike.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
CAN_PIN = hasattr(os, "sched_setaffinity")
CORES = len(os.sched_getaffinity(0)) if CAN_PIN else (os.cpu_count() or 1)


# ---------------------------------------------------------------------- processes


def _stat_fields(pid: int | str) -> list[bytes] | None:
    """The fields of /proc/PID/stat after the command name (which may hold spaces)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()
    except (OSError, IndexError):
        return None


def process_cpu_s(pid: int) -> float | None:
    """User + system CPU seconds process ``pid`` (all its threads) has used; None if unknown."""
    fields = _stat_fields(pid)
    if fields is None:
        return None
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def own_cpu_s() -> float:
    """User + system CPU seconds this process has used."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def children(parent: int | None = None, marker: bytes = b"") -> list[int]:
    """PIDs of the processes whose parent is ``parent`` (default: this process) and whose
    command line contains ``marker`` (``b"spawn_main"``: multiprocessing's spawned workers)."""
    parent = os.getpid() if parent is None else parent
    try:
        entries = os.listdir("/proc")
    except OSError:
        return []
    out = []
    for entry in entries:
        if not entry.isdigit():
            continue
        fields = _stat_fields(entry)
        if fields is None or int(fields[1]) != parent:
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                if marker in f.read():
                    out.append(int(entry))
        except OSError:
            continue
    return out


def cpu_busy_s() -> dict[int, float]:
    """Seconds each CPU has been busy (not idle, not waiting for I/O) since boot, from /proc/stat."""
    out: dict[int, float] = {}
    try:
        with open("/proc/stat") as f:
            for line in f:
                if line.startswith("cpu") and line[3].isdigit():
                    name, *ticks = line.split()
                    values = [int(x) for x in ticks]
                    out[int(name[3:])] = (sum(values[:8]) - values[3] - values[4]) / CLK_TCK
    except OSError:
        pass
    return out


# ---------------------------------------------------------------------- pinning


def cpu_plan() -> tuple[set[int] | None, set[int] | None, str]:
    """(the server's CPUs, the load generator's CPUs, a sentence saying so): the first CPU
    for the server, the rest for the generator; no pinning on one CPU or without affinity."""
    if not CAN_PIN:
        return None, None, "no CPU pinning (this platform has no sched_setaffinity)"
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return None, None, f"no CPU pinning (only {len(cpus)} CPU available)"
    server, rest = {cpus[0]}, set(cpus[1:])
    return (
        server,
        rest,
        (
            f"server pinned to CPU {cpus[0]}; load generator (and this process) to "
            f"CPU {','.join(map(str, sorted(rest)))}"
        ),
    )


@contextmanager
def affinity(cpus: set[int] | None) -> Iterator[None]:
    """This thread, and the processes it starts meanwhile, on ``cpus`` (None: unchanged); restored after."""
    if cpus is None or not CAN_PIN:
        yield
        return
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, cpus)
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


def pin_process(pid: int, cpus: set[int]) -> None:
    """Every thread of running process ``pid`` onto ``cpus`` (threads started later follow their parent)."""
    if not CAN_PIN:
        return
    try:
        threads = [int(t) for t in os.listdir(f"/proc/{pid}/task")]
    except OSError:
        threads = [pid]
    for tid in threads:
        with contextlib.suppress(OSError):  # a thread that ended meanwhile
            os.sched_setaffinity(tid, cpus)


# ---------------------------------------------------------------------- sampling


# (time.monotonic(), CPU seconds of each generator process by PID (0: this one), busy seconds by CPU)
Sample = tuple[float, dict[int, float], dict[int, float]]


class CpuSampler:
    """Twice a second, while entered: the load generator's own CPU (this process and its
    spawned workers) and how busy each CPU was, so that a window can say what the
    generator used and what else ran on the server's CPU and on the generator's."""

    def __init__(self, every_s: float = 0.5) -> None:
        self.every_s = every_s
        self.samples: list[Sample] = []
        self._task: asyncio.Task[None] | None = None

    def __enter__(self) -> CpuSampler:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="cpu-sampler")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()

    def sample(self) -> None:
        own = {pid: c for pid in children(marker=b"spawn_main") if (c := process_cpu_s(pid)) is not None}
        own[0] = own_cpu_s()  # this process
        self.samples.append((time.monotonic(), own, cpu_busy_s()))

    async def _run(self) -> None:
        while True:
            self.sample()
            await asyncio.sleep(self.every_s)

    def _pair(self, t0: float, t1: float) -> tuple[Sample, Sample] | None:
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

    def figures(
        self,
        server_cpus: set[int] | None,
        load_cpus: set[int] | None,
        server_percent: float | None,
        t0: float,
        t1: float,
    ) -> dict[str, Any]:
        gen = self.generator_percent(t0, t1)
        server_busy = self.busy_percent(server_cpus, t0, t1)
        load_busy = self.busy_percent(load_cpus, t0, t1)
        return {
            "generator_cpu_percent": gen,
            # What ran on the server's CPU besides the server, and on the generator's besides the generator.
            "other_on_server_cpu_percent": None
            if server_busy is None or server_percent is None
            else round(max(0.0, server_busy - server_percent), 1),
            "other_on_load_cpus_percent": None
            if load_busy is None or gen is None
            else round(max(0.0, load_busy - gen), 1),
            "load_cpus_busy_percent": load_busy,
        }


async def machine_busy_percent(seconds: float = 1.0) -> float | None:
    """How busy all CPUs together were over the next ``seconds``, in % of one core; None if unknown."""
    a, t0 = cpu_busy_s(), time.monotonic()
    await asyncio.sleep(seconds)
    b, t1 = cpu_busy_s(), time.monotonic()
    if not b:
        return None
    return round(100 * sum(b[c] - a.get(c, b[c]) for c in b) / (t1 - t0), 1)
