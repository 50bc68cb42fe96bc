"""`tickline new game`, as a user would use it: scaffold a game, install it into a new
virtualenv with pip, serve it, load-test it with its bot, verify its log, run its tests."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import sysconfig
from pathlib import Path

import orjson
import pytest

from tests.support import run, tickline


def _venv_with_tickline(where: Path) -> Path:
    """A new virtualenv that sees this one's packages (tickline and its dependencies), as a
    user's project venv with tickline installed would; its python."""
    subprocess.run([sys.executable, "-m", "venv", str(where)], check=True, timeout=120)
    python = where / "bin" / "python"
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    ours = sysconfig.get_paths()["purelib"]
    (Path(site) / "tickline-under-test.pth").write_text(f"import site; site.addsitedir({ours!r})\n")
    return python


@pytest.mark.slow
async def test_a_scaffolded_game_installs_serves_load_tests_and_verifies(tmp_path: Path) -> None:
    game = tmp_path / "coinrush"
    code, out, err = await tickline("new", "game", "coinrush", str(game))
    assert code == 0, err
    assert {Path(line).relative_to(game).as_posix() for line in out.splitlines()} == {
        "pyproject.toml",
        "README.md",
        "coinrush/__init__.py",
        "coinrush/rules.py",
        "coinrush/bot.py",
        "tests/test_coinrush.py",
    }
    python = await asyncio.to_thread(_venv_with_tickline, tmp_path / "venv")
    code, out, err = await run(str(python), "-m", "pip", "install", "--quiet", "--no-deps", "-e", str(game))
    assert code == 0, err
    code, out, err = await run(str(python), "-m", "tickline", "game", "list")
    listed = {line["game"]: line for line in map(orjson.loads, out.splitlines())}
    assert listed["coinrush"]["rules"] == "coinrush.rules:Coinrush" and listed["coinrush"]["behaviours"] == ["walker"]

    data = tmp_path / "data"
    server = await asyncio.create_subprocess_exec(
        str(python),
        "-m",
        "tickline",
        "serve",
        "--port",
        "0",
        "--data-dir",
        str(data),
        "--game",
        "coinrush",
        "--set",
        "time_limit_s=3",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert server.stdout is not None and server.stderr is not None
    line = await asyncio.wait_for(server.stdout.readline(), 30)
    assert line, (await server.stderr.read()).decode()
    ready = orjson.loads(line)
    try:
        code, out, err = await run(
            str(python),
            "-m",
            "tickline",
            "bots",
            "--server",
            f"127.0.0.1:{ready['port']}",
            "--n",
            "3",
            "--duration",
            "20",
            "--behaviour",
            "walker=2,random=1",
            "--quiet",
            "--cafile",
            ready["cert"],
        )
    finally:
        server.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(server.wait(), 15) == 0
    report = orjson.loads(out.splitlines()[-1])
    assert code == 0 and report["connected"] == 3 and report["errors"] == 0, err
    assert report["closed_by_server"] == {"match over": 3} and report["behaviours"] == {"walker": 2, "random": 1}
    [match_id] = report["match_ids"]
    code, out, err = await run(str(python), "-m", "tickline", "replay", "verify", match_id, "--data-dir", str(data))
    assert code == 0 and orjson.loads(out.splitlines()[-1])["verified"] is True, err
    # The scaffold's own tests pass in the user's venv.
    code, out, err = await run(str(python), "-m", "pytest", "-q", "-p", "no:cacheprovider", cwd=game, timeout=300)
    assert code == 0 and "3 passed" in out, out + err


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["2fast"], "must be a Python package name"),
        (["class"], "must be a Python package name"),
    ],
)
async def test_a_bad_game_name_is_one_line_and_exit_2(args: list[str], words: str) -> None:
    code, _out, err = await tickline("new", "game", *args)
    assert code == 2 and len(err.strip().splitlines()) == 1 and words in err


async def test_scaffolding_into_a_folder_in_use_is_refused(tmp_path: Path) -> None:
    (tmp_path / "keep.txt").write_text("mine")
    code, _out, err = await tickline("new", "game", "coinrush", str(tmp_path))
    assert code == 2 and "already exists and is not an empty folder" in err
    assert [p.name for p in tmp_path.iterdir()] == ["keep.txt"]
