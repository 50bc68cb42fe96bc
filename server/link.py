"""A client's link on the hot path: its input datagrams on their way in (with the
acknowledgement each carries), and its deltas on their way out.

Every input datagram goes to :meth:`Link.deliver`: counted, handed to the session's input
queue (``server/intake.py``: budget, read, queue), and its ack read against the views sent,
which chooses the next delta's baseline. Every view the match sends goes to
:meth:`Link.send_view`: a delta against the newest view the client acknowledged, its diff
shared with every client of the tick with the same view and baseline, packed, then sealed
and queued on the fast path, or sent as a datagram. What is not routine (a refused or
malformed datagram, a client that stopped acknowledging, a delta too big for a datagram)
goes back to the session (:class:`LinkOwner`), which decides. A link also holds what the
server refused of its client since the match last looked (``refused``, by reason), so that
the match's take of every player's input each tick (``take_inputs``) reads links alone.

This is the per-player work of every datagram in and out, so it has a native twin
(``_link_c.pyx``) beside the pure one (``_link_py.py``), with the same behaviour;
``server/session.py`` takes one through ``shared/native.py``. This module holds what both
read.
"""

from __future__ import annotations

from typing import Any, Protocol

# Baselines kept per client: a delta can be against any of the last 64 sent views
# (about two seconds at 30 Hz, so that a stall does not force full snapshots). Those
# older than the newest acknowledged are let go as soon as it is: acks only rise.
BASELINE_RING = 64
# A client that acknowledges none of the views sent for this long is closed (it sends,
# so it is there, but whatever queues up for it in the transport is wasted).
ACK_TIMEOUT_S = 15.0


class LinkOwner(Protocol):
    """What a link leaves to its session: the exceptions to the routine."""

    def fail(self, reason: str) -> None:
        """A datagram the client should not have sent (malformed, or an invalid input)."""

    def input_refused(self, reason: str) -> None:
        """A datagram the input budget refused (``reason``: which limit)."""

    def inputs_overflowed(self, dropped: int) -> None:
        """Inputs that did not fit in the queue."""

    def acks_stopped(self) -> None:
        """The client has acknowledged none of the views sent for the ack timeout."""

    def send_oversized(self, tick: int, view: dict[str, Any], body: bytes) -> None:
        """A delta too big for a datagram (``send_views`` returns them, with their links): the
        session sends it on the control stream."""
