"""A client's link on the hot path, in pure Python: the twin of the native ``_link_c.pyx``.
``server/link.py`` describes both; ``server/session.py`` picks one at import; the tests run
both."""

from __future__ import annotations

from collections import Counter, OrderedDict
from collections.abc import Callable
from typing import Any

from tickline.server.link import BASELINE_RING, LinkOwner
from tickline.shared import delta
from tickline.shared.game import InvalidInput
from tickline.shared.protocol import (
    DEFLATE,
    MAX_DATAGRAM,
    ProtocolError,
    encode_delta,
    encode_packed_delta,
    pack_diff,
)


class Link:
    """One client's datagrams in and deltas out. ``queue`` is its input queue (an
    ``InputQueue`` of ``server/intake.py``; a session swaps in a new one when it joins a
    match), ``clock`` server time in seconds, ``send_datagram`` the channel's unreliable
    send (used when no ``fast_send`` is set or it cannot carry a delta now)."""

    def __init__(
        self,
        queue: Any,
        clock: Callable[[], float],
        owner: LinkOwner,
        send_datagram: Callable[[bytes], None],
        ack_timeout_s: float,
    ) -> None:
        self.queue = queue
        self._clock = clock
        self.owner = owner  # the session: what is not routine goes to it
        self._send_datagram = send_datagram
        self._ack_timeout_s = ack_timeout_s
        self.fast_send: Callable[[bytes], bool] | None = None  # the channel's fast_sender
        self.packed = False  # deltas as packed datagrams (shared/protocol.py)
        self.closed = False
        self.match: Any = None  # the match joined (inputs are stamped with its tick), or None
        self.bytes_up = 0
        self.bytes_down = 0
        self.deltas_sent = 0
        self.diffs_encoded = 0
        self.acked = 0
        self.acked_at = 0.0  # when a view was last acknowledged (or sending began)
        self.sent_at = -ack_timeout_s - 1.0  # when a view was last sent
        # What the server refused of the client since its match last looked, by reason (its
        # session counts them here; the match takes them into its log).
        self.refused: Counter[str] = Counter()
        self._sent: OrderedDict[int, Any] = OrderedDict()  # tick -> the view sent

    # ------------------------------------------------------------ in

    def deliver(self, data: bytes) -> None:
        """One input datagram from the client."""
        if self.closed:
            return
        self.bytes_up += len(data)
        now = self._clock()
        queue = self.queue
        try:
            admitted = queue.receive(data, now, self.match.tick if self.match is not None else 0)
        except (ProtocolError, InvalidInput) as exc:
            self.owner.fail(str(exc))
            return
        if not admitted:
            self.owner.input_refused(queue.refusal)
            return
        if queue.dropped_now:
            self.owner.inputs_overflowed(queue.dropped_now)
        ack = queue.ack
        if ack > self.acked and ack in self._sent:
            self.acked = ack
            self.acked_at = now
            # Acks only rise: no view older than this one is a baseline again. Let them go
            # now, not 64 sends later (the match's views live far shorter, and the collector
            # has far fewer to walk).
            sent = self._sent
            while next(iter(sent)) < ack:
                sent.popitem(last=False)
        elif self._sent and now - self.acked_at > self._ack_timeout_s:
            self.owner.acks_stopped()

    def take(self, tick: int) -> Any:
        """The next input for match tick ``tick`` (the queue's ``take``)."""
        return self.queue.take(tick)

    # ------------------------------------------------------------ out

    def send_view(self, tick: int, view: Any, cache: dict[Any, bytes], full: bool, seq: int | None) -> bytes | None:
        """Send ``view`` for ``tick`` as a delta against the newest view the client
        acknowledged (``full``: against nothing), naming ``seq`` (None: the newest input
        applied). ``cache`` holds the tick's encoded diffs, shared by every client with the
        same view and baseline. None when it went (or the link is closed); the delta's bytes
        when it is too big for a datagram, for the session to send (then :meth:`sent`)."""
        if self.closed:
            return None
        now = self._clock()
        if now - self.sent_at > self._ack_timeout_s:
            self.acked_at = now  # the first view, or the first after a pause in sending: the clock starts
        self.sent_at = now
        base_view = None if full else self._sent.get(self.acked)
        base = self.acked if base_view is not None else 0
        if seq is None:
            seq = self.queue.applied_seq
        body = b""
        if self.packed:
            # (the packed diff is looked up first: most clients share it, and skip the JSON)
            key = (id(view), id(base_view), DEFLATE)
            packed = cache.get(key)
            if packed is None:
                packed = cache[key] = pack_diff(self._diff(cache, view, base_view))
            body = encode_packed_delta(tick, base, seq, packed)
        if not body or len(body) > MAX_DATAGRAM:
            body = encode_delta(tick, base, seq, self._diff(cache, view, base_view))
        if len(body) > MAX_DATAGRAM:
            return body
        fast = self.fast_send
        if fast is None or not fast(body):  # (on the fast path: sealed and queued in one call)
            self._send_datagram(body)
        self.sent(tick, view, len(body))
        return None

    def _diff(self, cache: dict[Any, bytes], view: Any, base_view: Any) -> bytes:
        """The encoded diff from ``base_view`` to ``view``, made once per tick for everyone."""
        key = (id(view), id(base_view))
        diff_json = cache.get(key)
        if diff_json is None:
            diff_json = cache[key] = delta.diff_json(base_view or {}, view)
            self.diffs_encoded += 1
        return diff_json

    def sent(self, tick: int, view: Any, size: int) -> None:
        """``view`` went out for ``tick`` in ``size`` bytes: a baseline from now on."""
        self.bytes_down += size
        self.deltas_sent += 1
        self._sent[tick] = view
        if len(self._sent) > BASELINE_RING:  # (one view comes in per call: one goes)
            self._sent.popitem(last=False)

    def sent_ticks(self) -> list[int]:
        """The ticks whose views are kept as baselines, oldest first."""
        return list(self._sent)


def take_inputs(
    links: dict[int, Link], tick: int, seqs: dict[int, int], inputs: dict[int, Any]
) -> tuple[int, list[int]]:
    """Each link's next input for match tick ``tick``, into ``seqs`` and ``inputs`` by player
    id (``links``: player id -> a player's link); how many there were, and the players with
    refusals to report. (Links, not sessions: one object a player less to touch each tick.)"""
    applied, refused = 0, []
    for player_id, link in links.items():
        taken = link.take(tick)
        if taken is not None:
            seqs[player_id], inputs[player_id] = taken
            applied += 1
        if link.refused:
            refused.append(player_id)
    return applied, refused


def send_views(
    links: list[Link], tick: int, view: Any, cache: dict[Any, bytes], full: bool
) -> list[tuple[Link, bytes]]:
    """``view`` for ``tick`` to each link (:meth:`Link.send_view`); the links and deltas too big
    for a datagram, for each link's owner to send."""
    oversized = []
    for link in links:
        body = link.send_view(tick, view, cache, full, None)
        if body is not None:
            oversized.append((link, body))
    return oversized
