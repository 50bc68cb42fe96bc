"""Which of tickline's modules run as native code, chosen once at import.

A module with a native twin (Cython, built by ``pip install`` where a compiler is found)
comes in two: ``_NAME_c`` (native) and ``_NAME_py`` (pure Python), with the same behaviour;
the public module asks :func:`load` for one. ``TICKLINE_NO_EXTENSIONS=1`` forces the pure
twins everywhere; ``TICKLINE_REQUIRE_EXTENSIONS=1`` makes a missing native module an import
error instead of a quiet fall back (the install fails then too). :func:`report` says what
was chosen, for the demo's JSON line, ``/metrics`` and every benchmark, so that a silent
fall back shows.
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType

NO_EXTENSIONS = os.environ.get("TICKLINE_NO_EXTENSIONS", "") not in ("", "0")
REQUIRE_EXTENSIONS = os.environ.get("TICKLINE_REQUIRE_EXTENSIONS", "") not in ("", "0")

# This package's modules that choose a twin at import (the choice is made by importing them;
# the server's own, such as server/fastpath.py, report once the server has imported them).
TWINNED = ("tickline.shared.delta", "tickline.shared.fastpath")
_chosen: dict[str, bool] = {}  # module -> native


def load(package: str, name: str) -> ModuleType:
    """``package._NAME_c`` unless forbidden or not built, else ``package._NAME_py``."""
    if NO_EXTENSIONS and REQUIRE_EXTENSIONS:
        raise ImportError("TICKLINE_NO_EXTENSIONS and TICKLINE_REQUIRE_EXTENSIONS are both set; unset one")
    if not NO_EXTENSIONS:
        try:
            module = importlib.import_module(f"{package}._{name}_c")
        except ImportError as exc:
            if REQUIRE_EXTENSIONS:
                raise ImportError(
                    f"the native {name} module is not built ({exc}); reinstall with a C compiler "
                    "(pip install -e .), or unset TICKLINE_REQUIRE_EXTENSIONS to run on the pure-Python twin"
                ) from exc
        else:
            _chosen[name] = True
            return module
    _chosen[name] = False
    return importlib.import_module(f"{package}._{name}_py")


def twins(package: str, name: str) -> dict[str, ModuleType]:
    """Both implementations that are importable, by kind ("native", "pure"): for tests and
    benchmarks that compare them."""
    out = {}
    for kind, suffix in (("native", "c"), ("pure", "py")):
        try:
            out[kind] = importlib.import_module(f"{package}._{name}_{suffix}")
        except ImportError:
            if kind == "pure" or REQUIRE_EXTENSIONS:
                raise
    return out


def report() -> dict[str, bool]:
    """Each module with a twin, and whether its native code is in use."""
    for module in TWINNED:
        importlib.import_module(module)
    return dict(sorted(_chosen.items()))


def native() -> bool:
    """Whether every module with a twin runs native code."""
    return all(report().values())
