"""``tickline demo``: one match end to end, the way a user would run the parts.

1. start ``tickline serve`` as a child process on 127.0.0.1 (free ports, the
   SQLite log under the data folder), and wait for its ready line; its HTTP
   side serves the lobby, where a person can join the bots' match in a browser;
2. connect N arena bots over QUIC; they play until the match ends;
3. stop the server with SIGTERM and check that it exits 0;
4. re-simulate the match from the event log and check every state hash;
5. export it as a replay file and render the HTML replay player beside it
   (``DATA_DIR/replays/MATCH.tlr`` and ``.html``).

A short summary goes to stdout, then one JSON line, last.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path
from typing import Any

import orjson

from tickline.bots.swarm import run_swarm
from tickline.replays.file import write_replay
from tickline.replays.player import render_html
from tickline.replays.reader import LogReader
from tickline.replays.replay import Replay
from tickline.replays.verify import verify_match
from tickline.shared.game import Rules
from tickline.shared.games import load


class DemoError(RuntimeError):
    pass


def _game_settings(game: type[Rules], seconds: int) -> list[str]:
    """``--set`` arguments that make a match of ``game`` last ``seconds`` where its config
    has a time limit (a game without one plays to its own end)."""
    defaults = game.default_config()
    out = []
    if "time_limit_s" in defaults:
        out += ["--set", f"time_limit_s={seconds}"]
    if "score_limit" in defaults:
        out += ["--set", "score_limit=1000"]  # the time limit, not a score, ends a demo
    return out


async def _start_server(
    data_dir: Path, game: str, settings: list[str], log_path: Path
) -> tuple[asyncio.subprocess.Process, dict[str, Any]]:
    log_file = log_path.open("ab")
    try:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tickline",
            "serve",
            "--port",
            "0",
            "--http-port",
            "0",
            "--data-dir",
            str(data_dir),
            "--game",
            game,
            *settings,
            stdout=asyncio.subprocess.PIPE,
            stderr=log_file,
        )
    finally:
        log_file.close()
    assert proc.stdout is not None
    try:
        async with asyncio.timeout(30):
            line = await proc.stdout.readline()
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise DemoError(f"the server did not start within 30 s; see {log_path}") from None
    if not line:
        await proc.wait()
        raise DemoError(f"the server exited with status {proc.returncode} before it was ready; see {log_path}")
    return proc, orjson.loads(line)


def say(text: str) -> None:
    print(text, flush=True)


async def run_demo(data_dir: Path, bots: int = 8, seconds: int = 15, game: str = "arena") -> int:
    """The demo in ``data_dir`` (which must exist); 0 when the match verified and everything ended cleanly."""
    log_path = data_dir / "demo-server.log"
    rules = load(game)
    settings = _game_settings(rules, seconds)
    # A game without a time limit plays to its own end: the bots stay as long as that takes.
    stay_s = seconds + 10 if settings else 600

    proc, ready = await _start_server(data_dir, game, settings, log_path)
    say(f"server ready on {ready['host']}:{ready['port']} (pid {proc.pid}); certificate {ready['cert']}")
    say(f"event log {ready['db']}")
    lobby = ready["http_url"]
    say(f"lobby {lobby} (play in a browser while the bots do), monitor {lobby}monitor, replays {lobby}replays")
    try:
        length = f"a {seconds} s" if settings else "a whole"
        say(f"{bots} bots playing {length} {rules.name} match (QUIC handshake, then the fast path) ...")
        # Through the lobby, as every player of a server with --http-port: a connect token each.
        report = await run_swarm(ready["host"], ready["port"], bots, stay_s, cafile=ready["cert"], tokens_url=lobby)
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
        try:
            async with asyncio.timeout(20):
                status = await proc.wait()
        except TimeoutError:
            proc.kill()
            status = await proc.wait()
    say(
        f"bots: {report['connected']}/{bots} connected, {report['deltas_per_s_per_bot']} deltas/s and "
        f"{report['bytes_down_per_s_per_bot']:.0f} B/s down per bot, {report['fastpath_share']:.0%} of "
        f"datagrams by the fast path, {report['errors']} errors"
    )
    say(f"server stopped with SIGTERM, exit status {status} (its log: {log_path})")
    if not report["match_ids"]:
        raise DemoError(f"no bot joined a match: {report['error_reasons']}")
    match_id = report["match_ids"][0]

    async with await LogReader.open(ready["db"]) as reader:
        verification = await verify_match(reader, match_id)
        _, summary = await reader.match(match_id)
        replay = await Replay.from_log(reader, match_id)
    stats = summary.stats
    say(
        f"match {match_id}: {summary.status} after {verification.ticks} ticks; replay "
        + ("verified every state hash" if verification.verified else f"FAILED: {verification.reason}")
    )
    replay_file = html_file = None
    if verification.verified:
        folder = data_dir / "replays"
        await asyncio.to_thread(folder.mkdir, exist_ok=True)
        replay_file, html_file = folder / f"{match_id}.tlr", folder / f"{match_id}.html"
        size = await write_replay(replay, replay_file)
        page = await asyncio.to_thread(render_html, replay)
        await asyncio.to_thread(html_file.write_text, page, encoding="utf-8")
        say(f"replay file {replay_file} ({size} bytes); open {html_file} in a browser to watch the match")
    result = {
        "match_id": match_id,
        "ticks": verification.ticks,
        "tick_rate": summary.tick_rate,
        "bots": bots,
        "connected": report["connected"],
        "inputs_applied": stats.get("inputs_applied", 0),
        "bytes_down_per_client_per_s": report["bytes_down_per_s_per_bot"],
        "deltas_per_client_per_s": report["deltas_per_s_per_bot"],
        "fastpath_share": report["fastpath_share"],
        "native": ready.get("native"),  # the server's modules that ran native code
        "tick_late_ms_p99": stats.get("tick_late_ms", {}).get("p99"),
        "tick_work_ms_p99": stats.get("tick_work_ms", {}).get("p99"),
        "server_exit_status": status,
        "lobby": lobby,
        "replay_verified": verification.verified,
        "replay_file": str(replay_file) if replay_file else None,
        "replay_html": str(html_file) if html_file else None,
        "final_state_hash": verification.final_state_hash,
    }
    print(orjson.dumps(result).decode(), flush=True)
    return 0 if verification.verified and status == 0 and report["connected"] == bots else 1
