"""Which asyncio event loop tickline's commands run on.

uvloop (the ``fast`` extra) where it is installed, else asyncio's own loop.
Measured on a 2-core machine (docs/design.md), uvloop makes plain
UDP, and so the fast path, about 3x cheaper per packet; aioquic gains less.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

LOOPS = ("auto", "uvloop", "asyncio")
T = TypeVar("T")


class LoopUnavailable(RuntimeError):
    pass


def loop_factory(choice: str = "auto") -> Callable[[], asyncio.AbstractEventLoop] | None:
    """A new-loop factory for ``choice`` (None: asyncio's default)."""
    if choice == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        if choice == "uvloop":
            raise LoopUnavailable(
                "--loop uvloop: uvloop is not installed; install tickline's 'fast' extra "
                "(pip install -e '.[fast]') or use --loop asyncio"
            ) from None
        return None
    return uvloop.new_event_loop


def loop_name(factory: Callable[[], asyncio.AbstractEventLoop] | None) -> str:
    return "asyncio" if factory is None else "uvloop"


def run(main: Coroutine[Any, Any, T], choice: str = "auto") -> T:
    """``asyncio.run`` on the chosen loop."""
    with asyncio.Runner(loop_factory=loop_factory(choice)) as runner:
        return runner.run(main)
