"""What the node's reads and writes answer with, and what an op_id's stored result is (`server.node.Node`)."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any

import msgpack

from rumor.server.keyspace import Item
from rumor.server.values import canonical_json


@dataclass(slots=True)
class Outcome:
    """A read's or write's item (None: absent, or emptied by a delete) and how many replicas took part, this node
    included, out of how many the consistency level asked for."""

    item: Item | None
    acks: int = 1
    required: int = 1

    @property
    def satisfied(self) -> bool:
        return self.acks >= self.required


@dataclass(slots=True)
class WriteResult(Outcome):
    replayed: bool = False  # True when this is the stored result of an earlier request with the same op_id
    #: whether the key holds a value after the write, when the item was not rendered (a batch without items)
    present: bool | None = None


@dataclass(slots=True)
class AppliedWrite:
    """A write applied and queued, not yet durable: what `Node._finish` waits for and then answers with."""

    item: Item | None
    delta: Any  # None when nothing changed: nothing to send to replicas
    written: asyncio.Future[None] | None
    op_id: str | None
    record: OpRecord | None
    present: bool


@dataclass(slots=True)
class OpRecord:
    """What an op_id named: the request (its key and `request_fingerprint`) and its result. Records written before
    fingerprints existed have none (`fingerprint` None) and match any request on their key."""

    key: str
    fingerprint: str | None
    item: Item | None

    def same_request(self, key: str, fingerprint: str) -> bool:
        return key == self.key and self.fingerprint in (None, fingerprint)

    def stored(self) -> bytes:
        """JSON text `[fingerprint, item record or null]`: the item is a value in the JSON data model, counters of
        any size included, which JSON holds and msgpack does not, so storing a result can never fail."""
        return canonical_json([self.fingerprint, None if self.item is None else self.item.to_record()]).encode()

    @classmethod
    def from_stored(cls, key: str, blob: bytes) -> OpRecord:
        """Reads `stored()` back; records written before fingerprints are msgpack of the item's record (or nil)."""
        if blob[:1] == b"[":
            fingerprint, item = json.loads(blob)
        else:
            fingerprint, item = None, msgpack.unpackb(blob)
        return cls(key, fingerprint, None if item is None else Item(**item))
