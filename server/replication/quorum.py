"""When to stop waiting for the replies to a request made at a consistency level above one (``w``/``r``).

A level is a wait, never a gate: a write is applied and durable locally before anyone is asked and stays applied
whatever the count. `GossipReplication.replicate` and `gather` return how many replicas answered in time, and the
caller (`server.node.Node`) reports what that means; the level arithmetic is `server.consistency.Level.required`.
`Tally` only says when waiting longer cannot change the answer.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class Tally:
    """``needed`` acknowledgements wanted from ``asked`` peers; finished when met or when every peer answered."""

    needed: int
    asked: int
    acks: int = 0
    failures: int = 0

    @property
    def done(self) -> bool:
        return self.acks >= self.needed or self.acks + self.failures >= self.asked

    def record(self, ok: bool) -> bool:
        """Count one acknowledgement (``ok``) or failure; returns `done`."""
        if ok:
            self.acks += 1
        else:
            self.failures += 1
        return self.done


__all__ = ["Tally"]
