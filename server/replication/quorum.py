"""Counting replies for per-request consistency levels (``w``/``r`` = 1, quorum, all).

The default stays local and available: a level is a *wait*, never a gate. A write is applied and durable locally
before anyone is asked, and stays applied whatever the count; the caller learns how many replicas acknowledged
within the timeout (`Tally.acks`) and decides what that means. The level arithmetic itself is
`server.consistency.Level.required`; this is the callback-driven counter the simulator and the runtime share.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(slots=True)
class Tally:
    """``needed`` acknowledgements wanted from ``asked`` peers; finished when met or when every peer answered."""

    needed: int
    asked: int
    acks: int = 0
    failures: int = 0
    repliers: list[str] = field(default_factory=list)

    @property
    def done(self) -> bool:
        return self.acks >= self.needed or self.acks + self.failures >= self.asked

    @property
    def satisfied(self) -> bool:
        return self.acks >= self.needed

    def record(self, member: str, ok: bool) -> bool:
        """Count one reply (``ok``) or failure; returns `done`."""
        if ok:
            self.acks += 1
            self.repliers.append(member)
        else:
            self.failures += 1
        return self.done


__all__ = ["Tally"]
