"""What installing tickline puts in site-packages: one import package, `tickline`, whole."""

from __future__ import annotations

import os
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
        env={**os.environ, "TICKLINE_REQUIRE_EXTENSIONS": "1", "TICKLINE_NO_EXTENSIONS": ""},  # built, or it fails
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
        "from tickline.shared import delta, native; print(native.report());"
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
    where, chosen, missing = ran.stdout.splitlines()
    assert Path(where).is_relative_to(target) and missing == "[]"
    # The native modules were built, and are in use (the server's once imported: it was).
    assert chosen == "{'delta': True, 'intake': True, 'link': True, 'seal': True, 'udpbatch': True}"
    for module in (
        "shared/_delta_c.",
        "shared/_seal_c.",
        "server/_intake_c.",
        "server/_link_c.",
        "server/_udpbatch_c.",
    ):
        assert any(f.startswith(f"tickline/{module}") and f.endswith(".so") for f in files), module


@pytest.mark.slow
@pytest.mark.parametrize("required", [False, True])
def test_without_a_compiler_the_build_falls_back_to_the_twins_unless_native_code_is_required(
    tmp_path: Path, required: bool
) -> None:
    env = {**os.environ, "CC": "false", "TICKLINE_NO_EXTENSIONS": ""}  # a compiler that always fails
    env["TICKLINE_REQUIRE_EXTENSIONS"] = "1" if required else ""
    lib = tmp_path / "lib"
    built = subprocess.run(
        [sys.executable, "setup.py", "--quiet", "build_ext", "--build-lib", str(lib), "--build-temp", str(tmp_path)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert not list(lib.rglob("*.so"))
    if required:
        assert built.returncode != 0
    else:
        assert built.returncode == 0, built.stderr
        assert "_delta_c" in built.stderr  # setuptools says which optional module it could not build
