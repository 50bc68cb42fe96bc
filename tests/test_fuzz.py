"""The fuzz targets (fuzz/targets.py): every input of every kept corpus replays through its
target without a crash (the regression tests of whatever the fuzzer found), and a bounded
coverage-guided run of each target with atheris finds no crash."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from fuzz.targets import TARGETS

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "fuzz" / "corpus"


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_every_kept_input_replays_through_its_target(target: str) -> None:
    inputs = sorted((CORPUS / target).iterdir())
    assert inputs, f"fuzz/corpus/{target} is empty: python -m fuzz.run --seeds"
    for path in inputs:
        TARGETS[target](path.read_bytes())  # a crash raises, naming the file in the traceback


def test_the_seeds_are_what_the_encoders_make_today() -> None:
    from fuzz.seeds import seeds

    made = seeds()
    assert set(made) == set(TARGETS)
    for target, inputs in made.items():
        assert inputs, target
        for data in inputs:
            TARGETS[target](data)


@pytest.mark.slow
def test_a_bounded_coverage_guided_run_of_every_target_finds_no_crash(tmp_path: Path) -> None:
    pytest.importorskip("atheris")
    done = subprocess.run(
        [sys.executable, "-m", "fuzz.run", "--all", "--seconds", "3", "--scratch", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    results = [json.loads(line) for line in done.stdout.splitlines()]
    assert {r["target"] for r in results} == set(TARGETS), done.stderr[-2000:]
    for result in results:
        assert not result["crashed"], result
        assert result["runs"] > 100, result  # it ran, and fast enough to mean something
