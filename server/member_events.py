"""The latest membership changes a node saw (a member joined, became suspect, dead, alive again, left), each stamped
with the wall-clock time it was seen: what the dashboard lists. `server.cluster` feeds it from its memberlist's
``member_listeners``; bounded, so a flapping member cannot grow it."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from typing import Any

from rumor.gossip.member import Member

MEMBER_EVENTS_KEPT = 200
"""Membership changes remembered per node (the dashboard shows the latest)."""
EVENTS_PER_SNAPSHOT = 30


class MemberEvents:
    """The latest membership changes, oldest first; ``wall_clock`` stamps them (injected by tests)."""

    def __init__(self, node_id: Callable[[], str], kept: int = MEMBER_EVENTS_KEPT,
                 wall_clock: Callable[[], float] = time.time) -> None:
        self._node_id = node_id
        self._events: deque[dict[str, Any]] = deque(maxlen=kept)
        self._wall_clock = wall_clock
        self.seen = 0

    def record(self, old: Member | None, new: Member) -> None:
        """A memberlist listener: only changes of status (or a new member) are events; a refreshed entry is not."""
        if old is not None and old.status is new.status:
            return
        self.seen += 1
        self._events.append({
            "seq": self.seen, "t": round(self._wall_clock(), 3), "member": new.id,
            "status": new.status.name.lower(), "was": None if old is None else old.status.name.lower(),
            "incarnation": new.incarnation, "self": new.id == self._node_id(),
        })

    def latest(self, count: int = EVENTS_PER_SNAPSHOT) -> list[dict[str, Any]]:
        return list(self._events)[-count:]


__all__ = ["EVENTS_PER_SNAPSHOT", "MEMBER_EVENTS_KEPT", "MemberEvents"]
