"""Randomized round-robin choice of the next member to probe (the SWIM paper's improvement on random picks).

Members are probed in a shuffled order; the list is reshuffled each time it wraps, and a newcomer is inserted at
a random position. So every member is probed once per round, and no member goes unprobed for more than
2N - 1 probe periods (first in one round, last in the next), which bounds detection time where uniform random
choice only bounds it in expectation.
"""

from __future__ import annotations

import random
from collections.abc import Callable


class ProbeOrder:
    __slots__ = ("_index", "_members", "_position", "_rng")

    def __init__(self, rng: random.Random) -> None:
        self._rng = rng
        self._members: list[str] = []
        self._position: dict[str, int] = {}
        self._index = 0

    def __len__(self) -> int:
        return len(self._members)

    def __contains__(self, member_id: object) -> bool:
        return member_id in self._position

    def add(self, member_id: str) -> None:
        """Insert at a random position; inserting behind the cursor means it waits at most until the next round."""
        if member_id in self._position:
            return
        pos = self._rng.randint(0, len(self._members))
        self._members.insert(pos, member_id)
        if pos < self._index:
            self._index += 1
        self._reindex(pos)

    def remove(self, member_id: str) -> None:
        pos = self._position.pop(member_id, None)
        if pos is None:
            return
        del self._members[pos]
        if pos < self._index:
            self._index -= 1
        self._reindex(pos)

    def next(self, eligible: Callable[[str], bool]) -> str | None:
        """The next eligible member in this round, reshuffling at the wrap; None if nobody is eligible."""
        for _ in range(2 * len(self._members) + 1):
            if self._index >= len(self._members):
                self._rng.shuffle(self._members)
                self._reindex(0)
                self._index = 0
                if not self._members:
                    return None
            member_id = self._members[self._index]
            self._index += 1
            if eligible(member_id):
                return member_id
        return None

    def _reindex(self, start: int) -> None:
        for i in range(start, len(self._members)):
            self._position[self._members[i]] = i
