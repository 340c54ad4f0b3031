"""Lifeguard's dynamic suspicion timeout: start long, shrink as independent peers confirm the suspicion.

A lone suspicion (perhaps our own network is the sick party) waits the maximum; each distinct confirming peer
brings the deadline closer on a log curve, reaching the minimum after ``k`` confirmations. The formula is
memberlist's ``remainingSuspicionTime``, kept pure so it can be tested on its own.
"""

from __future__ import annotations

import math


def remaining_suspicion_time(n: int, k: int, elapsed_s: float, min_s: float, max_s: float) -> float:
    """Time left before a suspect is declared dead, given ``n`` of ``k`` wanted confirmations; may be negative."""
    frac = math.log(n + 1.0) / math.log(k + 1.0) if k > 0 else 1.0
    raw = max_s - frac * (max_s - min_s)
    timeout = max(min_s, math.floor(1000.0 * raw) / 1000.0)
    return timeout - elapsed_s


class Suspicion:
    """The timer of one suspected member, as a deadline the owner compares with ``now`` (no real timers).

    The accuser that started it is not counted as a confirmation (our own suspicion may be gossiped back to us).
    """

    __slots__ = ("_confirmations", "_deadline", "incarnation", "k", "max_s", "min_s", "n", "start")

    def __init__(self, source: str, incarnation: int, k: int, min_s: float, max_s: float, now: float) -> None:
        self.incarnation = incarnation
        self.k = k
        self.min_s = min_s
        self.max_s = max_s
        self.start = now
        self.n = 0
        self._confirmations = {source}
        self._deadline = now + (min_s if k < 1 else max_s)

    @property
    def deadline(self) -> float:
        return self._deadline

    def confirm(self, source: str, now: float) -> bool:
        """Count a new independent accuser; True if it was new and moved the deadline (worth re-gossiping)."""
        if self.n >= self.k or source in self._confirmations:
            return False
        self._confirmations.add(source)
        self.n += 1
        remaining = remaining_suspicion_time(self.n, self.k, now - self.start, self.min_s, self.max_s)
        self._deadline = now + remaining
        return True

    def postpone(self, until: float) -> None:
        """Push the deadline out (never in): used when we ourselves were stalled and could not hear refutations."""
        self._deadline = max(self._deadline, until)
