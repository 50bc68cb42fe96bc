"""A player's inputs on their way in: the client's datagram budget (``InputBudget``, its
limits in ``server/ratelimit.py``), the datagram's frame read, and the queue between the
datagrams and the ticks that apply them (the jitter buffer). ``InputQueue.receive`` does all
three for one datagram in one call.

Every input datagram repeats the inputs the server has not yet confirmed; :class:`InputQueue`
takes each new one once, in sequence order, checked by the game's declared inputs, and gives
the match one tick of input per tick. After running dry it waits for ``JITTER_TICKS`` ticks
of input (or for the oldest to wait that long), so that arrival jitter does not become missed
ticks; a queue that stood for a whole ``DRAIN_WINDOW_TICKS`` window loses its oldest tick of
input, which was latency no jitter needed.

This is the per-player work of every datagram and every tick, so it has a native twin
(``_intake_c.pyx``) beside the pure one (``_intake_py.py``), with the same behaviour and the
same refusals, word for word; ``server/session.py`` takes one through ``shared/native.py``.
This module holds what both read: the limits.
"""

from __future__ import annotations

# Redundant inputs one datagram may carry.
MAX_INPUTS_PER_DATAGRAM = 16
# Ticks of input waiting to be applied, at most; a client further ahead loses its oldest.
INPUT_BUFFER = 32
# How far an input's sequence number may jump past the newest one received (inputs lost
# in between are gone anyway); a session's first input may start anywhere below MAX_SEQ
# (a client that comes back keeps its numbering). A packed delta names the newest input
# applied in 32 bits (about four years of inputs at 30 a second): a larger one was
# accepted once and then failed the match's send.
MAX_SEQ_JUMP = 4096
MAX_SEQ = 2**32 - 1
# The jitter buffer, counted in ticks of input (an input that holds for two ticks
# counts two): after running dry, a player's inputs wait until this many ticks are
# queued (or the oldest has waited this many ticks) so that arrival jitter does
# not turn into missed ticks.
JITTER_TICKS = 2
# ...and it shrinks again while the network is steady: when inputs waited at every
# tick of this many, the shortest wait is latency that no jitter needed, and one
# input is merged away (on loopback the queue otherwise stood 2-4 inputs deep: up
# to 67 ms at 60 Hz).
DRAIN_WINDOW_TICKS = 30
