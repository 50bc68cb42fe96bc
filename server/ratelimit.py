"""Token buckets keyed by who asks (a source address), sans-I/O: the caller passes ``now``.

The lobby's ``POST /lobby/token`` is the first user: one address may burst, then is held
to a steady rate and told how long to wait. The table of buckets is bounded, so a sender
cycling through addresses costs a fixed amount of memory: when it is full, the bucket that
was refilled longest ago goes first (a full bucket carries no state worth keeping).
"""

from __future__ import annotations

from collections import OrderedDict


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
