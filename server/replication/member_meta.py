"""Member metadata as replication uses it: where a node says what it reads, and where its peers look.

Member metadata is a small msgpack map that gossip spreads with each member's liveness (`server.cluster` publishes
the node's HTTP address there). It is read leniently: unknown fields are ignored and a malformed blob counts as
empty. That is why a node says what it reads here. Every message of an anti-entropy session is parsed strictly by
every version so far (an unknown field makes the whole message malformed), so a session cannot tell an older peer
"I read context rows" without that peer refusing the session.

A node lists ``ae-cx`` under ``reads``: it reads anti-entropy context rows (`gossip.anti_entropy.wire`). A session
sends them only to a peer whose metadata lists them. A peer of an older version, or one whose metadata has not
reached us yet, gets the protocol it knows: a big key's whole state, and the diff back.

It lists ``ae-bulk`` too: it answers a bulk walk's BULK requests (`gossip.anti_entropy.bulk`), which older
versions refuse; a node far behind walks only with a peer that lists it, and descends with any other.

It lists ``cv-probe`` too: it answers the PROBE of convergence reports (`server.replication.probe`), a message type
older versions refuse; a report shows a member that does not list it as ``unknown`` instead of asking it.
"""

from __future__ import annotations

from typing import Any

import msgpack

from rumor.gossip.msgpack_wire import UNPACK_ERRORS

READS = "reads"
"""The metadata field listing what this node reads, by name (append-only: later features add names)."""
CONTEXT_ROWS = "ae-cx"
"""In ``reads``: anti-entropy context rows (``cx``) and the request field saying so (``ft``)."""
ROOT_PROBE = "cv-probe"
"""In ``reads``: the PROBE request (`server.replication.probe`), asked by convergence reports."""
BULK_WALK = "ae-bulk"
"""In ``reads``: anti-entropy BULK requests (a far-behind peer's catch-up walk)."""


def advertised() -> dict[str, Any]:
    """What this version adds to its metadata map."""
    return {READS: [CONTEXT_ROWS, ROOT_PROBE, BULK_WALK]}


def decode_meta(meta: bytes) -> dict[str, Any]:
    """Whatever a peer published; a malformed blob is taken as no metadata rather than breaking anything."""
    if not meta:
        return {}
    try:
        value = msgpack.unpackb(meta)
    except UNPACK_ERRORS:
        return {}
    return value if isinstance(value, dict) else {}


def reads_context_rows(meta: bytes) -> bool:
    """Whether the member that published ``meta`` reads anti-entropy context rows."""
    return _reads(meta, CONTEXT_ROWS)


def reads_bulk(meta: bytes) -> bool:
    """Whether the member that published ``meta`` answers a bulk walk's requests."""
    return _reads(meta, BULK_WALK)


def reads_probe(meta: bytes) -> bool:
    """Whether the member that published ``meta`` answers a PROBE (older versions refuse the unknown type)."""
    return _reads(meta, ROOT_PROBE)


def _reads(meta: bytes, name: str) -> bool:
    reads = decode_meta(meta).get(READS)
    return isinstance(reads, list) and name in reads


__all__ = ["BULK_WALK", "CONTEXT_ROWS", "READS", "ROOT_PROBE", "advertised", "decode_meta", "reads_bulk",
           "reads_context_rows", "reads_probe"]
