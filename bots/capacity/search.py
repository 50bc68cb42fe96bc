"""The capacity search and its judging: which player counts to try, whether a try passed,
and what the tries add up to. Pure: no processes, no clock, no I/O.

A probe at ``n`` players **passes** when, over a steady window (every player in,
then a settling time), the server's tick lateness p99 stays under a bound, it
runs at least 99 % of its ticks, every player receives at least 95 % of the send
rate, and every player connected and stayed (:func:`judge`).

The search doubles ``n`` from a start until a probe fails (or a cap passes),
then bisects between the largest pass and the smallest failure until they are
within a tolerance. A machine is noisy, so one verdict is not trusted at the
edge: before the search answers, the largest pass and the smallest failure are
each probed once more, and a third time when the two disagree (the majority
stands; a verdict that flips moves the bracket and the search goes on).

What the search answers (:meth:`Search.outcome`) is a figure only when it can
stand behind it: a bracket that closed, both ends confirmed, the load generator
not saturated at the failure, and the failure not one that other processes
may have caused. Otherwise it is a bound ("at least ``lo``") and the reason.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

MIN_TICK_SHARE = 0.99  # ticks run per second, of tick_rate
MIN_RECV_SHARE = 0.95  # deltas received per second by each client, of send_rate
CRITERIA = (
    "pass = over a steady window (all players in, then settle_s): tick lateness p99 < bound_ms "
    "(server's own histogram); ticks/s >= 99% of tick_rate; every client received >= 95% of send_rate "
    "per second over the window (its own count); all n connected and kept (no error, disconnect, reconnect)"
)
# Other processes' CPU, in % of a core, above which a window counts as disturbed: on the
# server's CPU even a little shows in its lateness tail (our own loopback traffic's kernel
# time stays under ~5 %); on the generator's, what could slow the bots.
DISTURBED_SERVER_PERCENT = 8.0
DISTURBED_LOAD_PERCENT = 15.0
SATURATED_SHARE = 0.9  # the generator's CPUs this busy: the clients, not the server, may be the limit
# A probe that failed on its lateness tail alone while its server used less than this
# (% of its core) is run once more: far from saturation, a few stalled ticks are noise.
MARGINAL_SERVER_PERCENT = 80.0
CONFIRMATIONS = 2  # verdicts that must agree at each end of the bracket


@dataclass(slots=True)
class Search:
    """Doubling from ``start`` until a failure or ``cap``, bisection to ``tolerance``, then
    confirmation of both ends. ``next()`` gives the next n to probe (None: done);
    ``record()`` takes its verdict."""

    start: int
    cap: int
    tolerance: float
    verdicts: dict[int, list[bool]] = field(default_factory=dict)
    history: list[tuple[int, bool]] = field(default_factory=list)
    stopped: str = ""  # why the search ended before it was done (e.g. out of time)

    def __post_init__(self) -> None:
        self.start = max(1, min(self.start, self.cap))

    def record(self, n: int, passed: bool) -> None:
        self.history.append((n, passed))
        self.verdicts.setdefault(n, []).append(passed)

    def _passed(self, n: int) -> bool | None:
        """The majority verdict at ``n``; None on a tie."""
        votes = self.verdicts[n]
        yes = sum(votes)
        return True if 2 * yes > len(votes) else False if 2 * yes < len(votes) else None

    @property
    def hi(self) -> int | None:
        """The smallest n whose verdict is a failure (None: none yet)."""
        return min((n for n in self.verdicts if self._passed(n) is False), default=None)

    @property
    def lo(self) -> int:
        """The largest n below ``hi`` whose verdict is a pass (0: none)."""
        hi = self.hi
        return max((n for n in self.verdicts if self._passed(n) and (hi is None or n < hi)), default=0)

    @property
    def capped(self) -> bool:
        """The cap passed: the capacity is at least ``cap``, not measured."""
        return self.hi is None and self.lo >= self.cap

    def _closed(self) -> bool:
        hi, lo = self.hi, self.lo
        if hi is None:
            return lo >= self.cap
        return hi - lo <= max(1.0, self.tolerance * lo)

    def _unsettled(self, n: int) -> bool:
        votes = self.verdicts.get(n, [])
        return len(votes) < CONFIRMATIONS or self._passed(n) is None

    def next(self) -> int | None:
        if self.stopped:
            return None
        if not self.history:
            return self.start
        if any(self._passed(n) is None for n in self.verdicts):  # a tie: one more verdict decides
            return next(n for n in sorted(self.verdicts) if self._passed(n) is None)
        lo, hi = self.lo, self.hi
        if not self._closed():
            if hi is None:
                return min(max(1, lo * 2), self.cap)
            mid = (lo + hi) // 2
            if lo < mid < hi:
                return mid
        # Closed: confirm both ends before answering.
        for end in (hi, lo):
            if end and self._unsettled(end):
                return end
        return None

    @property
    def done(self) -> bool:
        return self.next() is None

    def summary(self) -> dict[str, Any]:
        return {
            "capacity": self.lo,
            "bracket": [self.lo, self.hi],
            "capped": self.capped,
            "stopped_early": self.stopped or None,
            "probes_run": len(self.history),
        }


def search(judge: Callable[[int], bool], start: int = 16, cap: int = 400, tolerance: float = 0.10) -> Search:
    """Run a whole search with ``judge(n) -> passed``; the finished Search (``lo`` is the answer)."""
    s = Search(start, cap, tolerance)
    while (n := s.next()) is not None:
        s.record(n, judge(n))
    return s


def outcome(s: Search, probes: list[dict[str, Any]]) -> dict[str, Any]:
    """What a search adds up to: ``players`` when it can stand behind a figure, else None and
    ``why``; ``at_least`` and ``below`` bound the capacity either way."""
    lo, hi = s.lo, s.hi
    out: dict[str, Any] = {
        "players": None,
        "at_least": lo,
        "below": hi,
        "bracket": [lo, hi],
        "why": None,
        "capped": s.capped,
    }
    failures_at_hi = [p for p in probes if p["n"] == hi and not p["pass"]]
    if s.stopped:
        out["why"] = f"the search did not finish: {s.stopped}"
    elif not s.done:
        out["why"] = "the search did not finish"
    elif lo == 0:
        out["why"] = f"no probe passed, not even at {hi}"
    elif failures_at_hi and all(p.get("generator_saturated") for p in failures_at_hi):
        out["why"] = (
            f"the load generator's CPUs were saturated when {hi} players failed: the limit may be "
            "the generator's, not the server's"
        )
    elif failures_at_hi and all(p.get("disturbed") for p in failures_at_hi):
        out["why"] = f"other processes took CPU whenever {hi} players failed: the machine was too busy to tell"
    else:
        out["players"] = lo
    return out


# ---------------------------------------------------------------------- judging one probe


def judge(
    n: int,
    *,
    connected: int,
    errors: int,
    lost: int,
    failures: list[str],
    players_begin: float,
    players_end: float,
    late_p99_ms: float | None,
    ticks_per_s: float,
    recv_shares: list[float],
    tick_rate: int,
    bound_ms: float,
    window_ok: bool = True,
) -> list[str]:
    """Why a probe at ``n`` failed; an empty list when it passed."""
    why = []
    if not window_ok:
        why.append("no full steady window (not every client got in)")
    if connected < n:
        why.append(f"{n - connected} of {n} never connected")
    if errors:
        why.append(f"{errors} client errors")
    if lost:
        why.append(f"{lost} lost their connection")
    if failures:
        why.append(f"load failure: {failures[0]}")
    if min(players_begin, players_end) < n:
        why.append(f"players in the window {players_begin:.0f}..{players_end:.0f} < {n}")
    if late_p99_ms is None:
        why.append("no tick lateness measured")
    elif late_p99_ms >= bound_ms:
        why.append(f"tick lateness p99 {late_p99_ms:.2f} ms >= {bound_ms:g} ms")
    if ticks_per_s < MIN_TICK_SHARE * tick_rate:
        why.append(f"{ticks_per_s:.1f} ticks/s < {MIN_TICK_SHARE:.0%} of {tick_rate}")
    if len(recv_shares) < n:
        why.append(f"receive rates known for {len(recv_shares)} of {n} clients")
    elif recv_shares and min(recv_shares) < MIN_RECV_SHARE:
        short = sum(1 for s in recv_shares if s < MIN_RECV_SHARE)
        why.append(f"{short} clients received < {MIN_RECV_SHARE:.0%} of the send rate (worst {min(recv_shares):.1%})")
    return why


def verdict(
    n: int,
    window: dict[str, Any],
    shares: list[float],
    span: float | None,
    *,
    connected: int,
    errors: int,
    lost: int,
    failures: list[str],
    tick_rate: int,
    bound_ms: float,
    load_cpus: set[int] | None,
) -> dict[str, Any]:
    """A probe's verdict and the figures every probe reports: ``window`` is what the server said
    of itself over the steady window (lateness, ticks, CPU, players at both ends), ``shares``
    each client's received rate over it (:func:`window_shares`)."""
    why = judge(
        n,
        connected=connected,
        errors=errors,
        lost=lost,
        failures=failures,
        players_begin=window.get("players_begin", 0),
        players_end=window.get("players_end", 0),
        late_p99_ms=window.get("tick_late_ms_p99"),
        ticks_per_s=window.get("ticks_per_s", 0.0),
        recv_shares=shares,
        tick_rate=tick_rate,
        bound_ms=bound_ms,
        window_ok=window.get("all_in", False),
    )
    return {
        "n": n,
        "pass": not why,
        "why": why,
        "tick_late_ms_p99": window.get("tick_late_ms_p99"),
        "tick_late_ms_p50": window.get("tick_late_ms_p50"),
        "ticks_per_s": window.get("ticks_per_s"),
        "server_cpu_percent": window.get("cpu_percent"),
        "recv_share_min": round(min(shares), 4) if shares else None,
        "recv_share_mean": round(sum(shares) / len(shares), 4) if shares else None,
        "connected": connected,
        "errors": errors,
        "lost": lost,
        "window_s": window.get("window_s"),
        "recv_span_s": span,
        **cpu_verdicts(window, load_cpus),
    }


def window_shares(
    snaps: dict[int, list[tuple[float, list[int | None]]]],
    begin: float,
    end: float,
    earliest: float,
    latest: float,
    send_rate: int,
) -> tuple[list[float], float | None]:
    """Each client's received count per second over the window, as a share of ``send_rate``.

    ``snaps`` holds, per worker, ``(time.monotonic(), [count or None per client])`` snapshots.
    For each worker, the snapshots nearest ``begin`` and ``end`` among those taken between
    ``earliest`` (every client in) and ``latest`` (the server stopped) bound its clients'
    window; a client not connected at either end gets no share. Returns the shares and the
    shortest span used (None when some worker had no two usable snapshots)."""
    shares: list[float] = []
    shortest: float | None = float("inf")
    for taken in snaps.values():
        usable = [s for s in taken if earliest <= s[0] <= latest]
        if len(usable) < 2:
            shortest = None
            continue
        a = min(usable, key=lambda s: abs(s[0] - begin))
        b = min(usable, key=lambda s: abs(s[0] - end))
        span = b[0] - a[0]
        if span < 0.5:
            shortest = None
            continue
        if shortest is not None:
            shortest = min(shortest, span)
        for before, after in zip(a[1], b[1], strict=True):
            if before is not None and after is not None:
                shares.append((after - before) / (span * send_rate))
    return shares, (None if shortest is None or shortest == float("inf") else round(shortest, 2))


def cpu_verdicts(window: dict[str, Any], load_cpus: set[int] | None) -> dict[str, Any]:
    """Whether other processes disturbed a window, and whether the load generator was saturated."""
    keys = (
        "generator_cpu_percent",
        "load_cpus_busy_percent",
        "other_on_server_cpu_percent",
        "other_on_load_cpus_percent",
    )
    out = {k: window.get(k) for k in keys}
    out["disturbed"] = (window.get("other_on_server_cpu_percent") or 0) > DISTURBED_SERVER_PERCENT or (
        window.get("other_on_load_cpus_percent") or 0
    ) > DISTURBED_LOAD_PERCENT
    busy = window.get("load_cpus_busy_percent")
    out["generator_saturated"] = (
        None if busy is None or not load_cpus else busy >= 100 * SATURATED_SHARE * len(load_cpus)
    )
    return out


def retry_reason(p: dict[str, Any]) -> str | None:
    """Why a failed probe should run once more at once, or None when its failure stands."""
    if p["pass"]:
        return None
    if p.get("disturbed"):
        return "disturbed by other processes"
    why = p.get("why") or []
    cpu = p.get("server_cpu_percent")
    if (
        why
        and all(w.startswith("tick lateness p99") for w in why)
        and cpu is not None
        and cpu < MARGINAL_SERVER_PERCENT
    ):
        return f"lateness alone at {cpu:.0f}% server CPU"
    return None
