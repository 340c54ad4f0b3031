"""Write/read consistency options (`?w=` / `?r=` with `timeout_ms`): parsing, and how many replies each level needs.

On one node every level is satisfied by the local node. The replication layer supplies the cluster size and
collects the acknowledgements; the arithmetic lives here so both sides agree on it.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from server.errors import InvalidOptionError

DEFAULT_TIMEOUT_MS = 1_000
MAX_TIMEOUT_MS = 60_000


class Level(Enum):
    ONE = "1"
    QUORUM = "quorum"
    ALL = "all"

    def required(self, cluster_size: int) -> int:
        """Replies (this node included) needed out of `cluster_size` live replicas."""
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


def parse_consistency(level: str | None, timeout_ms: str | None, *, name: str) -> Consistency:
    """Parses `?w=`/`?r=` (`name` says which) and `?timeout_ms=`; absent options take the defaults."""
    try:
        parsed_level = Level.ONE if level is None else Level(level)
    except ValueError:
        raise InvalidOptionError(f"{name} must be 1, quorum or all, got {level!r}") from None
    if timeout_ms is None:
        return Consistency(parsed_level)
    if not timeout_ms.isdigit() or not (1 <= int(timeout_ms) <= MAX_TIMEOUT_MS):
        raise InvalidOptionError(f"timeout_ms must be an integer in 1..{MAX_TIMEOUT_MS}, got {timeout_ms!r}")
    return Consistency(parsed_level, int(timeout_ms))
