"""Small figures a match keeps about itself: sample windows with percentiles."""

from __future__ import annotations

from collections import deque


class Samples:
    """The newest ``keep`` values of a measurement, with count and max over all of them."""

    __slots__ = ("_values", "count", "max")

    def __init__(self, keep: int = 36_000) -> None:
        self._values: deque[float] = deque(maxlen=keep)
        self.count = 0
        self.max = 0.0

    def add(self, value: float) -> None:
        self._values.append(value)
        self.count += 1
        if value > self.max:
            self.max = value

    def values(self) -> list[float]:
        """A copy of the kept values, oldest first (for benchmarks that pool or slice them)."""
        return list(self._values)

    def percentile(self, p: float) -> float:
        """The ``p``-th percentile (0-100) of the kept values, nearest-rank; 0 when empty."""
        if not self._values:
            return 0.0
        ordered = sorted(self._values)
        rank = max(0, min(len(ordered) - 1, round(p / 100 * len(ordered) + 0.5) - 1))
        return ordered[rank]

    def summary(self, scale: float = 1.0, digits: int = 3) -> dict[str, float]:
        return {
            "p50": round(self.percentile(50) * scale, digits),
            "p99": round(self.percentile(99) * scale, digits),
            "max": round(self.max * scale, digits),
        }
