"""What installing tickline puts in site-packages: one import package, `tickline`, whole."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_installing_tickline_adds_one_top_level_package_and_it_imports_whole(tmp_path: Path) -> None:
    target = tmp_path / "site"
    built = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(target), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert built.returncode == 0, built.stderr
    top = {p.name for p in target.iterdir()} - {"bin"}  # bin: the `tickline` script
    assert {name for name in top if not name.endswith(".dist-info")} == {"tickline"}
    assert [name for name in top if name.endswith(".dist-info")] == [
        next(name for name in top if name.startswith("tickline-"))
    ]
    files = {str(p.relative_to(target)) for p in (target / "tickline").rglob("*") if p.is_file()}
    for part in (
        "server/match.py",
        "server/migrations/script.py.mako",
        "shared/arena.py",
        "bots/client.py",
        "bots/capacity/search.py",
        "replays/verify.py",
        "replays/player.html",
        "replays/player.js",
        "web/tickline-client.js",
        "web/lobby.html",
        "web/play.html",
        "web/monitor.html",
        "cli.py",
        "py.typed",
    ):
        assert f"tickline/{part}" in files, part
    assert not any("transport_ceiling" in f or f.startswith("tickline/bench") for f in files)
    # From the installed copy alone (not the checkout): every part imports, and nothing
    # answers to the old top-level names.
    probe = (
        "import importlib, tickline, tickline.cli, tickline.server.app, tickline.bots.loadtest, tickline.replays.verify;"
        "print(tickline.__file__);"
        "missing = [n for n in ('server', 'shared', 'bots', 'replays') if importlib.util.find_spec(n) is not None];"
        "print(missing)"
    )
    ran = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=tmp_path,
        env={"PYTHONPATH": str(target)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert ran.returncode == 0, ran.stderr
    where, missing = ran.stdout.splitlines()
    assert Path(where).is_relative_to(target) and missing == "[]"
