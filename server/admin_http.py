"""What the operator routes that change the cluster take: `POST /v1/cluster/join` and `/v1/cluster/force-leave`
(their handlers are in `server.http_api`, the work in `server.cluster.Cluster`).

Both take the API token like every other route, and check their body before anything happens. On a node that is no
cluster member (an embedded `Node` with no `server.cluster.Cluster`) they answer 409 `not_a_cluster_member`.

- join ``{"addresses": ["host:port", ...]}``: every address of every entry is contacted once (names resolved now, A
  and AAAA); 200 with how many answered and the member rows, 400 `unresolvable_address` when no name resolved,
  502 `join_failed` (saying why, address by address) when none answered.
- force-leave ``{"node": "<member id>"}``: a member the cluster declared dead becomes left, here and by gossip
  everywhere: nothing probes it, retries it, or counts it for a quorum any more. 404 `unknown_member`; 409
  `member_not_dead` for a member that is alive or suspect (it would refute a leave, and a suspect one still has its
  suspicion to clear itself) or for this node itself.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rumor.server.errors import MalformedBodyError, NotAClusterMemberError

if TYPE_CHECKING:
    from rumor.server.cluster import Cluster

#: addresses one join request may name
MAX_JOIN_ADDRESSES = 64
#: the longest address or member id accepted (a DNS name is at most 253 characters, plus a port)
MAX_NAME_CHARS = 300


def _strings(value: Any, *, most: int) -> bool:
    return isinstance(value, list) and 1 <= len(value) <= most \
        and all(isinstance(v, str) and 0 < len(v) <= MAX_NAME_CHARS for v in value)


def join_addresses(body: Any) -> list[str]:
    if not isinstance(body, dict) or set(body) != {"addresses"} or not _strings(body["addresses"],
                                                                               most=MAX_JOIN_ADDRESSES):
        raise MalformedBodyError(f'expected {{"addresses": ["host:port", ...]}} with 1 to {MAX_JOIN_ADDRESSES} '
                                 "addresses")
    return list(body["addresses"])


def force_leave_node(body: Any) -> str:
    if not isinstance(body, dict) or set(body) != {"node"} or not _strings([body["node"]], most=1):
        raise MalformedBodyError('expected {"node": "<member id>"}')
    return str(body["node"])


def member_cluster(cluster: Cluster | None) -> Cluster:
    if cluster is None:
        raise NotAClusterMemberError("this node is not a cluster member (it runs embedded, without gossip)")
    return cluster


__all__ = ["MAX_JOIN_ADDRESSES", "force_leave_node", "join_addresses", "member_cluster"]

