"""The keyed token buckets behind the lobby's rate, with a fake clock: bursts, the steady
rate, the wait they announce, and a table that stays bounded whoever asks."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tickline.server.ratelimit import KeyedBuckets


def test_a_key_may_burst_then_is_held_to_the_rate_and_told_how_long_to_wait() -> None:
    buckets = KeyedBuckets(rate=2.0, burst=3)
    assert [buckets.take("a", 100.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert buckets.take("a", 100.0) == pytest.approx(0.5)
    assert buckets.take("b", 100.0) == 0.0  # another key has its own bucket
    assert buckets.take("a", 100.5) == 0.0  # the wait it was told
    assert buckets.take("a", 100.5) == pytest.approx(0.5)
    assert buckets.take("a", 110.0) == 0.0  # refilled, never past the burst
    assert [buckets.take("a", 110.0) for _ in range(3)] == [0.0, 0.0, pytest.approx(0.5)]


def test_the_table_forgets_the_least_recently_seen_keys_first() -> None:
    buckets = KeyedBuckets(rate=1.0, burst=1, max_keys=2)
    buckets.take("old", 0.0)
    buckets.take("kept", 0.0)
    buckets.take("kept", 0.5)  # refused, but seen last
    buckets.take("new", 0.5)
    assert len(buckets) == 2
    assert buckets.take("kept", 0.6) > 0  # still remembered, still empty
    assert buckets.take("old", 0.6) == 0.0  # forgotten: a full bucket again


def test_a_limit_needs_a_positive_rate_and_a_burst() -> None:
    for rate, burst in [(0.0, 1.0), (1.0, 0.5), (-1.0, 5.0)]:
        with pytest.raises(ValueError, match="positive rate"):
            KeyedBuckets(rate, burst)


@given(
    rate=st.floats(0.5, 50.0),
    burst=st.integers(1, 20),
    gaps=st.lists(st.floats(0.0, 2.0), min_size=1, max_size=200),
)
def test_over_any_window_a_key_gets_at_most_the_burst_plus_the_rate(rate: float, burst: int, gaps: list[float]) -> None:
    buckets = KeyedBuckets(rate, burst)
    now, allowed = 0.0, 0
    for gap in gaps:
        now += gap
        allowed += buckets.take("k", now) == 0.0
    assert allowed <= burst + rate * now + 1e-6
