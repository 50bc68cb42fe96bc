"""Token buckets, sans-I/O: the caller passes ``now``.

``KeyedBuckets`` are keyed by who asks (a source address): the lobby's ``POST /lobby/token``
and the QUIC gate's connection budget. One address may burst, then is held to a steady rate
and told how long to wait. The table of buckets is bounded, so a sender cycling through
addresses costs a fixed amount of memory: when it is full, the bucket that was refilled
longest ago goes first (a full bucket carries no state worth keeping).

``InputLimits`` is what one client may send as datagrams (inputs and acks): messages and bytes
a second, with a burst that lets a lag spike's backlog through. Its buckets, ``InputBudget``,
are part of every datagram's intake, so they live with the input queue in ``server/intake.py``
(native where built).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass


class KeyedBuckets:
    """``rate`` per second per key, up to ``burst`` at once, for at most ``max_keys`` keys."""

    def __init__(self, rate: float, burst: float, max_keys: int = 65536) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("a rate limit needs a positive rate and a burst of at least 1")
        self.rate, self.burst, self.max_keys = rate, burst, max_keys
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # key -> (level, when)

    def take(self, key: str, now: float, cost: float = 1.0) -> float:
        """Spend ``cost`` from ``key``'s bucket at ``now``: 0.0 when allowed, else the seconds
        until it would be (nothing is spent then)."""
        level, when = self._buckets.pop(key, (self.burst, now))
        level = min(self.burst, level + max(0.0, now - when) * self.rate)
        wait = 0.0
        if level >= cost:
            level -= cost
        else:
            wait = (cost - level) / self.rate
        self._buckets[key] = (level, now)  # most recently used last
        while len(self._buckets) > self.max_keys:
            self._buckets.popitem(last=False)
        return wait

    def level(self, key: str, now: float) -> float:
        """What ``key``'s bucket holds at ``now``, spending nothing."""
        level, when = self._buckets.get(key, (self.burst, now))
        return min(self.burst, level + max(0.0, now - when) * self.rate)

    def __len__(self) -> int:
        return len(self._buckets)


@dataclass(frozen=True, slots=True)
class InputLimits:
    """What one client may send as datagrams; each field is a ``tickline serve`` flag.

    The defaults are four datagrams a tick at 60 Hz, and about ten times the bytes that a
    client of the bundled games sends, so that only a client built to flood meets them."""

    messages_per_s: float = 240.0
    bytes_per_s: float = 64 * 1024
    burst_s: float = 2.0  # a backlog this many seconds long, arriving at once, still gets in

    def validate(self) -> None:
        if not (self.messages_per_s >= 1 and self.bytes_per_s >= 1200):
            raise ValueError(
                "--input-messages-per-s must be at least 1 and --input-bytes-per-s at least 1200 (one datagram)"
            )
        if not 0.1 <= self.burst_s <= 60:
            raise ValueError(f"--input-burst {self.burst_s:g} is out of range; use 0.1 to 60 seconds")
