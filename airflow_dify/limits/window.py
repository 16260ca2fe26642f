"""This process's sends, at most ``limit`` in any ``span`` seconds: the GCRA's promise kept on
the wire.

The GCRA spaces *reservations* evenly, and each caller sleeps until its own. When the process
stalls (a commit, a GC pause, a busy loop), every reservation that fell due in the stall wakes at
once and the server sees a burst: at bench scenario d (RPM 6,000) the worst 1 s held 107-111
requests where the budget allows 101. This window looks at actual send times instead: a send
waits until the ``limit``-th previous one is ``span`` seconds old, so any ``span``-second window
holds at most ``limit`` sends. After a stall it spreads the backlog out instead of bursting; on
a run that saturates the budget it binds every send (its span is a little longer than the GCRA's).

Waiters queue in order: each books its turn with its rate reservation and is told when it comes,
so it sleeps once, to the later of the two. Told "the oldest
send's age" each, every waiter woke at every turn and all but one went back to sleep: at bench
scenario d (RPM 6,000, 16 calls) 18.8 waits per row; queued (and with the pool's timer slack),
0.9; booked with the reservation, 0 (one sleep per send, as without the window).
"""

from __future__ import annotations

import threading
from collections import deque

#: How much later than its admission one request may reach the server's clock than another
#: (seconds): twice the interpreter's GIL switch interval (5 ms), since the loop may wait for the
#: lock between admission and write while the caller's thread is in a long C call. At 5 ms, 1 run
#: in 3 of bench scenario d saw a 1 s window of 102; at 10 ms, 8 of 9 stayed at 100-101 (the ninth,
#: 106, followed an ~80 ms stall, which no skew covers).
SKEW = 0.010


class SendWindow:
    """At most ``limit`` admissions in any ``span`` seconds; thread-safe, O(1) per admission."""

    def __init__(self, limit: int, span: float) -> None:
        if limit < 1 or not span > 0:
            raise ValueError(f"a send window needs limit >= 1 and span > 0, got {limit}, {span}")
        self.limit = int(limit)
        self.span = float(span)
        self._sent: deque[float] = deque(maxlen=self.limit)
        #: Callers told to wait and not yet admitted (or gone): a new one queues behind them.
        self._queued = 0
        self._lock = threading.Lock()

    @classmethod
    def for_rpm(cls, requests_per_minute: float) -> SendWindow:
        """``n = floor(rpm/60)`` sends (at least 1) per the time the GCRA takes to grant ``n``,
        plus :data:`SKEW`: 100 per 1.01 s at RPM 6,000. One short of the GCRA's own ``n + 1``, and
        over a longer span, because the server stamps a request a little after we send it, by an
        amount that varies (a GIL switch, its busy loop): its 1-second windows then hold at most
        ``n + 1``, and its 60-second windows at most the RPM. The price: a run that saturates the
        budget goes ``SKEW / span`` slower than it (1 % at RPM 6,000)."""
        n = max(1, int(requests_per_minute / 60.0))
        return cls(n, n * 60.0 / requests_per_minute + SKEW)

    def admit(self, now: float, *, queued: bool = False) -> float:
        """0.0 and the send is counted, or the seconds to wait before asking again.

        A wait queues the caller: it asks again with ``queued=True`` (its turn may still be a
        little off: it is told the rest), or calls :meth:`leave` if it gives up.
        """
        with self._lock:
            sent = self._sent
            if len(sent) < self.limit:  # the window is not full yet: nobody waits
                sent.append(now)
                if queued:
                    self._queued -= 1
                return 0.0
            wait = sent[0] + self.span - now  # one expression decides: no float gap
            if queued or not self._queued:
                if wait <= 0.0:
                    sent.append(now)
                    if queued:
                        self._queued -= 1
                    return 0.0
                if not queued:
                    self._queued = 1
                return wait
            # Behind ``ahead`` waiters: its turn comes when the send ``ahead`` places after the
            # oldest is ``span`` old (``limit`` places later: a span after that, and so on).
            turns, place = divmod(self._queued, self.limit)
            turn = sent[place] + self.span * (turns + 1) - now
            if wait <= 0.0 and turn <= 0.0:  # those ahead are late (a stall): no turn is taken
                sent.append(now)
                return 0.0
            self._queued += 1
            return max(turn, wait, 1e-6)

    def book(self, at: float) -> float:
        """Queue a caller that may send at ``at`` (its rate reservation's start, on this clock) and
        tell it when its turn comes: ``at`` or later. It sleeps once, until then, and asks
        :meth:`admit` with ``queued=True`` (or calls :meth:`leave`)."""
        with self._lock:
            sent, place = self._sent, self._queued
            self._queued += 1
            if len(sent) < self.limit:
                return at
            turns, index = divmod(place, self.limit)
            return max(at, sent[index] + self.span * (turns + 1))

    def leave(self) -> None:
        """A queued caller gives up its turn (cancelled while it waited)."""
        with self._lock:
            self._queued = max(0, self._queued - 1)

    @property
    def queued(self) -> int:
        """Callers waiting for their turn."""
        return self._queued


__all__ = ["SKEW", "SendWindow"]
