"""The replication core on gossip's virtual-time `Simulation`: whole clusters with seeded faults, in milliseconds.

Each simulated process gets a `ReplicaApp` (a gossip `Delegate` with its own timer) driving a `ReplicaCore` over a
`Keyspace`. The keyspaces live in `ReplicatedSimulation`, outside the processes, which models durable storage: a
crash loses the process (its replication state, its unsent batch) but a restart finds every write it acknowledged.
Pushes that fit ``datagram_bytes`` go as datagrams (subject to the fault plan's drop/duplicate/delay); bigger
pushes and anti-entropy sessions go over the simulator's reliable-but-partitionable streams.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgpack

from rumor.gossip.config import Config
from rumor.gossip.delegate import Delegate
from rumor.gossip.errors import GossipError
from rumor.gossip.member import Member
from rumor.gossip.sim_network import FaultPlan
from rumor.gossip.simulation import SimNode, Simulation
from rumor.server.hlc_source import HLCSource
from rumor.server.keyspace import Keyspace
from rumor.server.replication.config import ReplicationConfig
from rumor.server.replication.errors import ReplicationProtocolError
from rumor.server.replication.member_meta import advertised, reads_context_rows
from rumor.server.replication.replica import KeyspaceStore, ReplicaCore
from rumor.server.replication.sync import SyncInitiator
from rumor.server.updates import Update


class RequestRefusedError(GossipError):
    """The replica refused an app request (malformed or unmergeable); the requester sees an error reply."""


class ReplicaApp(Delegate):
    def __init__(self, node: SimNode, cluster: ReplicatedSimulation) -> None:
        self.node = node
        self.cluster = cluster
        self.keyspace = cluster.keyspace_of(node.id)
        boots = cluster.boots[node.id] = cluster.boots.get(node.id, 0) + 1
        sim = node.sim
        self.core = ReplicaCore(node.id, KeyspaceStore(self.keyspace), cluster.config,
                                sim.rng.__class__(sim.rng.getrandbits(64)), sim.clock.now(), epoch=boots,
                                peer_reads_contexts=self._peer_reads_contexts)
        old = cluster.unsubscribe.pop(node.id, None)
        if old is not None:
            old()
        cluster.unsubscribe[node.id] = self.keyspace.subscribe(self.core.on_local)

    # -- timers ------------------------------------------------------------------------------------------------------

    def next_deadline(self) -> float | None:
        return self.core.next_deadline()

    def _peer_reads_contexts(self, member_id: str) -> bool:
        """As in production: from the member's metadata (`member_meta`), as this process's membership sees it."""
        member = self.node.membership.member(member_id)
        return member is not None and reads_context_rows(member.meta)

    def _live(self) -> list[str]:
        return [m.id for m in self.node.membership.alive_members()]

    def tick(self, now: float) -> None:
        result = self.core.tick(now, self._live())
        limit = self.cluster.config.datagram_bytes
        for member, payload in result.pushes:
            try:
                if len(payload) <= limit:
                    self.node.send_to(member, payload)
                else:
                    self.node.request(member, payload, self.cluster.config.request_timeout_s, _ignore)
            except GossipError:
                continue
        if result.sync_with is not None:
            try:
                session, request = self.core.start_sync(result.sync_with, now)
            except GossipError:
                return
            self._step(session, request)

    def _step(self, session: SyncInitiator, request: bytes) -> None:
        def done(reply: bytes | None, error: str | None) -> None:
            now = self.node.sim.clock.now()
            if reply is None:
                session.fail(error or "failed", now)
                self.core.sync_finished(session)
                return
            following = session.receive(reply, now)
            if following is not None:
                self._step(session, following)
                return
            self.core.sync_finished(session)
            if session.done_message is not None:
                self._request(session.peer, session.done_message, _ignore)

        if not self._request(session.peer, request, done):
            session.fail("peer gone", self.node.sim.clock.now())
            self.core.sync_finished(session)

    def _request(self, member: str, payload: bytes, on_done: Callable[[bytes | None, str | None], None]) -> bool:
        try:
            self.node.request(member, payload, self.cluster.config.request_timeout_s, on_done)
        except GossipError:
            return False
        return True

    # -- delegate hooks ---------------------------------------------------------------------------------------------

    def notify_message(self, payload: bytes, sender: str) -> None:
        self.core.handle_message(payload, sender, self.node.sim.clock.now())
        self.node.sim.wake(self.node)

    async def handle_request(self, payload: bytes, sender: str) -> bytes:
        try:
            reply = self.core.handle_request(payload, sender, self.node.sim.clock.now())
        except ReplicationProtocolError as exc:
            raise RequestRefusedError(str(exc)) from None
        self.node.sim.wake(self.node)
        return reply

    def notify_leave(self, member: Member) -> None:
        self.node.sim.wake(self.node)


def _ignore(reply: bytes | None, error: str | None) -> None:
    return None


def encoded_states(keyspace: Keyspace) -> dict[str, bytes]:
    """Every key's type and deterministic encoding: equal dicts mean byte-identical replicas."""
    out = {}
    for key in keyspace:
        entry = keyspace.entry(key)
        assert entry is not None
        out[key] = entry.type_name.encode() + b"\0" + entry.encoded()
    return out


class ReplicatedSimulation:
    """N replicas on one `Simulation`; keyspaces persist across crash/restart (they model durable storage)."""

    def __init__(self, n: int, seed: int = 0, config: ReplicationConfig | None = None,
                 gossip_config: Config | None = None, faults: FaultPlan | None = None) -> None:
        self.config = config or ReplicationConfig()
        self.keyspaces: dict[str, Keyspace] = {}
        self.boots: dict[str, int] = {}
        self.unsubscribe: dict[str, Callable[[], None]] = {}
        self.sim = Simulation(0, gossip_config or Config.lan(), seed, faults,
                              delegate_factory=lambda node: ReplicaApp(node, self))
        meta = msgpack.packb(advertised())  # what a node publishes of itself, as `server.cluster` does
        for _ in range(n):
            self.sim.add_node(meta=meta)

    @property
    def seed(self) -> int:
        return self.sim.seed

    @property
    def nodes(self) -> list[SimNode]:
        return self.sim.nodes

    def keyspace_of(self, node_id: str) -> Keyspace:
        keyspace = self.keyspaces.get(node_id)
        if keyspace is None:
            clock = self.sim.clock if hasattr(self, "sim") else None
            keyspace = Keyspace(node_id, HLCSource(lambda: int((clock or self.sim.clock).now() * 1000)))
            self.keyspaces[node_id] = keyspace
        return keyspace

    def app(self, node: SimNode) -> ReplicaApp:
        assert isinstance(node.app, ReplicaApp)
        return node.app

    def core(self, node: SimNode) -> ReplicaCore:
        return self.app(node).core

    def update(self, node: SimNode, key: str, update: Update, op_id: str | None = None) -> Any:
        """A local update on ``node`` (acknowledged once this returns: in the simulator, the keyspace is storage);
        an `op_id` as `server.node.Node` passes one (a counter increment keyed by it counts once cluster-wide)."""
        item = self.keyspaces[node.id].apply_local(key, update, op_id=op_id).item
        self.sim.wake(node)
        return item

    def run_for(self, seconds: float) -> None:
        self.sim.run_for(seconds)

    def states(self, node: SimNode) -> dict[str, bytes]:
        return encoded_states(self.keyspaces[node.id])

    def converged(self, nodes: list[SimNode] | None = None) -> bool:
        group = nodes if nodes is not None else self.sim.up_nodes()
        if not group:
            return True
        first = self.states(group[0])
        return all(self.states(n) == first for n in group[1:])

    def heal_all(self) -> None:
        """Remove every fault (partitions, loss, duplication) so the cluster can converge."""
        self.sim.heal()
        faults = self.sim.faults
        faults.drop_rate = 0.0
        faults.duplicate_rate = 0.0

    def settle(self, max_s: float, check_every_s: float = 1.0) -> bool:
        """Run until membership agrees and every up replica holds the same states, within ``max_s`` virtual seconds."""
        return self.sim.run_until_true(lambda: self.sim.converged() and self.converged(), max_s, check_every_s)

    def describe(self) -> str:
        return f"seed={self.seed} n={len(self.nodes)} t={self.sim.clock.now():.1f}"


__all__ = ["ReplicaApp", "ReplicatedSimulation", "RequestRefusedError"]
