"""The gossip side of a node, built from `ServerConfig`: keyring, transport, `Memberlist`, replication runtime.

`rumor serve` makes every node a cluster member (a cluster of one until someone joins): `Cluster` turns the config
into a `server.replication.runtime.GossipReplication` (the `Node`'s replication) whose memberlist factory builds the
transport and membership here. What lives in this module rather than in the runtime is everything that is about
*running a server* rather than replicating: how a cluster key becomes an AES key, which timing preset maps to which
gossip and replication timers, the HTTP address published in the member metadata (so clients and `rumor demo` can
reach every node's API from any one of them), the operator's views (`/v1/cluster`, metrics) and the fault-injection
switch used by demos and tests.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine
from dataclasses import replace
from typing import Any

import msgpack
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from rumor.gossip.address import AddressError, format_address, parse_address
from rumor.gossip.clock import Address
from rumor.gossip.config import Config as GossipConfig
from rumor.gossip.delegate import Delegate
from rumor.gossip.errors import GossipError
from rumor.gossip.fault_injection import FaultInjectingTransport
from rumor.gossip.member import Member
from rumor.gossip.memberlist import Memberlist
from rumor.gossip.security import KEY_SIZES, Keyring
from rumor.gossip.transport import Transport
from rumor.gossip.transport_asyncio import AsyncioTransport
from rumor.server.config import ServerConfig
from rumor.server.errors import BadRequestError, NodeNotRunningError
from rumor.server.member_events import MemberEvents
from rumor.server.metrics import Metrics
from rumor.server.replication.config import ReplicationConfig
from rumor.server.replication.convergence import ConvergenceMonitor
from rumor.server.replication.member_meta import advertised, decode_meta
from rumor.server.replication.runtime import GossipReplication

_GOSSIP_PRESETS = {"lan": GossipConfig.lan, "wan": GossipConfig.wan, "local": GossipConfig.local}
# Replication timers per preset: pushes ride at gossip's pace; `local` pushes often so a demo converges at once.
_REPLICATION_PRESETS = {
    "lan": ReplicationConfig(),
    "wan": ReplicationConfig(push_interval_s=0.5, sync_interval_s=10.0, request_timeout_s=15.0),
    "local": ReplicationConfig(push_interval_s=0.02, sync_interval_s=1.0, request_timeout_s=1.0, gc_grace_s=10.0),
}
_KDF_SALT = b"rumor-cluster-key-v1"
_META_HTTP = "http"


class UnknownPeerError(BadRequestError):
    """A partition request named something that is neither a known member id nor a gossip address."""

    code = "unknown_peer"

    def __init__(self, name: str) -> None:
        super().__init__(f"not a known member id nor a host:port gossip address: {name!r}")
        self.name = name


class FaultInjectionDisabledError(NodeNotRunningError):
    """Partitioning was asked of a node started without --enable-fault-injection."""


def gossip_config(timing: str) -> GossipConfig:
    return _GOSSIP_PRESETS[timing]()


def replication_config(timing: str, seeds: tuple[str, ...] = ()) -> ReplicationConfig:
    return replace(_REPLICATION_PRESETS[timing], seeds=tuple(parse_address(s, "seeds") for s in seeds))


def keyring_for(cluster_key: str | None) -> Keyring | None:
    """The cluster key as an AES key: hex of 16/24/32 bytes is used as is (so keys made by `openssl rand -hex 32`
    interoperate with other tools); anything else is a passphrase stretched to 32 bytes with HKDF-SHA256."""
    if cluster_key is None:
        return None
    try:
        raw = bytes.fromhex(cluster_key)
    except ValueError:
        raw = b""
    if len(raw) not in KEY_SIZES:
        raw = HKDF(algorithm=hashes.SHA256(), length=32, salt=_KDF_SALT, info=b"gossip").derive(cluster_key.encode())
    return Keyring(raw)


def encode_meta(http_addr: str) -> bytes:
    """Member metadata: a msgpack map, so later fields can be added without breaking older nodes (`decode_meta`
    ignores what it does not know); replication adds what this node reads (`member_meta.advertised`)."""
    return msgpack.packb({_META_HTTP: http_addr, **advertised()})


def member_view(member: Member, self_id: str) -> dict[str, Any]:
    """One row of `/v1/cluster` and `/v1/members`."""
    http = decode_meta(member.meta).get(_META_HTTP)
    return {
        "id": member.id,
        "address": format_address(member.address),
        "gossip_addr": format_address(member.address),
        "http_addr": http if isinstance(http, str) else None,
        "status": member.status.name.lower(),
        "incarnation": member.incarnation,
        "self": member.id == self_id,
    }


class Cluster:
    """Builds and owns the gossip side of one node. Pass `replication` to `Node`; the HTTP layer uses the rest.

    ``http_addr`` is the address the API is really bound to (after resolving port 0), published to every member.
    """

    def __init__(self, config: ServerConfig, http_addr: str) -> None:
        self.config = config
        self.http_addr = http_addr
        self.gossip_config = gossip_config(config.timing)
        self.keyring = keyring_for(config.cluster_key)
        self.faults: FaultInjectingTransport | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.replication = GossipReplication(replication_config(config.timing, config.seeds), self._make_memberlist)
        self.member_events = MemberEvents(lambda: self.replication.core.node_id if self.replication.core else "")
        self.monitor = ConvergenceMonitor(self.replication)

    def _make_memberlist(self, delegate: Delegate, node_id: str) -> Memberlist:
        gc = self.gossip_config
        transport: Transport = AsyncioTransport(
            parse_address(self.config.gossip_addr, "gossip_addr"), self.keyring, gc.max_packet_bytes,
            gc.max_stream_bytes, stream_timeout_s=gc.stream_timeout_s,
        )
        if self.config.enable_fault_injection:
            self.faults = FaultInjectingTransport(transport)
            transport = self.faults
        memberlist = Memberlist(gc, node_id, transport, delegate=delegate, meta=encode_meta(self.http_addr))
        memberlist.member_listeners.append(self.member_events.record)
        return memberlist

    # -- views -------------------------------------------------------------------------------------------------------

    @property
    def memberlist(self) -> Memberlist:
        memberlist = self.replication.memberlist
        if memberlist is None:
            raise NodeNotRunningError("the cluster member is not started")
        return memberlist

    @property
    def gossip_address(self) -> str:
        return format_address(self.memberlist.transport.local_address)

    def members(self) -> list[dict[str, Any]]:
        try:
            memberlist = self.memberlist
            self_id = memberlist.local_member.id
            listed = memberlist.members()
        except (GossipError, NodeNotRunningError):
            return []
        return [member_view(m, self_id) for m in sorted(listed, key=lambda m: m.id)]

    def view(self) -> dict[str, Any]:
        """`GET /v1/cluster`: this node, every member it knows, and the replication runtime's state."""
        members = self.members()
        me = next((m for m in members if m["self"]), None)
        info = {k: v for k, v in self.replication.cluster_info().items() if k != "members"}
        blocked = sorted(format_address(a) for a in self.faults.blocked) if self.faults is not None else None
        return {"node": me, "members": members, "left": self._left(), "partitioned_from": blocked, **info}

    async def convergence(self) -> dict[str, Any]:
        """`GET /v1/cluster/convergence`: the monitor's report, each peer with its HTTP address."""
        report = await self.monitor.report()
        members = {m["id"]: m for m in self.members()}
        me = members.get(report["node"] or "", {})
        return report | {
            "status": me.get("status"), "incarnation": me.get("incarnation"), "gossip_address": me.get("gossip_addr"),
            "http_address": me.get("http_addr"),
            "peers": [peer | {"http_address": members.get(peer["id"], {}).get("http_addr")}
                      for peer in report["peers"]],
        }

    def _left(self) -> bool:
        try:
            return self.memberlist.membership.has_left
        except (GossipError, NodeNotRunningError):
            return False

    # -- operations ----------------------------------------------------------------------------------------------------

    async def leave(self) -> None:
        """Announce a graceful leave and wait until it has been gossiped out; the node keeps serving locally."""
        await self.memberlist.leave(timeout_s=max(1.0, 4 * self.gossip_config.gossip_interval_s))

    def partition(self, names: list[str]) -> list[str]:
        """Cut this node off from the named members (ids or gossip addresses); an empty list heals."""
        if self.faults is None:
            raise FaultInjectionDisabledError("fault injection is off (start the node with --enable-fault-injection)")
        addresses = []
        for name in names:
            member = self.memberlist.member(name)
            if member is not None:
                addresses.append(member.address)
                continue
            try:
                addresses.append(parse_address(name, "block"))
            except AddressError:
                raise UnknownPeerError(name) from None
        unblocked = sorted(self.faults.blocked - set(addresses))
        self.faults.block(addresses)
        if unblocked:
            # What memberlist's periodic reconnect would do within reconnect_interval_s, done now: a push-pull with
            # the peers we can reach again, so each side learns the other's verdict on it and refutes it at once.
            self._background(self._rejoin(unblocked))
        return sorted(format_address(a) for a in self.faults.blocked)

    async def _rejoin(self, addresses: list[Address]) -> None:
        with contextlib.suppress(GossipError, OSError):
            await self.memberlist.join(addresses)

    def _background(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- metrics -------------------------------------------------------------------------------------------------------

    def bind_metrics(self, metrics: Metrics) -> None:
        """Point the gossip hooks of `metrics` at live counters (read at scrape time, nothing to keep in sync)."""
        metrics.members.set_source(self._members_by_status)
        metrics.gossip_bytes.set_source(lambda: self._wire("bytes"))
        metrics.gossip_packets.set_source(lambda: self._wire("packets"))
        metrics.gossip_dropped.set_source(self._dropped)
        metrics.anti_entropy_exchanges.set_source(self._exchanges)
        metrics.replication_rejected.set_source(self._rejected)

    def _members_by_status(self) -> dict[tuple[str, ...], float]:
        counts: dict[tuple[str, ...], float] = {(s,): 0 for s in ("alive", "suspect", "dead", "left")}
        for member in self.members():
            counts[(member["status"],)] = counts.get((member["status"],), 0) + 1
        return counts

    def _wire(self, what: str) -> dict[tuple[str, ...], float]:
        memberlist = self.replication.memberlist
        if memberlist is None:
            return {}
        wire = memberlist.stats.transport
        if wire is None:  # a transport without wire counters: what the protocol handed over
            stats = memberlist.stats
            return {("in",): getattr(stats, f"{what}_in"), ("out",): getattr(stats, f"{what}_out")}
        if what == "bytes":  # datagrams plus stream frames (push-pull, joins, app requests), with sealing overhead
            return {("in",): wire.bytes_received + wire.stream_bytes_received,
                    ("out",): wire.bytes_sent + wire.stream_bytes_sent}
        return {("in",): wire.packets_received, ("out",): wire.packets_sent}

    def _dropped(self) -> dict[tuple[str, ...], float]:
        memberlist = self.replication.memberlist
        if memberlist is None:
            return {}
        reasons: dict[str, int] = dict(memberlist.stats.dropped)
        if memberlist.stats.transport is not None:
            for reason, n in memberlist.stats.transport.dropped.items():
                reasons[reason] = reasons.get(reason, 0) + n
        if self.faults is not None:
            for reason, n in self.faults.dropped.items():
                reasons[reason] = reasons.get(reason, 0) + n
        return {(reason,): n for reason, n in reasons.items()}

    def _exchanges(self) -> dict[tuple[str, ...], float]:
        core = self.replication.core
        if core is None:
            return {}
        complete = core.stats.syncs_complete
        return {("complete",): complete, ("incomplete",): max(0, core.stats.syncs_started - complete)}

    def _rejected(self) -> dict[tuple[str, ...], float]:
        core = self.replication.core
        return {} if core is None else {(reason,): n for reason, n in core.stats.rejected.items()}


__all__ = ["Cluster", "UnknownPeerError", "decode_meta", "encode_meta", "gossip_config", "keyring_for",
           "member_view", "replication_config"]
