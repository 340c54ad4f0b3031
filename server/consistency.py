"""Write/read consistency options (`?w=` / `?r=` with `timeout_ms`): parsing, and how many replies each level needs.

On one node every level is satisfied by the local node. The replication layer supplies the cluster size and
collects the acknowledgements; the arithmetic lives here so both sides agree on it.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from rumor.server.errors import InvalidOptionError

DEFAULT_TIMEOUT_MS = 1_000
MAX_TIMEOUT_MS = 60_000


class Level(Enum):
    ONE = "1"
    QUORUM = "quorum"
    ALL = "all"

    def required(self, cluster_size: int) -> int:
        """Replies (this node included) needed out of `cluster_size` replicas: every member known not to have left,
        the unreachable included (see `server.replication.runtime.GossipReplication.cluster_size`)."""
        size = max(1, cluster_size)
        if self is Level.ONE:
            return 1
        if self is Level.QUORUM:
            return size // 2 + 1
        return size


@dataclass(frozen=True)
class Consistency:
    level: Level = Level.ONE
    timeout_ms: int = DEFAULT_TIMEOUT_MS

    @property
    def timeout_s(self) -> float:
        return self.timeout_ms / 1000


def parse_consistency(level: str | None, timeout_ms: int | None, *, name: str) -> Consistency:
    """Parses `?w=`/`?r=` (`name` says which); `timeout_ms` is already a checked integer. Absent: the defaults."""
    if level is None:
        parsed_level = Level.ONE
    else:
        try:
            parsed_level = Level(level)
        except ValueError:
            raise InvalidOptionError(f"{name} must be 1, quorum or all, got {level[:40]!r}") from None
    return Consistency(parsed_level) if timeout_ms is None else Consistency(parsed_level, timeout_ms)
