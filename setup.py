"""Builds tickline's native modules (Cython) beside their pure-Python twins (shared/native.py).

Everything else about the package is in pyproject.toml. ``TICKLINE_NO_EXTENSIONS=1`` builds
none; ``TICKLINE_REQUIRE_EXTENSIONS=1`` makes a failed build fail the install. Otherwise a
machine without a C compiler still installs, and runs on the twins.
"""

import os
import shutil
from pathlib import Path

from setuptools import Extension, setup

# (module, source, C libraries it links): each has a pure-Python twin, ``_NAME_py.py``, beside
# it. ``_seal_c`` needs OpenSSL's headers (Debian: libssl-dev); without them it is not built.
NATIVE = [
    ("tickline.shared._delta_c", "shared/_delta_c.pyx", []),
    ("tickline.shared._seal_c", "shared/_seal_c.pyx", ["crypto"]),
    ("tickline.server._intake_c", "server/_intake_c.pyx", []),
    ("tickline.server._link_c", "server/_link_c.pyx", []),
    ("tickline.server._udpbatch_c", "server/_udpbatch_c.pyx", []),
]


def _flag(name: str) -> bool:
    return os.environ.get(name, "") not in ("", "0")


def _include_tree() -> str:
    """A folder where the modules' .pxd files sit under their import names (tickline/...), as
    ``cimport`` looks them up: the repository's folders are the package, under another name."""
    root = Path(__file__).resolve().parent
    tree = root / "build" / "cython-include"
    for _, source, _ in NATIVE:
        pxd = (root / source).with_suffix(".pxd")
        if pxd.exists():
            into = tree / "tickline" / Path(source).parent
            into.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(pxd, into / pxd.name)
            for package in (tree / "tickline", into):
                (package / "__init__.pxd").touch()
    return str(tree)


def extensions() -> list[Extension]:
    if _flag("TICKLINE_NO_EXTENSIONS"):
        return []
    require = _flag("TICKLINE_REQUIRE_EXTENSIONS")
    try:
        from Cython.Build import cythonize
    except ImportError:
        if require:
            raise
        return []
    built = cythonize(
        [Extension(name, [source], libraries=libraries) for name, source, libraries in NATIVE],
        language_level=3,
        include_path=[_include_tree()],
        quiet=True,
    )
    for extension in built:
        extension.optional = not require  # (cythonize drops what the Extension was given)
    return built


setup(ext_modules=extensions())
