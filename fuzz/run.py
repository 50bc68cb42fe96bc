"""Coverage-guided fuzzing of fuzz/targets.py with atheris (libFuzzer for Python).

    .venv/bin/python -m fuzz.run TARGET [--seconds S]    # one target, growing fuzz/corpus/TARGET
    .venv/bin/python -m fuzz.run --all --seconds S       # every target, one process each
    .venv/bin/python -m fuzz.run --seeds                 # (re)write the seed inputs of every corpus

The corpus of each target lives in fuzz/corpus/TARGET/ and is kept in the repository:
seeds made by the product's own encoders (fuzz/seeds.py), plus whatever the fuzzer found
that reached new code. A crash is written to fuzz/crashes/ (libFuzzer's crash-* file);
it becomes a regression test by moving it into the target's corpus once fixed, since
tests/test_fuzz.py replays every corpus file through its target. Each run's last line on
stdout is JSON: the target, the runs, the seconds, ``execs_per_s`` and ``crashed``.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent
CORPUS = ROOT / "corpus"
CRASHES = ROOT / "crashes"


def fuzz_one(target: str, seconds: float, corpus_root: Path = CORPUS, crashes: Path = CRASHES) -> None:
    """In this process: atheris on ``target`` for ``seconds``, new inputs into its corpus."""
    import atheris  # type: ignore[import-untyped]  # (no stubs)

    with atheris.instrument_imports(include=["tickline", "fuzz"]):
        from fuzz.targets import TARGETS
    logging.disable(logging.CRITICAL)  # a session logs each connection it closes
    corpus = corpus_root / target
    corpus.mkdir(parents=True, exist_ok=True)
    crashes.mkdir(parents=True, exist_ok=True)
    argv = [
        sys.argv[0],
        str(corpus),
        f"-max_total_time={max(1, int(seconds))}",
        "-max_len=4096",
        "-timeout=10",  # a single input taking 10 s is a hang
        "-rss_limit_mb=2048",
        f"-artifact_prefix={crashes}/{target}-",
        "-print_final_stats=1",
    ]
    atheris.Setup(argv, TARGETS[target])
    atheris.Fuzz()


def run(target: str, seconds: float, scratch: Path | None = None) -> dict[str, object]:
    """``target`` fuzzed in a child process for ``seconds``; what it did. With ``scratch``,
    on a copy of the corpus there (what it finds is not kept)."""
    began = time.monotonic()
    where = ["--scratch", str(scratch)] if scratch is not None else []
    if scratch is not None:
        shutil.copytree(CORPUS / target, scratch / "corpus" / target, dirs_exist_ok=True)
    done = subprocess.run(
        [sys.executable, "-m", "fuzz.run", "--child", target, "--seconds", str(seconds), *where],
        cwd=ROOT.parent,
        capture_output=True,
        text=True,
        timeout=seconds + 120,
    )
    elapsed = time.monotonic() - began
    runs = re.findall(r"stat::number_of_executed_units:\s*(\d+)", done.stderr)
    executed = int(runs[-1]) if runs else 0
    crashed = done.returncode != 0
    return {
        "target": target,
        "runs": executed,
        "seconds": round(elapsed, 1),
        "execs_per_s": round(executed / max(elapsed, 1e-9)),
        "crashed": crashed,
        "tail": done.stderr.strip().splitlines()[-12:] if crashed else [],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fuzz.run", description=__doc__.split("\n\n")[0])
    parser.add_argument("target", nargs="?", help="a target of fuzz/targets.py")
    parser.add_argument("--all", action="store_true", help="every target in turn")
    parser.add_argument("--seconds", type=float, default=60.0, help="seconds per target (default: 60)")
    parser.add_argument("--seeds", action="store_true", help="write the seed inputs of every corpus and stop")
    parser.add_argument("--scratch", type=Path, help="fuzz a copy of the corpus in this folder; keep nothing")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:  # before anything of tickline is imported: atheris instruments it as it loads
        if args.scratch is not None:
            fuzz_one(args.target, args.seconds, args.scratch / "corpus", args.scratch / "crashes")
        else:
            fuzz_one(args.target, args.seconds)
        return 0
    from fuzz.targets import TARGETS

    if args.seeds:
        from fuzz.seeds import write_seeds

        for target, count in write_seeds(CORPUS).items():
            print(json.dumps({"target": target, "seeds": count}))
        return 0
    targets = sorted(TARGETS) if args.all else [args.target]
    if not args.all and args.target not in TARGETS:
        parser.error(f"choose a target from {', '.join(sorted(TARGETS))}, or --all")
    failed = False
    for target in targets:
        result = run(target, args.seconds, args.scratch)
        failed |= bool(result["crashed"])
        print(json.dumps(result), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
