"""The node's folder of op-keyed counter increments: what keeps cluster-wide exactly-once from growing state forever.

A counter increment made with an op_id is kept apart in the counter, keyed by the op (`crdt.counter_ops`), so a
retry applied on another node (the client timed out on the first) counts once when the two meet. Each op entry
costs state, so once it is older than `op_fold_after_s`, or the counter holds more than `op_fold_keep` of them,
the node that owns it folds it into its plain count: a local update like any other (logged, gossiped, applied by
every replica the same way), which leaves the value unchanged. The README states the limit this sets: a retry
after its op was folded, or an op applied on both sides of a partition that lasted longer than the retention,
counts again.

Rounds are bounded: every `op_fold_interval_s` the folder visits at most `KEYS_PER_ROUND` keys, taken from the
front of the keyspace's `op_keyed` (insertion-ordered), putting back at the end those that still hold op entries,
so every such key is visited in turn; the folds of one round go through `Node.update_batch`, one group commit.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any, Protocol

from rumor.crdt.errors import CRDTError
from rumor.server.config import ServerConfig
from rumor.server.hlc_source import HLCSource
from rumor.server.keyspace import Keyspace
from rumor.server.updates import FoldOps, Update

log = logging.getLogger(__name__)

#: keys visited per round (each visit costs O(op entries of the key))
KEYS_PER_ROUND = 512
#: op entries folded per key per round (one delta each: a fold's context names every folded dot)
FOLDS_PER_KEY = 1000


class FoldHost(Protocol):
    """What the folder needs of `server.node.Node`."""

    config: ServerConfig
    hlc: HLCSource
    node_id: str

    @property
    def keyspace(self) -> Keyspace: ...

    async def update_batch(self, writes: Sequence[tuple[str, Update, str | None]]) -> list[Any]: ...


class OpFolder:
    def __init__(self, node: FoldHost) -> None:
        self.node = node

    async def run(self) -> None:
        """Runs under the node's supervisor until cancelled."""
        while True:
            await asyncio.sleep(self.node.config.op_fold_interval_s)
            await self.fold_round()

    async def fold_round(self) -> int:
        """Folds what is due on up to `KEYS_PER_ROUND` keys; returns how many keys got a fold."""
        node, config = self.node, self.node.config
        keyspace = node.keyspace
        before_ms = node.hlc.physical_ms() - round(config.op_fold_after_s * 1000)
        pending = keyspace.op_keyed
        folds: list[tuple[str, FoldOps, None]] = []
        for _ in range(min(KEYS_PER_ROUND, len(pending))):
            key = next(iter(pending))
            del pending[key]
            entry = keyspace.entry(key)
            if entry is None or entry.type_name != "counter" or not entry.state.has_ops():
                continue
            pending[key] = None  # visited again in a later round: it holds op entries, due now or later
            fold = FoldOps(before_ms=before_ms, keep=config.op_fold_keep, limit=FOLDS_PER_KEY)
            try:
                due = not entry.state.fold_ops(node.node_id, before_ms, fold.keep, fold.limit).is_bottom()
            except CRDTError:  # not ours to fold, or a state it cannot fold: left as it is, counted once still
                log.exception("node %s: cannot fold the op entries of %r", node.node_id, key)
                continue
            if due:
                folds.append((key, fold, None))
        if not folds:
            return 0
        results = await node.update_batch(folds)
        failed = [r for r in results if isinstance(r, Exception)]
        if failed:
            log.warning("node %s: %d of %d op folds were refused (first: %s)", node.node_id, len(failed),
                        len(folds), failed[0])
        return len(folds) - len(failed)
