"""Replication's entries in the data directory's meta table: what a restarted process must know of its past.

- ``known_members``: the ids of every member this node knew that has not left. A node restarted alone (the first of
  a cold whole-cluster restart, or on the minority side of a partition) still counts the cluster it knew, so it
  cannot call a write that reached only itself a quorum.
- ``replication_epoch``: the epoch of this node's latest process. Peers take the origin with the larger epoch of a
  node id for its current process and retire the others (`server.replication.coverage`), so a new process must
  draw a larger epoch than every earlier one, whatever its clock says.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

from rumor.server.replication.seam import ReplicaHost

KNOWN_MEMBERS = "known_members"
"""The meta entry: a JSON list of member ids."""
LAST_EPOCH = "replication_epoch"
"""The meta entry: the epoch of this node's latest process, in decimal."""


def next_epoch(host: ReplicaHost) -> int:
    """This process's epoch, kept as the last one: larger than every earlier one of this node (a restart with a
    clock set back, or after a run with a skewed one, would otherwise look superseded by its own past)."""
    try:
        last = int(host.stored_meta.get(LAST_EPOCH, "0"))
    except ValueError:
        last = 0
    epoch = max(host.hlc.physical_ms(), last + 1)
    host.storage.put_meta(LAST_EPOCH, str(epoch))
    return epoch


class KnownMembers:
    """Ids of every member seen that has not left, this node included; the data directory keeps a copy.

    Members stay here even once membership reaps a dead one: only a graceful leave takes one out.
    """

    def __init__(self, host: ReplicaHost) -> None:
        self._host = host
        self.ids: set[str] = {host.node_id, *_stored_ids(host.stored_meta.get(KNOWN_MEMBERS))}

    def __len__(self) -> int:
        return len(self.ids)

    def note(self, seen: Iterable[str] = (), gone: Iterable[str] = ()) -> None:
        """Adds ``seen``, removes ``gone``; stores the result when it changed (and the node still runs)."""
        known = (self.ids | set(seen)) - set(gone)
        if known != self.ids:
            self.ids = known
            if self._host.running:
                self._host.storage.put_meta(KNOWN_MEMBERS, json.dumps(sorted(known)))


def _stored_ids(text: str | None) -> list[str]:
    try:
        ids = json.loads(text) if text else []
    except ValueError:
        return []
    return [i for i in ids if isinstance(i, str)] if isinstance(ids, list) else []


__all__ = ["KNOWN_MEMBERS", "LAST_EPOCH", "KnownMembers", "next_epoch"]
