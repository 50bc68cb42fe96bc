"""The games this installation can run, and the rules a stored match needs.

A game is a :class:`~tickline.shared.game.Rules` subclass, found one of two ways:

- by name, through the ``tickline.games`` entry-point group: a package that
  provides a game says so in its ``pyproject.toml``
  (``[project.entry-points."tickline.games"] mygame = "mygame.rules:MyGame"``);
  tickline's own games register the same way;
- by import path, ``package.module:Class``, which also registers the class under
  its name for the rest of the process (so that a header naming the game finds it).

Rules are versioned: a class's ``previous_versions`` keeps the older ones
importable, so a match replays under the version it was recorded with, and
:func:`game_class` with a ``version`` finds exactly that one or says plainly
that this installation lacks it.

Reading entry points reads installed packages' metadata: the one thing here
that touches a file, as importing a module does.
"""

from __future__ import annotations

import importlib
import os
import sys
from importlib.metadata import entry_points
from typing import Any

from tickline.shared.game import Rules

GROUP = "tickline.games"

_registered: dict[str, type[Rules]] = {}  # by register(): games given as package.module:Class


class UnknownGame(LookupError):
    """A command names a game this installation does not have; the message lists those it has."""


class GameNotInstalled(UnknownGame):
    """A stored match needs a game, or a version of one, that this installation does not have."""


def register(cls: type[Rules]) -> type[Rules]:
    """Make ``cls`` findable by its name in this process (ahead of an installed game of that name)."""
    _check(cls, f"{cls.__module__}:{cls.__qualname__}")
    _registered[cls.name] = cls
    return cls


def unregister(name: str) -> None:
    """Forget a game :func:`register` made known by name (an installed one of that name is found again)."""
    _registered.pop(name, None)


def names() -> list[str]:
    """Every game this installation can run by name, sorted."""
    return sorted({ep.name for ep in entry_points(group=GROUP)} | set(_registered))


def load(spec: str) -> type[Rules]:
    """The newest rules of the game ``spec``: an installed or registered name, or ``package.module:Class``."""
    if ":" in spec:
        return register(_check(_import(spec), spec))
    if spec in _registered:
        return _registered[spec]
    found = [ep for ep in entry_points(group=GROUP) if ep.name == spec]
    if not found:
        known = ", ".join(names()) or "none"
        raise UnknownGame(f"unknown game {spec!r}; installed games: {known} (or give package.module:Class)")
    cls = _check(found[0].load(), f"{found[0].value} (entry point {spec!r})")
    if cls.name != spec:  # a stored match names cls.name: the entry point must find it by that
        raise UnknownGame(f"entry point {spec!r} in {GROUP!r} gives rules named {cls.name!r}; the two must match")
    return cls


def versions(cls: type[Rules]) -> dict[int, type[Rules]]:
    """Every version of a game's rules this installation has: version -> class (each version's
    ``previous_versions`` followed, so a chain of versions needs to list only its predecessor)."""
    out: dict[int, type[Rules]] = {}
    waiting = [cls]
    while waiting:
        rules = waiting.pop()
        if rules.version not in out:
            out[rules.version] = rules
            waiting += rules.previous_versions
    return out


def _import(spec: str) -> Any:
    """The object ``package.module:Attr`` names. As ``python -m`` would, the current folder is
    also looked in (last), so a game in the folder one works in is found by the command too."""
    module_name, _, attr = spec.partition(":")
    try:
        try:
            obj: Any = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            here = os.getcwd()
            if exc.name != module_name.split(".")[0] or here in sys.path:
                raise
            sys.path.append(here)
            obj = importlib.import_module(module_name)
        for part in attr.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as exc:
        raise UnknownGame(f"cannot load game {spec!r}: {exc}") from None
    return obj


def game_class(name: str, version: int | None = None) -> type[Rules]:
    """The rules of game ``name``: the newest, or exactly ``version`` (a stored match's)."""
    if version is None:
        return load(name)
    try:
        cls = load(name)
    except UnknownGame:
        raise GameNotInstalled(_missing(name, version, "is not installed here")) from None
    found = versions(cls).get(version)
    if found is None:
        have = ", ".join(str(v) for v in sorted(versions(cls)))
        raise GameNotInstalled(_missing(name, version, f"is installed with rules versions {have} only"))
    return found


def make_rules(name: str, config: dict[str, Any] | None = None, version: int | None = None) -> Rules:
    """The rules of game ``name`` (at ``version``, when a stored match names one) bound to ``config``."""
    return game_class(name, version)(config)


def _missing(name: str, version: int, why: str) -> str:
    return (
        f"this match needs game {name!r} at rules version {version}, which {why}: install the package "
        f"that provides it (it registers {name!r} in the {GROUP!r} entry-point group), or name its rules "
        "with --game package.module:Class"
    )


def _check(obj: Any, where: str) -> type[Rules]:
    if not (isinstance(obj, type) and issubclass(obj, Rules)):
        raise UnknownGame(f"{where} is not a tickline Rules class")
    if not isinstance(getattr(obj, "name", None), str) or not isinstance(getattr(obj, "version", None), int):
        raise UnknownGame(f"{where} must set the class attributes name (a str) and version (an int)")
    return obj
