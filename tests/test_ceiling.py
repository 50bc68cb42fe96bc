"""The transport ceiling of the benchmarks (bench/ceiling.py), for real with tiny limits: its
fast-path mode carries inputs and deltas as sealed packets, its QUIC mode as QUIC datagrams."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

from bench.ceiling import choose_window, run_clients

CLIENTS = 3
SECONDS = 1.5
RATE = 30


async def _run(tmp_path: Path, *flags: str) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """The ceiling server with ``flags`` and CLIENTS clients for SECONDS: (ready, final line, clients)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench.ceiling",
        "serve",
        "--tick-rate",
        str(RATE),
        "--send-rate",
        str(RATE),
        "--delta-bytes",
        "120",
        "--cert-dir",
        str(tmp_path / "tls"),
        "--max-seconds",
        "60",
        *flags,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None
    try:
        ready = orjson.loads(await asyncio.wait_for(proc.stdout.readline(), 30))
        clients = await asyncio.wait_for(
            run_clients(ready["port"], CLIENTS, SECONDS, ramp=20, send_rate=RATE, input_bytes=36, workers=1), 60
        )
        proc.terminate()  # ours, by PID: the server closes every connection and prints its last line
        out, err = await asyncio.wait_for(proc.communicate(), 30)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0, err.decode()
    final = orjson.loads(out.splitlines()[-1])
    assert final["event"] == "stopped"
    return ready, final, clients


@pytest.mark.slow
async def test_fastpath_mode_carries_sealed_inputs_and_deltas(tmp_path: Path) -> None:
    ready, final, clients = await _run(tmp_path, "--fastpath", "--loop", "asyncio")
    assert ready["fastpath"] is True and ready["loop"] == "asyncio"
    results = clients["results"]
    assert not clients["failures"] and len(results) == CLIENTS
    for r in results:
        assert r["connected"] and not r["error"], r
        # Every input after the keys came went as a fast-path packet, and sealed deltas came back
        # and opened under the client's down key.
        assert r["sent"] >= r["fast_sent"] > 0, r
        assert r["fast_received"] > 0, r
        assert r["fast_dropped"] == 0, r
        assert r["received"] >= r["fast_received"]
    # The server opened the clients' inputs on its fast path (FastPath.packets_in) and counted
    # each as an input; it dropped none; it sealed deltas to them.
    assert final["fast_in"] == sum(r["fast_sent"] for r in results)
    assert final["received"] >= final["fast_in"] > 0
    assert final["fast_dropped"] == 0
    assert final["fast_out"] >= sum(r["fast_received"] for r in results)
    assert final["handshakes"] == CLIENTS


@pytest.mark.slow
async def test_quic_mode_stays_on_quic_datagrams(tmp_path: Path) -> None:
    pytest.importorskip("uvloop")
    ready, final, clients = await _run(tmp_path, "--loop", "uvloop")
    assert ready["fastpath"] is False and ready["loop"] == "uvloop"
    assert "fast_in" not in final
    results = clients["results"]
    assert not clients["failures"] and len(results) == CLIENTS
    for r in results:
        assert r["connected"] and not r["error"], r
        assert r["fast_sent"] == r["fast_received"] == 0 and r["sent"] > 0, r
        assert r["received"] > 0, r
    assert sum(r["sent"] for r in results) >= final["received"] > 0


def test_the_window_starts_a_settling_time_after_every_client_is_in() -> None:
    points: list[tuple[float, float]] = [(0.0, 3), (1.0, 8), (2.0, 10), (3.0, 10), (4.0, 10), (5.0, 10), (6.0, 10)]
    assert choose_window(points, 10, settle_s=1.0, steady_s=3.0) == (3, 6)
    assert choose_window(points, 11, settle_s=1.0, steady_s=3.0) is None
