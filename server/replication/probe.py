"""The root probe: one small request/answer that tells a node where a peer's data stands *now*.

Anti-entropy sessions say whether two replicas agreed when the session ran, seconds ago. An operator asking "has the
cluster converged?" needs the answer for the present, so a node asks each live peer, all at once, for:

- its Merkle root (16 bytes: equal roots mean equal keyspaces, up to ~2**-128) and the hashes of the tree's level 2
  (``fanout**2`` nodes, 64 by default): each is a *key range* (a 1/64 slice of the key-hash space), and the ranges
  whose hashes differ from ours say how much differs without listing keys;
- how many of its digests are stale (``dirty``: changed since last hashed, so its root may not describe its data);
- its delta backlog (groups queued for pushing and their bytes) and its local writes not yet sealed into a group;
- the age of the oldest delta group it made that the asker does not hold yet (its replication lag towards the
  asker). The request says what the asker holds of the peer's own origin, ``(epoch, seq)``; the peer answers from
  the times it recorded when it made each group (`Disseminator.group_age_after`), on its own monotonic clock, so no
  wall-clock skew enters the figure.

Answering flushes stale digests first (bounded by ``digest_batch_keys``, as the OPEN of a session does), so an idle
node answers with ``dirty`` 0 and a root that describes its data.

Versioning: PROBE is new in this release and every earlier one refuses unknown message types, so a node sends it
only to peers whose member metadata lists ``cv-probe`` under ``reads`` (`member_meta.reads_probe`). Both messages
are parsed strictly (exact fields, types, bounds); a malformed one raises `ReplicationProtocolError`, which the
responder counts in ``rejected`` and the asker takes as "no answer".
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from rumor.server.replication.errors import ReplicationProtocolError
from rumor.server.replication.wire import Kind, body_of, pack

RANGE_LEVEL = 2
"""The tree level whose nodes are reported as key ranges: 64 ranges with the default fanout of 8."""
ROOT_BYTES = 16
MAX_RANGE_BYTES = 256 * ROOT_BYTES
"""Bound on the range hashes a peer may send (a level of at most 256 nodes)."""
_MAX_INT = (1 << 63) - 1

_PROBE_FIELDS: dict[str, tuple[type, ...]] = {"e": (int,), "s": (int,)}
_PROBED_FIELDS: dict[str, tuple[type, ...]] = {
    "a": (float, int, type(None)), "b": (int,), "d": (int,), "g": (int,), "h": (bytes,), "k": (int,),
    "r": (bytes,), "u": (int,),
}


@dataclass(frozen=True, slots=True)
class ProbeAnswer:
    """What a peer said of itself when it answered (see the module docstring for each field)."""

    root: bytes
    ranges: bytes
    dirty: int
    keys: int
    backlog_groups: int
    backlog_bytes: int
    unsealed_keys: int
    oldest_unheld_age_s: float | None

    @property
    def settled(self) -> bool:
        """Nothing stale nor waiting on that side: its root describes all its data."""
        return self.dirty == 0


def probe_message(epoch: int, seq: int) -> bytes:
    """PROBE: "of your current origin I hold groups 1..``seq`` of ``epoch``" (0, 0: none)."""
    return pack(Kind.PROBE, {"e": epoch, "s": seq})


def parse_probe(payload: bytes) -> tuple[int, int]:
    body = body_of(payload, Kind.PROBE, _PROBE_FIELDS)
    epoch, seq = body["e"], body["s"]
    if not (0 <= epoch <= _MAX_INT and 0 <= seq <= _MAX_INT):
        raise ReplicationProtocolError("malformed", "PROBE epoch and seq are 0..2**63-1")
    return epoch, seq


def probed_message(answer: ProbeAnswer) -> bytes:
    return pack(Kind.PROBED, {
        "a": answer.oldest_unheld_age_s, "b": answer.backlog_bytes, "d": answer.dirty, "g": answer.backlog_groups,
        "h": answer.ranges, "k": answer.keys, "r": answer.root, "u": answer.unsealed_keys,
    })


def parse_probed(payload: bytes) -> ProbeAnswer:
    """The strict inverse of `probed_message`: a peer's answer is input like any other."""
    body = body_of(payload, Kind.PROBED, _PROBED_FIELDS)
    if len(body["r"]) != ROOT_BYTES:
        raise ReplicationProtocolError("malformed", f"PROBED root is {ROOT_BYTES} bytes")
    ranges = body["h"]
    if len(ranges) % ROOT_BYTES or len(ranges) > MAX_RANGE_BYTES:
        raise ReplicationProtocolError("malformed", "PROBED range hashes")
    for name in ("b", "d", "g", "k", "u"):
        if not 0 <= body[name] <= _MAX_INT:
            raise ReplicationProtocolError("malformed", f"PROBED.{name} out of range")
    age = body["a"]
    if age is not None and (not math.isfinite(age) or not 0 <= age <= 1e9):
        raise ReplicationProtocolError("malformed", "PROBED.a is a finite age in seconds")
    return ProbeAnswer(root=body["r"], ranges=ranges, dirty=body["d"], keys=body["k"], backlog_groups=body["g"],
                       backlog_bytes=body["b"], unsealed_keys=body["u"],
                       oldest_unheld_age_s=None if age is None else float(age))


def differing_ranges(ours: bytes, theirs: bytes) -> int | None:
    """How many key ranges differ between two range-hash listings; None when the trees have different shapes."""
    if len(ours) != len(theirs):
        return None
    width = ROOT_BYTES
    return sum(1 for at in range(0, len(ours), width) if ours[at : at + width] != theirs[at : at + width])


__all__ = ["RANGE_LEVEL", "ProbeAnswer", "differing_ranges", "parse_probe", "parse_probed", "probe_message",
           "probed_message"]
