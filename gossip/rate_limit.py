"""At most one log line per key per interval, for warnings a misconfigured peer would otherwise repeat per packet.

A peer with the wrong cluster key sends several datagrams a second; a duplicated node id is gossiped on every round.
The operator needs to hear of it (once, naming the peer), not a flood. The limiter is told the time (`now`) like the
protocol's state machines, so it is tested without sleeping; it remembers a bounded number of keys.
"""

from __future__ import annotations

from collections.abc import Hashable


class RateLimiter:
    """``allow(key, now)`` is true at most once per ``interval_s`` per key; ``suppressed(key)`` says how many were
    refused since (read it when allowed: it is reset then)."""

    def __init__(self, interval_s: float, max_keys: int = 1024) -> None:
        self.interval_s = interval_s
        self.max_keys = max_keys
        self._last: dict[Hashable, float] = {}
        self._suppressed: dict[Hashable, int] = {}

    def allow(self, key: Hashable, now: float) -> bool:
        last = self._last.get(key)
        if last is not None and now - last < self.interval_s:
            self._suppressed[key] = self._suppressed.get(key, 0) + 1
            return False
        if last is None and len(self._last) >= self.max_keys:
            self._forget(now)
        self._last.pop(key, None)
        self._last[key] = now  # re-inserted: the dict stays ordered oldest first
        return True

    def suppressed(self, key: Hashable) -> int:
        """How many times ``key`` was refused since it was last allowed; resets the count."""
        return self._suppressed.pop(key, 0)

    def _forget(self, now: float) -> None:
        """Drop keys whose interval is over, or else the oldest half: memory stays bounded under any key churn."""
        expired = [k for k, t in self._last.items() if now - t >= self.interval_s]
        if not expired:
            expired = list(self._last)[: len(self._last) // 2 + 1]
        for key in expired:
            del self._last[key]
            self._suppressed.pop(key, None)
