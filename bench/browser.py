"""Browsers as clients: headless Chromium against a local `tickline serve`, beside the Python SDK.

    .venv/bin/python -m bench.browser [--quick] [--json-out FILE] [--rounds N] [--seconds S]

One server (60 Hz ticks, 30 Hz sends, arena, connect tokens required as `--http-port` has
it; everyone in view, so that every client is sent the same world), pinned to the first
CPU; eight bots in a `tickline bots` process make the world worth watching. Then rounds
of four turns, each a fresh client that sends one input a tick and measures for
``--seconds`` after a second of warm-up:

- ``sdk-wt``: the web SDK (the bundle the server ships) in a page of the server's origin,
  over WebTransport: input-to-visible latencies as the SDK's world measures them (from
  sending an input to the delta that shows it applied), bytes down, and the page's
  main-thread time (Chrome DevTools Protocol ``Performance.getMetrics`` ``TaskDuration``);
- ``python``: the Python SDK (`GameClient`, the fast path) in this process, the baseline
  of the latency and bytes figures;
- ``sdk-ws``: the web SDK over the WebSocket fallback;
- ``play``: the real `/play` page (the SDK, canvas drawing every animation frame, the HUD),
  whose main-thread time is ``browser_page_cpu_ms_per_s`` against the SDK-only page's.

``sdk_bundle_kb`` is the shipped bundle gzipped (level 9), against Colyseus's browser SDK
(`@colyseus/sdk` from the peer's install, bundled by esbuild the same way) when that is at
hand. Figures are BENCH.md's JSON lines (docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import importlib.util
import math
import platform
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from bench.report import Report, med, rnd, round_args, sig
from bench.serve import HOST, Serve
from tickline.bots.client import GameClient
from tickline.bots.lobby import fetch_connect_token
from tickline.bots.procstat import CORES, affinity, cpu_plan

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
ESBUILD = ROOT / "clients" / "web" / "node_modules" / ".bin" / "esbuild"
BOTS = 8
WARMUP_S = 1.0
KINDS = ("sdk-wt", "python", "sdk-ws", "play")

# The SDK-only page's client: joins through the lobby, sends one input a tick (walking
# left and right so that what it sends changes), and reports after the measured window.
SDK_PAGE = """
async ({ seconds, warmup, transports, name }) => {
  const sdk = await import("/tickline-client.js");
  const where = await sdk.discover(location.origin);
  const client = await sdk.connect({ ...where, transports, storage: null });
  const token = await sdk.connectToken(location.origin, name);
  const welcome = await client.join(name, { connectToken: token });
  let n = 0;
  const stop = client.sendEveryTick(() => ({ mx: ((n += 1) >> 5) & 1 ? 1 : -1, my: 0 }));
  const sleep = (ms) => new Promise((ok) => setTimeout(ok, ms));
  await sleep(warmup * 1000);
  client.world.takeLatencies();
  const bytes0 = client.stats.bytesDown, t0 = performance.now();
  window.benchPhase = "measuring";
  await sleep(seconds * 1000);
  const latencies = client.world.takeLatencies();
  const bytes = client.stats.bytesDown - bytes0, elapsed = (performance.now() - t0) / 1000;
  window.benchPhase = "done";
  stop();
  client.close("bench turn over");
  return { latencies, bytes, elapsed, transport: client.transportKind };
}
"""


def say(message: str) -> None:
    print(f"[browser] {message}", file=sys.stderr, flush=True)


def percentile(values: list[float], q: float) -> float:
    """The ``q`` quantile (nearest rank); NaN for none."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


@dataclass
class Turn:
    kind: str
    latency_p99_ms: float = float("nan")
    latency_p50_ms: float = float("nan")
    samples: int = 0
    bytes_per_s: float = float("nan")
    cpu_ms_per_s: float = float("nan")
    transport: str = ""


@dataclass
class Run:
    turns: list[Turn] = field(default_factory=list)

    def of(self, kind: str) -> list[Turn]:
        return [t for t in self.turns if t.kind == kind]


class Bench:
    def __init__(self, server: Serve, browser: Any, seconds: float) -> None:
        self.server, self.browser, self.seconds = server, browser, seconds
        self.http = server.ready["http_url"].rstrip("/")
        self.count = 0

    def name(self, kind: str) -> str:
        self.count += 1
        return f"{kind}-{self.count}"

    async def _task_s(self, cdp: Any) -> float:
        metrics = (await cdp.send("Performance.getMetrics"))["metrics"]
        return float(next(m["value"] for m in metrics if m["name"] == "TaskDuration"))

    async def sdk_turn(self, kind: str) -> Turn:
        page = await self.browser.new_page()
        try:
            cdp = await page.context.new_cdp_session(page)
            await cdp.send("Performance.enable")
            await page.goto(self.http + "/healthz")  # any document of the server's origin will do
            args = {
                "seconds": self.seconds,
                "warmup": WARMUP_S,
                "transports": ["webtransport"] if kind == "sdk-wt" else ["websocket"],
                "name": self.name(kind),
            }
            running = asyncio.ensure_future(page.evaluate(SDK_PAGE, args))
            # Polled every 50 ms during the warm-up only: polling costs the page main-thread time too.
            await page.wait_for_function("window.benchPhase === 'measuring'", polling=50, timeout=30_000)
            loop = asyncio.get_running_loop()
            task0, t0 = await self._task_s(cdp), loop.time()
            result = await asyncio.wait_for(running, self.seconds + 30)
            task1, t1 = await self._task_s(cdp), loop.time()
        finally:
            await page.close()
        elapsed = result["elapsed"]
        return Turn(
            kind,
            latency_p99_ms=percentile(result["latencies"], 0.99) * 1000,
            latency_p50_ms=percentile(result["latencies"], 0.5) * 1000,
            samples=len(result["latencies"]),
            bytes_per_s=result["bytes"] / elapsed,
            cpu_ms_per_s=(task1 - task0) * 1000 / (t1 - t0),
            transport=result["transport"],
        )

    async def play_turn(self) -> Turn:
        page = await self.browser.new_page(viewport={"width": 800, "height": 800})
        try:
            cdp = await page.context.new_cdp_session(page)
            await cdp.send("Performance.enable")
            await page.goto(f"{self.http}/play?name={self.name('play')}")
            await page.wait_for_function("window.tickline && window.tickline.ready", polling=50, timeout=30_000)
            await asyncio.sleep(WARMUP_S)  # the bench's own pacing: a window of play, not a wait for a state
            loop = asyncio.get_running_loop()
            task0, t0 = await self._task_s(cdp), loop.time()
            await asyncio.sleep(self.seconds)
            task1, t1 = await self._task_s(cdp), loop.time()
            transport = await page.evaluate("window.tickline.transport()")
        finally:
            await page.close()
        return Turn("play", cpu_ms_per_s=(task1 - task0) * 1000 / (t1 - t0), transport=transport)

    async def python_turn(self) -> Turn:
        name = self.name("python")
        token = (await fetch_connect_token(self.http, name))["token"]
        ready = self.server.ready
        async with GameClient.connect(HOST, ready["port"], name, cafile=ready["cert"], connect_token=token) as client:
            assert client.welcome is not None
            loop = asyncio.get_running_loop()
            step, n = 1.0 / client.welcome.tick_rate, 0
            start = next_at = loop.time()
            measuring_from, t0, bytes0 = start + WARMUP_S, 0.0, 0
            while (now := loop.time()) < measuring_from + self.seconds:
                if t0 == 0.0 and now >= measuring_from:
                    client.world.input_latencies.clear()
                    t0, bytes0 = now, client.stats.bytes_down
                n += 1
                client.send_input({"mx": 1 if (n >> 5) & 1 else -1, "my": 0})
                next_at += step
                await asyncio.sleep(max(0.0, next_at - loop.time()))  # one input a tick, as sendEveryTick in the page
            latencies = list(client.world.input_latencies)
            elapsed = loop.time() - t0
            transport = "fastpath" if client.stats.fast_packets_down else "quic"
            bytes_down = client.stats.bytes_down - bytes0
        return Turn(
            "python",
            latency_p99_ms=percentile(latencies, 0.99) * 1000,
            latency_p50_ms=percentile(latencies, 0.5) * 1000,
            samples=len(latencies),
            bytes_per_s=bytes_down / elapsed,
            transport=transport,
        )

    async def turn(self, kind: str) -> Turn:
        if kind == "python":
            return await self.python_turn()
        if kind == "play":
            return await self.play_turn()
        return await self.sdk_turn(kind)


def bundle_kb(path: Path) -> float:
    return len(gzip.compress(path.read_bytes(), 9)) / 1000


def colyseus_bundle_kb(work: Path) -> tuple[float | None, str]:
    """Colyseus's browser SDK, minified and gzipped the way tickline's is; None and why when it cannot be had."""
    try:
        from bench.vs_colyseus import install_peer, peer_work_dir
    except ImportError as exc:
        return None, f"bench.vs_colyseus: {exc}"
    peer = peer_work_dir(None)
    try:
        install_peer(peer)
    except (OSError, subprocess.SubprocessError) as exc:
        return None, f"the Colyseus peer could not be installed: {exc}"
    if not ESBUILD.exists():
        return None, "no esbuild: npm ci in clients/web"
    entry = work / "colyseus-entry.js"
    entry.write_text('export * from "@colyseus/sdk";\n')
    out = work / "colyseus-sdk.js"
    done = subprocess.run(
        [str(ESBUILD), str(entry), "--bundle", "--minify", "--format=esm", "--target=es2022",
         "--legal-comments=none", f"--outfile={out}"],
        cwd=peer,
        env={"NODE_PATH": str(peer / "node_modules"), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        timeout=120,
    )  # fmt: skip
    if done.returncode != 0:
        return None, "esbuild could not bundle @colyseus/sdk: " + done.stderr.decode(errors="replace")[-200:]
    return bundle_kb(out), "@colyseus/sdk, bundled and minified by esbuild as tickline's is, gzip -9"


def emit_bundle(report: Report, work: Path, common: dict[str, Any]) -> None:
    shipped = resources.files("tickline") / "web" / "tickline-client.js"
    ours = bundle_kb(Path(str(shipped)))
    theirs, why = colyseus_bundle_kb(work)
    report.emit(
        {
            "figure": "sdk_bundle_kb",
            "value": rnd(ours, 2),
            "unit": "kB (minified, gzip -9)",
            "baseline": rnd(theirs, 2),
            "baseline_of": why,
            "ratio": sig(ours / theirs) if theirs else None,
            "target": "< 30",
            "holds": ours < 30,
            "runs": 1,
            "spread": None,
            **common,
        }
    )


async def run(args: argparse.Namespace, report: Report, work: Path, common: dict[str, Any]) -> None:
    server_cpus, client_cpus, plan = cpu_plan()
    say(plan)
    total_s = args.rounds * len(KINDS) * (args.seconds + WARMUP_S + 4) + 60
    async with Serve(work / "serve", "--http-port", "0", "--lobby-rate", "1000", "--set", "time_limit_s=3600",
                     "--set", "score_limit=100000", "--set", "view_radius=0") as server:  # fmt: skip
        server.pin(server_cpus)
        say(f"server pid {server.pid} at {server.ready['http_url']}; {BOTS} bots for at most {total_s:.0f} s")
        with affinity(client_cpus):
            bots = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "tickline", "bots", "--server", f"{HOST}:{server.ready['port']}",
                "--lobby", server.ready["http_url"], "--n", str(BOTS), "--duration", str(total_s),
                "--cafile", server.ready["cert"], "--quiet",
                stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
            )  # fmt: skip
            try:
                result = await _rounds(args, server)
            finally:
                if bots.returncode is None:
                    bots.terminate()
                await bots.wait()
    _emit(report, result, common)


async def _rounds(args: argparse.Namespace, server: Serve) -> Run:
    from playwright.async_api import async_playwright

    result = Run()
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"]
        )
        try:
            bench = Bench(server, browser, args.seconds)
            for r in range(args.rounds):
                for kind in KINDS:
                    turn = await bench.turn(kind)
                    result.turns.append(turn)
                    say(
                        f"round {r + 1} {kind:7} p50/p99 {turn.latency_p50_ms:5.1f}/{turn.latency_p99_ms:5.1f} ms "
                        f"({turn.samples} samples) "
                        f"{turn.bytes_per_s:7.0f} B/s down, page {turn.cpu_ms_per_s:5.1f} ms/s, {turn.transport}"
                    )
        finally:
            await browser.close()
    return result


def _figure(
    name: str,
    unit: str,
    values: list[float],
    baselines: list[float],
    baseline_of: str,
    target: str | None,
    holds: bool | None,
    common: dict[str, Any],
    **extra: Any,
) -> dict[str, Any]:
    ratios = [v / b for v, b in zip(values, baselines, strict=True) if b and math.isfinite(v) and math.isfinite(b)]
    return {
        "figure": name,
        "value": rnd(med(values), 2),
        "unit": unit,
        "baseline": rnd(med(baselines), 2),
        "baseline_of": baseline_of,
        "ratio": sig(med(ratios)) if ratios else None,
        "target": target,
        "holds": holds,
        "runs": len(values),
        "spread": [sig(min(ratios)), sig(max(ratios))] if ratios else None,
        **extra,
        **common,
    }


def _emit(report: Report, run: Run, common: dict[str, Any]) -> None:
    wt, py, ws, play = (run.of(k) for k in KINDS)
    p99s = {kind: [t.latency_p99_ms for t in turns] for kind, turns in (("wt", wt), ("py", py), ("ws", ws))}
    ratio_wt = med([v / b for v, b in zip(p99s["wt"], p99s["py"], strict=True)])
    versus_python = "the Python SDK (GameClient, fast path) in the same match, turn about"

    def p50(turns: list[Turn]) -> float | int | None:
        return rnd(med([t.latency_p50_ms for t in turns]), 2)

    # (name, unit, values, baselines, baseline_of, target, holds, extra)
    figures: list[tuple[str, str, list[float], list[float], str, str | None, bool | None, dict[str, Any]]] = [
        ("browser_input_to_visible_p99_ms", "ms", p99s["wt"], p99s["py"], versus_python, "<= 1.5 (ratio)",
         ratio_wt <= 1.5, {"transport": "webtransport", "p50_ms": p50(wt), "baseline_p50_ms": p50(py),
                           "samples_per_turn": med([float(t.samples) for t in wt])}),
        ("browser_ws_input_to_visible_p99_ms", "ms", p99s["ws"], p99s["py"], versus_python, None, None,
         {"transport": "websocket", "p50_ms": p50(ws)}),
        ("browser_down_bytes_per_s", "B/s", [t.bytes_per_s for t in wt], [t.bytes_per_s for t in py],
         "the Python SDK's bytes down in the same match, turn about", None, None,
         {"transport": "webtransport", "websocket_b_per_s": rnd(med([t.bytes_per_s for t in ws]), 0)}),
        ("browser_page_cpu_ms_per_s", "ms/s (main-thread tasks)", [t.cpu_ms_per_s for t in play],
         [t.cpu_ms_per_s for t in wt], "the SDK alone in a page without drawing (the same match, turn about)",
         None, None, {"page": "/play: canvas every animation frame, 60 Hz ticks, 30 Hz sends"}),
    ]  # fmt: skip
    for name, unit, values, baselines, baseline_of, target, holds, extra in figures:
        report.emit(_figure(name, unit, values, baselines, baseline_of, target, holds, common, **extra))


def main(argv: list[str] | None = None) -> int:
    parser, args = round_args("python -m bench.browser", __doc__ or "", argv, (5, 2), (10.0, 5.0), "turn")
    if importlib.util.find_spec("playwright") is None:
        parser.error("playwright is not installed: pip install -e '.[dev]'")
    if not Path(CHROMIUM).exists():
        parser.error(f"no Chromium at {CHROMIUM}: apt-get install chromium")
    report = Report(args.json_out)
    common = {"cores": CORES, "python": platform.python_version()}
    work = Path(tempfile.mkdtemp(prefix="bench-browser-"))
    try:
        emit_bundle(report, work, common)
        asyncio.run(run(args, report, work, common))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
