"""A `tickline serve` child process for a benchmark: started on 127.0.0.1 with free ports,
read up to its ready line, pinned where asked, stopped by its PID. (The older benchmarks
each carry their own; new ones use this.)"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from pathlib import Path
from typing import Any

import orjson

from tickline.bots.procstat import pin_process, process_cpu_s

HOST = "127.0.0.1"


class Serve:
    """``python -m tickline serve --host 127.0.0.1 --port 0 ARGS`` in ``data_dir``."""

    def __init__(self, data_dir: Path, *args: str) -> None:
        self.data_dir, self.args = data_dir, args
        self.proc: asyncio.subprocess.Process | None = None
        self.ready: dict[str, Any] = {}

    async def __aenter__(self) -> Serve:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = (self.data_dir / "stderr.log").open("wb")
        try:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "tickline",
                "--log-level",
                "warning",
                "serve",
                "--host",
                HOST,
                "--port",
                "0",
                "--data-dir",
                str(self.data_dir),
                *self.args,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=log,
            )
        finally:
            log.close()  # the child has its own copy
        assert self.proc.stdout is not None
        line = await asyncio.wait_for(self.proc.stdout.readline(), 60)
        if not line:
            await self.proc.wait()
            tail = (self.data_dir / "stderr.log").read_text(errors="replace").strip().splitlines()[-3:]
            raise RuntimeError(f"tickline serve exited {self.proc.returncode}: {' | '.join(tail)}")
        self.ready = orjson.loads(line)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.proc is None or self.proc.returncode is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(self.proc.wait(), 20)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
            await self.proc.wait()

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def pin(self, cpus: set[int] | None) -> None:
        if cpus is not None:
            pin_process(self.pid, cpus)

    def cpu_s(self) -> float:
        return process_cpu_s(self.pid) or 0.0
