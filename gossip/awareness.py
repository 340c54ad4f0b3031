"""Lifeguard's local health multiplier: when *we* are slow or lossy, give everyone else more time.

A node that misses acks because its own CPU or network is struggling would otherwise accuse healthy peers.
Each sign of local trouble (a failed probe, missing nacks from relays, having to refute a suspicion about
ourselves) raises a saturating score; each clean probe lowers it. Our probe interval and timeout are multiplied
by ``score + 1``.
"""

from __future__ import annotations


class Awareness:
    __slots__ = ("_max", "_score")

    def __init__(self, max_multiplier: int) -> None:
        if max_multiplier < 1:
            raise ValueError(f"max_multiplier must be >= 1, got {max_multiplier}")
        self._max = max_multiplier
        self._score = 0

    @property
    def score(self) -> int:
        """0 is healthy; ``max_multiplier - 1`` is as unhealthy as we admit to."""
        return self._score

    def apply_delta(self, delta: int) -> int:
        """Move the score, saturating at both ends; returns the new score."""
        self._score = min(self._max - 1, max(0, self._score + delta))
        return self._score

    def scale(self, timeout_s: float) -> float:
        """Stretch one of our own timeouts by the current health multiplier."""
        return timeout_s * (self._score + 1)
