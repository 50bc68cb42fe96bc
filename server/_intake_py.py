"""A player's inputs on their way in, in pure Python: the twin of the native ``_intake_c.pyx``.
``server/intake.py`` describes both and picks one at import; the tests run both."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any

from tickline.server.intake import (
    DRAIN_WINDOW_TICKS,
    INPUT_BUFFER,
    JITTER_TICKS,
    MAX_INPUTS_PER_DATAGRAM,
    MAX_SEQ,
    MAX_SEQ_JUMP,
)
from tickline.server.ratelimit import InputLimits
from tickline.shared.game import Controls, InvalidInput
from tickline.shared.protocol import (
    MAX_INPUT_TICKS,
    PACKED_INPUT,
    Input,
    MalformedFrame,
    decode_datagram,
    input_controls,
    split_packed_input,
)
from tickline.shared.schema import Inputs

SPECTATOR_INPUTS = "spectators cannot send inputs"
NOT_IN_A_MATCH = "no inputs before the session joins a match"


def decode_input(data: bytes) -> tuple[int, list[Any]]:
    """(ack, inputs) of a client's input datagram, an ``in`` frame or packed (its inputs'
    controls then left as JSON, read once new); a ProtocolError for anything else."""
    if data[:1] == PACKED_INPUT:
        return split_packed_input(data)
    frame = decode_datagram(data, packed=False)
    if not isinstance(frame, Input):
        raise MalformedFrame(f"{frame.TAG} frame is not allowed as a client datagram")
    return frame.ack, frame.inputs


class InputBudget:
    """One client's buckets for messages and bytes, in server time.

    A datagram takes one message and its size from them. When either is short it is refused
    (and nothing is spent): the client is slowed, its datagrams over the rate dropped. Each
    refusal adds to a debt that drains at the same rate; once the debt passes a whole burst
    (the client has sent well over twice the rate for a while, or a flood for an instant),
    ``exhausted`` is set and the caller closes the client. A client a little over the rate
    stays slowed and is not closed.
    """

    __slots__ = (
        "_burst_bytes",
        "_burst_messages",
        "_bytes",
        "_debt_bytes",
        "_debt_messages",
        "_messages",
        "_when",
        "exhausted",
        "limits",
    )

    def __init__(self, limits: InputLimits, now: float) -> None:
        self.limits = limits
        self._burst_messages = limits.messages_per_s * limits.burst_s
        self._burst_bytes = max(limits.bytes_per_s * limits.burst_s, 1200.0)
        self._messages, self._bytes = self._burst_messages, self._burst_bytes
        self._debt_messages = self._debt_bytes = 0.0
        self._when = now
        self.exhausted = ""  # why the client should be closed, once it should

    def take(self, size: int, now: float) -> str:
        """Admit a datagram of ``size`` bytes at ``now``: "" when admitted, else why it is
        refused ("messages" or "bytes")."""
        elapsed = max(0.0, now - self._when)
        self._when = now
        limits = self.limits
        if elapsed:
            self._messages = min(self._burst_messages, self._messages + elapsed * limits.messages_per_s)
            self._bytes = min(self._burst_bytes, self._bytes + elapsed * limits.bytes_per_s)
            self._debt_messages = max(0.0, self._debt_messages - elapsed * limits.messages_per_s)
            self._debt_bytes = max(0.0, self._debt_bytes - elapsed * limits.bytes_per_s)
        if self._messages >= 1 and self._bytes >= size:
            self._messages -= 1
            self._bytes -= size
            return ""
        self._debt_messages += 1
        self._debt_bytes += size
        if not self.exhausted:  # (the first reason stands)
            if self._debt_messages > self._burst_messages:
                self.exhausted = f"sent more than {limits.messages_per_s:g} datagrams a second for too long"
            elif self._debt_bytes > self._burst_bytes:
                self.exhausted = f"sent more than {limits.bytes_per_s:g} bytes of datagrams a second for too long"
        return "messages" if self._messages < 1 else "bytes"


class InputQueue:
    """One player's inputs between their datagrams and the ticks; ``validate`` is the game's
    input check (``Rules.validate_input``)."""

    __slots__ = (
        "_budget",
        "_inputs",
        "_primed",
        "_validate",
        "_window_min",
        "_window_ticks",
        "ack",
        "applied_seq",
        "dropped_now",
        "input_underruns",
        "inputs_dropped",
        "inputs_merged",
        "received_seq",
        "refusal",
        "spectating",
    )

    def __init__(
        self,
        validate: Inputs | Callable[[Any], Controls] | None,
        budget: InputBudget | None = None,
        spectating: bool = False,
    ) -> None:
        # None: not in a match yet (datagrams are budgeted, then ignored); a declaration
        # (Rules.input_check) is read by its own decoder
        self._validate = validate.decode if isinstance(validate, Inputs) else validate
        self._budget = budget
        self.spectating = spectating
        self.ack = 0  # the newest tick the last admitted datagram says the client holds
        self.refusal = ""  # why the budget refused the last datagram it refused
        self.dropped_now = 0  # inputs the last datagram pushed out of a full queue
        self.received_seq = 0
        # One entry per tick of input: (seq, controls, tick received); the later
        # ticks of an input that holds for several have controls None.
        self._inputs: deque[tuple[int, Controls | None, int]] = deque()
        self._primed = False
        self._window_ticks = 0  # ticks into the current drain window
        self._window_min = INPUT_BUFFER  # fewest ticks of input left waiting after a take, in the window
        self.applied_seq = 0
        self.inputs_dropped = 0
        self.input_underruns = 0
        self.inputs_merged = 0

    def __len__(self) -> int:
        """Ticks of input waiting."""
        return len(self._inputs)

    def receive(self, data: bytes, now: float, tick: int) -> bool:
        """One input datagram at server time ``now`` and match tick ``tick``: budgeted, read and
        queued: False when the budget refused it (``refusal`` says why), else True, with the
        datagram's ack in ``ack``. MalformedFrame or InvalidInput for a bad one."""
        budget = self._budget
        if budget is not None:
            refused = budget.take(len(data), now)
            if refused:
                self.refusal = refused
                return False
        self.dropped_now = 0
        if self._validate is None:
            return True  # (before the match it is not read: the client resends)
        ack, items = decode_input(data)
        if self.spectating and items:
            raise MalformedFrame(SPECTATOR_INPUTS)
        self.dropped_now = self.put(items, tick)
        self.ack = ack
        return True

    def put(self, items: list[Any], tick: int) -> int:
        """Queue the new inputs of one datagram, received at match tick ``tick``; how many were
        dropped because the queue was full. MalformedFrame or InvalidInput for a bad one."""
        validate = self._validate
        if validate is None:
            raise InvalidInput(NOT_IN_A_MATCH)
        if len(items) > MAX_INPUTS_PER_DATAGRAM:
            raise MalformedFrame(f"input datagram carries more than {MAX_INPUTS_PER_DATAGRAM} inputs")
        inputs = self._inputs
        dropped = 0
        for item in items:
            if not (isinstance(item, list) and 2 <= len(item) <= 3 and type(item[0]) is int and item[0] > 0):
                raise MalformedFrame(
                    "each input must be [seq, controls] or [seq, controls, ticks] with a positive integer seq"
                )
            seq, raw = item[0], item[1]
            ticks = item[2] if len(item) == 3 else 1
            if type(ticks) is not int or not 1 <= ticks <= MAX_INPUT_TICKS:
                raise MalformedFrame(f"an input holds for 1 to {MAX_INPUT_TICKS} ticks, not {ticks!r}")
            if seq <= self.received_seq:
                continue  # a redundant copy of an input already taken
            if seq > (self.received_seq + MAX_SEQ_JUMP if self.received_seq else MAX_SEQ):
                raise MalformedFrame(
                    f"input seq {seq} jumps more than {MAX_SEQ_JUMP} past the last one ({self.received_seq})"
                    if self.received_seq
                    else f"input seq {seq} is over {MAX_SEQ}"
                )
            # What is left of the previous input's hold gives way to this one: the
            # newest controls win a tick sooner, and held inputs never stand in a queue.
            while inputs and inputs[-1][1] is None:
                inputs.pop()
            if type(raw) is bytes:  # (a packed input's: no JSON value is bytes)
                raw = input_controls(raw)
            inputs.append((seq, validate(raw), tick))
            for _ in range(ticks - 1):
                inputs.append((seq, None, tick))
            self.received_seq = seq
            while len(inputs) > INPUT_BUFFER:
                if inputs.popleft()[1] is not None:
                    self.inputs_dropped += 1
                    dropped += 1
        return dropped

    def take(self, tick: int) -> tuple[int, Controls] | None:
        """The next input in sequence order for ``tick``, or None (the player keeps its controls).

        One tick of input per tick, each input applied once, in order (an input
        that holds for several ticks is applied at the first and kept through
        the others, until a newer one comes); the jitter buffer decides when a
        player who ran dry starts again, and drains a queue that stood for a
        whole window.
        """
        inputs = self._inputs
        if not self._primed:
            if not inputs or (len(inputs) < JITTER_TICKS and tick - inputs[0][2] < JITTER_TICKS):
                return None
            self._primed = True
        if not inputs:
            self._primed = False
            self.input_underruns += 1
            self._window_ticks, self._window_min = 0, INPUT_BUFFER
            return None
        # A client whose clock runs ahead of ours piles inputs up, and each one
        # waiting is a tick of latency; merge the oldest surplus away (the newest
        # controls win, as they would within one tick).
        while len(inputs) > JITTER_TICKS + 2:
            self._merge_oldest()
        self._window_ticks += 1
        if self._window_ticks >= DRAIN_WINDOW_TICKS:
            if self._window_min > 0 and len(inputs) > 1:
                self._merge_oldest()
            self._window_ticks, self._window_min = 0, INPUT_BUFFER
        seq, controls, _ = inputs.popleft()
        self._window_min = min(self._window_min, len(inputs))
        if controls is None:
            return None  # a later tick of an input that holds: nothing new to apply
        self.applied_seq = seq
        return seq, controls

    def _merge_oldest(self) -> None:
        """Drop the oldest tick of input; the newer controls win."""
        if self._inputs.popleft()[1] is not None:
            self.inputs_merged += 1
