"""The `tickline` command as a user runs it: real processes, signals, exit codes, one-line errors."""

from __future__ import annotations

import asyncio
import signal
import sqlite3
from pathlib import Path

import orjson
import pytest

from tests.support import serve, tickline, wait_for_tick
from tickline.bots.swarm import run_swarm
from tickline.shared import native


@pytest.mark.slow
async def test_serve_plays_then_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    proc, ready = await serve(tmp_path, "--set", "time_limit_s=60", "--http-port", "0")
    assert ready["event"] == "ready" and ready["port"] > 0
    assert Path(ready["cert"]).exists()
    # With the HTTP side on, players need the lobby's connect tokens by default.
    assert ready["require_tokens"] is True and ready["http_url"] == f"http://127.0.0.1:{ready['metrics_port']}/"
    bots = asyncio.create_task(
        run_swarm("127.0.0.1", ready["port"], 3, duration=20, cafile=ready["cert"], tokens_url=ready["http_url"])
    )
    await wait_for_tick(ready["metrics_port"], 90)  # a match with its players in, well under way
    proc.send_signal(signal.SIGTERM)
    report = await asyncio.wait_for(bots, 15)
    status = await asyncio.wait_for(proc.wait(), 15)
    assert proc.stderr is not None
    stderr = (await proc.stderr.read()).decode()
    assert status == 0, stderr
    assert report["closed_by_server"] == {"server shutting down": 3}
    assert "Traceback" not in stderr

    code, out, err = await tickline("replay", "list", "--data-dir", str(tmp_path))
    [listed] = [orjson.loads(line) for line in out.splitlines()]
    assert code == 0 and listed["status"] == "stopped" and listed["ticks"] >= 90, err
    code, out, _err = await tickline("replay", "verify", listed["match_id"][:8], "--data-dir", str(tmp_path))
    result = orjson.loads(out.splitlines()[-1])
    assert code == 0 and result["verified"] is True and result["ticks"] == listed["ticks"]
    # The server said which modules ran native code; the match verifies on the other kind too.
    assert ready["native"] == native.report()
    other = {"TICKLINE_NO_EXTENSIONS": "1", "TICKLINE_REQUIRE_EXTENSIONS": ""} if native.native() else {}
    code, out, _err = await tickline("replay", "verify", listed["match_id"], "--data-dir", str(tmp_path), env=other)
    assert code == 0 and orjson.loads(out.splitlines()[-1])["verified"] is True


@pytest.mark.slow
@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
async def test_serve_runs_on_the_event_loop_asked_for_and_bots_use_its_fast_path(tmp_path: Path, loop: str) -> None:
    pytest.importorskip(loop)
    proc, ready = await serve(tmp_path, "--set", "time_limit_s=2", loop=loop)
    try:
        assert ready["loop"] == loop and ready["fastpath"] is True
        report = await run_swarm("127.0.0.1", ready["port"], 2, duration=10, cafile=ready["cert"])
        assert report["closed_by_server"] == {"match over": 2}
        assert report["fastpath_share"] > 0.9
    finally:
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 15) == 0


@pytest.mark.slow
async def test_replay_verify_exits_nonzero_and_names_the_first_bad_tick(tmp_path: Path) -> None:
    code, out, err = await tickline("demo", "--bots", "2", "--seconds", "2", "--data-dir", str(tmp_path))
    assert code == 0, err
    match_id = orjson.loads(out.splitlines()[-1])["match_id"]
    with sqlite3.connect(tmp_path / "tickline.db") as conn:
        conn.execute("UPDATE ticks SET hash = 'bad' WHERE tick = 42")
    code, out, err = await tickline("replay", "verify", match_id, "--data-dir", str(tmp_path))
    result = orjson.loads(out.splitlines()[-1])
    assert code == 1
    assert result["verified"] is False and result["first_bad_tick"] == 42
    assert "tick 42" in err


@pytest.mark.slow
async def test_demo_ends_with_a_verified_json_line(tmp_path: Path) -> None:
    code, out, err = await tickline("demo", "--bots", "4", "--seconds", "3", "--data-dir", str(tmp_path))
    assert code == 0, err
    result = orjson.loads(out.splitlines()[-1])
    for key in (
        "match_id",
        "ticks",
        "tick_rate",
        "bots",
        "inputs_applied",
        "bytes_down_per_client_per_s",
        "tick_late_ms_p99",
        "replay_verified",
        "final_state_hash",
    ):
        assert key in result
    assert result["replay_verified"] is True
    assert result["ticks"] == 180 and result["bots"] == 4 and result["inputs_applied"] > 0
    assert len(out.splitlines()) > 1  # a human summary comes first


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["serve", "--send-rate", "7"], "--send-rate 7 must divide --tick-rate 60"),
        (["serve", "--set", "nope=1"], "unknown arena config key 'nope'"),
        (["serve", "--set", "time_limit_s=soon"], "must be int"),
        (["serve", "--game", "chess"], "unknown game 'chess'"),
        (["serve", "--port", "http"], "invalid int value"),
        (["serve", "--cert", "x.pem"], "--cert and --key go together"),
        (["bots", "--server", "localhost"], "HOST:PORT"),
        (["bots"], "--server"),
        (["bots", "--server", "127.0.0.1:4433", "--input-ticks", "9"], "--input-ticks must be 1 to 8"),
        (["frobnicate"], "invalid choice"),
        (["capacity", "--tolerance", "2"], "--tolerance must be between 0 and 1"),
        (["serve", "--set", "tick_rate=10"], "set it with --tick-rate, not --set tick_rate"),
        (["capacity", "--send-rate", "7"], "the send rate dividing the tick rate"),
        (["replay", "list", "--db", "sqlite:///x.db"], "--db sqlite://... is not a database tickline can log to"),
    ],
)
async def test_bad_arguments_give_one_line_and_exit_2(args: list[str], words: str) -> None:
    code, _out, err = await tickline(*args)
    assert code == 2
    assert len(err.strip().splitlines()) == 1, err
    assert words in err


async def test_unreachable_database_is_one_line_and_exit_1(tmp_path: Path) -> None:
    code, _out, err = await tickline(
        "serve",
        "--port",
        "0",
        "--data-dir",
        str(tmp_path / "data"),
        "--db",
        f"sqlite+aiosqlite:///{tmp_path}/no/such/dir/x.db",
    )
    assert code == 1
    assert len(err.strip().splitlines()) == 1 and "cannot open the event log" in err and "does not exist" in err


@pytest.mark.slow
async def test_ports_and_data_folders_in_use_are_one_line_naming_the_flag_and_exit_1(tmp_path: Path) -> None:
    proc, ready = await serve(tmp_path / "a", "--metrics-port", "0")
    try:
        taken = [
            ("--port", ["--port", str(ready["port"]), "--data-dir", str(tmp_path / "b")]),
            (
                "--http-port",
                ["--port", "0", "--http-port", str(ready["metrics_port"]), "--data-dir", str(tmp_path / "c")],
            ),
        ]
        for flag, args in taken:
            code, _, err = await tickline("serve", *args)
            assert code == 1 and len(err.strip().splitlines()) == 1, err
            assert f"{flag} " in err and "already in use" in err and f"pick another {flag}" in err
        # The same data folder (and so the same server id) while the first server holds it.
        code, _out, err = await tickline("serve", "--port", "0", "--data-dir", str(tmp_path / "a"))
        assert code == 1 and len(err.strip().splitlines()) == 1, err
        assert f"pid {proc.pid}" in err and ready["server_id"] in err and "--data-dir" in err
    finally:
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 15) == 0
    # Once it has stopped, the folder is free again.
    again, ready = await serve(tmp_path / "a")
    again.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(again.wait(), 15) == 0


def _garbage(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


@pytest.mark.parametrize(
    ("case", "words"),
    [
        ("garbage certificate in the data folder", "tls/cert.pem is not a PEM certificate"),
        ("--cert naming a missing file", "--cert {tmp}/missing.pem: no such file"),
        ("--cert naming garbage", "cannot load the TLS certificate and key"),
        ("--data-dir that is a file", "is a file, not a folder"),
        ("a binary server-id file", "server-id does not hold a server id"),
        ("--host that does not resolve", "--host no-such-host.invalid does not resolve"),
        ("--host of another machine", "--host 192.0.2.1 is not an address of this machine"),
        ("--http-host of another machine", "--http-host 192.0.2.1 is not an address of this machine"),
        ("--lobby-rate of zero", "--lobby-rate 0 is out of range"),
        ("--idle-timeout under a second", "--idle-timeout 0.5 is out of range; use 1 to 600 seconds"),
        ("--matches-per-tick of zero", "--matches-per-tick 0 is out of range; use 1 to 1000"),
        (
            "--db of an unsupported database",
            "--db mysql://... is not a database tickline can log to; use sqlite+aiosqlite",
        ),
    ],
)
async def test_bad_configuration_is_one_line_and_exit_2(tmp_path: Path, case: str, words: str) -> None:
    data = tmp_path / "data"
    args = {
        "garbage certificate in the data folder": ["--data-dir", str(data)],
        "--cert naming a missing file": [
            "--data-dir",
            str(data),
            "--cert",
            str(tmp_path / "missing.pem"),
            "--key",
            str(tmp_path / "missing.key"),
        ],
        "--cert naming garbage": [
            "--data-dir",
            str(data),
            "--cert",
            str(_garbage(tmp_path / "c.pem", b"no")),
            "--key",
            str(_garbage(tmp_path / "k.pem", b"no")),
        ],
        "--data-dir that is a file": ["--data-dir", str(_garbage(tmp_path / "file", b""))],
        "a binary server-id file": ["--data-dir", str(data)],
        "--host that does not resolve": ["--data-dir", str(data), "--host", "no-such-host.invalid"],
        "--host of another machine": ["--data-dir", str(data), "--host", "192.0.2.1"],  # TEST-NET-1
        "--http-host of another machine": ["--data-dir", str(data), "--http-port", "0", "--http-host", "192.0.2.1"],
        "--lobby-rate of zero": ["--data-dir", str(data), "--lobby-rate", "0"],
        "--idle-timeout under a second": ["--data-dir", str(data), "--idle-timeout", "0.5"],
        "--matches-per-tick of zero": ["--data-dir", str(data), "--matches-per-tick", "0"],
        "--db of an unsupported database": ["--data-dir", str(data), "--db", "mysql://user@db.example/tl"],
    }[case]
    if case == "garbage certificate in the data folder":
        _garbage(data / "tls" / "cert.pem", b"-----BEGIN CERTIFICATE-----\ngarbage\n")
        _garbage(data / "tls" / "key.pem", b"garbage")
    if case == "a binary server-id file":
        _garbage(data / "server-id", bytes(range(200, 256)))
    code, _out, err = await tickline("serve", "--port", "0", *args)
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1, err
    assert words.format(tmp=tmp_path) in err


@pytest.mark.parametrize(
    "url", ["postgresql+asyncpg://tickline@127.0.0.1:1/log", "postgresql+asyncpg://tickline@no-such-host.invalid/log"]
)
@pytest.mark.parametrize("command", [["replay", "list"], ["replay", "verify", "abc"]])
async def test_replay_on_an_unreachable_postgresql_is_one_line_and_exit_1(command: list[str], url: str) -> None:
    code, _out, err = await tickline(*command, "--db", url)
    assert code == 1 and len(err.strip().splitlines()) == 1, err
    assert "cannot read an event log at postgresql+asyncpg://tickline@" in err


async def test_replay_of_an_unsupported_database_is_one_line_and_exit_2() -> None:
    code, _out, err = await tickline("replay", "list", "--db", "mysql://user@db.example/tl")
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "postgresql+asyncpg://" in err


async def test_replay_on_a_missing_log_says_what_to_do(tmp_path: Path) -> None:
    code, _out, err = await tickline("replay", "list", "--data-dir", str(tmp_path))
    assert code == 1 and "tickline demo" in err and len(err.strip().splitlines()) == 1


@pytest.mark.slow
async def test_every_subcommand_has_help() -> None:
    for args in (
        ["--help"],
        ["serve", "--help"],
        ["bots", "--help"],
        ["replay", "--help"],
        ["replay", "verify", "--help"],
        ["replay", "list", "--help"],
        ["demo", "--help"],
        ["capacity", "--help"],
        ["db", "upgrade", "--help"],
        ["play", "--help"],
        ["new", "game", "--help"],
        ["game", "list", "--help"],
        ["game", "doc", "--help"],
        ["types", "--help"],
        ["spectate", "--help"],
        *(["replay", command, "--help"] for command in ("info", "export", "import", "render", "clip")),
    ):
        code, out, _err = await tickline(*args)
        assert code == 0 and "usage: tickline" in out
