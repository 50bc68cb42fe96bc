"""Every game through the same commands: `serve --game`, `bots`, `replay verify`, with the
built-in games found by name, a game given as package.module:Class, and versioned rules."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.support import serve, tickline
from tickline.bots.swarm import run_swarm


async def _serve_play_stop(data_dir: Path, serve_args: list[str], bots_args: list[str]) -> dict[str, Any]:
    """Serve a game, let bots play a whole match with the `bots` command, stop the server;
    the bots' JSON report."""
    proc, ready = await serve(data_dir, *serve_args)
    try:
        code, out, err = await tickline(
            "bots", "--server", f"127.0.0.1:{ready['port']}", "--cafile", ready["cert"], "--quiet", *bots_args
        )
        assert code == 0, err
    finally:
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 15) == 0
    report: dict[str, Any] = orjson.loads(out.splitlines()[-1])
    return report


@pytest.mark.slow
async def test_goofspiel_serves_load_tests_and_verifies_through_the_same_commands(tmp_path: Path) -> None:
    report = await _serve_play_stop(
        tmp_path,
        ["--game", "goofspiel", "--set", "cards=4", "--set", "round_ms=500"],
        ["--n", "4", "--duration", "20", "--behaviour", "bidder=1,random=1"],
    )
    assert report["connected"] == 4 and report["errors"] == 0, report
    assert report["closed_by_server"] == {"match over": 4}  # four rounds, then over
    assert report["behaviours"] == {"bidder": 2, "random": 2}
    code, out, err = await tickline("replay", "list", "--data-dir", str(tmp_path))
    [listed] = [orjson.loads(line) for line in out.splitlines()]
    assert listed["game"] == "goofspiel/1" and listed["tick_rate"] == 10 and listed["status"] == "finished"
    code, out, err = await tickline("replay", "verify", listed["match_id"], "--data-dir", str(tmp_path))
    assert code == 0 and orjson.loads(out.splitlines()[-1])["verified"] is True, err


@pytest.mark.slow
async def test_a_game_given_by_module_plays_and_a_log_of_an_uninstalled_game_says_what_it_needs(
    tmp_path: Path,
) -> None:
    report = await _serve_play_stop(
        tmp_path,
        ["--game", "tests.games:Tally", "--set", "ticks=30"],
        ["--n", "2", "--duration", "10", "--behaviour", "random", "--game", "tests.games:Tally"],
    )
    assert report["connected"] == 2 and report["errors"] == 0 and report["closed_by_server"] == {"match over": 2}
    code, out, err = await tickline("replay", "list", "--data-dir", str(tmp_path))
    match_id = orjson.loads(out.splitlines()[0])["match_id"]
    # Without the game: one line, exit 1, what it needs and how to get it; not "not verified".
    code, out, err = await tickline("replay", "verify", match_id, "--data-dir", str(tmp_path))
    assert code == 1 and len(err.strip().splitlines()) == 1 and not out, err
    assert "needs game 'tally' at rules version 1, which is not installed here" in err
    assert "--game package.module:Class" in err and "not verified" not in err
    code, out, err = await tickline(
        "replay", "verify", match_id, "--data-dir", str(tmp_path), "--game", "tests.games:Tally"
    )
    assert code == 0 and orjson.loads(out.splitlines()[-1])["verified"] is True, err


async def test_an_unknown_game_lists_the_installed_ones_and_exits_2(tmp_path: Path) -> None:
    code, _out, err = await tickline("serve", "--port", "0", "--data-dir", str(tmp_path), "--game", "chess")
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "unknown game 'chess'; installed games: arena, goofspiel" in err


@pytest.mark.slow
async def test_a_match_recorded_under_arena_v1_replays_under_v1_and_v2_shows_where_it_changes(
    start_server, tmp_path: Path
) -> None:
    srv = await start_server(game_config={"time_limit_s": 3})
    report = await run_swarm("127.0.0.1", srv.port, 4, duration=15, cafile=srv.cert)
    await srv.stop()
    [match_id] = report["match_ids"]
    db = ["--db", srv.db_url]
    v2 = ["--game", "tests.games:ArenaV2"]
    # Version 2 is installed (as arena's newest); the match names version 1, which it keeps.
    code, out, err = await tickline("replay", "verify", match_id, *db, *v2)
    first = orjson.loads(out.splitlines()[-1])
    assert code == 0 and first["verified"] is True and first["rules_version"] == 1, err
    # Under version 2 the same inputs make another match: the first tick where a shot hits.
    code, out, err = await tickline("replay", "verify", match_id, *db, *v2, "--rules", "2")
    second = orjson.loads(out.splitlines()[-1])
    assert code == 1 and second["verified"] is False and second["rules_version"] == 2
    assert 1 < second["first_bad_tick"] <= first["ticks"]
    assert f"under arena rules version 2 (recorded under 1), tick {second['first_bad_tick']} differs" in err
    code, out, err = await tickline("replay", "verify", match_id, *db, "--rules", "2")
    assert code == 1 and "installed with rules versions 1 only" in err and len(err.strip().splitlines()) == 1
