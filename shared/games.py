"""The registry of games this build knows, by name, and binding one to a stored header."""

from __future__ import annotations

from typing import Any

from tickline.shared.arena import Arena
from tickline.shared.game import Rules

GAMES: dict[str, type[Rules]] = {Arena.name: Arena}


class UnknownGame(LookupError):
    """A log or a command names a game, or a version of one, that this build cannot run."""


def game_class(name: str) -> type[Rules]:
    cls = GAMES.get(name)
    if cls is None:
        raise UnknownGame(f"unknown game {name!r}; this build knows {', '.join(sorted(GAMES))}")
    return cls


def make_rules(name: str, config: dict[str, Any] | None = None, version: int | None = None) -> Rules:
    """The rules of game ``name`` bound to ``config``.

    With ``version`` (from a stored match header), refuse plainly when this
    build's rules differ: replaying under other rules would give a wrong picture.
    """
    cls = game_class(name)
    if version is not None and version != cls.version:
        raise UnknownGame(
            f"the match was played under {name} rules version {version}, but this build has version {cls.version}"
        )
    return cls(config)
