"""Anti-entropy of big CRDT states by context rows: a key changed on both sides costs its difference both ways.

A flagged push of a big key goes as the key's causal context (`crdt.encode_context`: a few counters, however big
the set); each side answers a context with the CRDT's ``delta_since`` it (`ReplicaCore.get_blob_for_context`), so
two replicas of a 20k-element set that differ in a few elements exchange those elements, not the set. Only to a
peer whose member metadata says it reads context rows (`member_meta`): an older peer gets what it always got.
"""

from __future__ import annotations

import random
from typing import Any

import msgpack
import pytest
from replication_helpers import Replica, states

from rumor.gossip.anti_entropy import FEATURE_CONTEXTS, AntiEntropyMessageType
from rumor.gossip.anti_entropy.wire import decode_message, encode_message
from rumor.gossip.config import Config
from rumor.server.cluster import decode_meta, encode_meta
from rumor.server.replication import ReplicationConfig
from rumor.server.replication.member_meta import reads_context_rows
from rumor.server.replication.replica import sync_pair
from rumor.server.replication.simulation import ReplicatedSimulation
from rumor.server.replication.wire import Kind, kind_of, parse_open, parse_step, step_message
from rumor.server.updates import SetChange

OLD_FIELDS = {"s", "n", "g", "sk", "e", "d", "w", "k", "c", "m", "cw", "x"}
"""EXCHANGE fields a node predating context rows parses (it refuses any message with another)."""


def exchange_bodies(messages: list[bytes]) -> list[dict[str, Any]]:
    """The anti-entropy EXCHANGE bodies inside observed replication messages (OPEN, OPENED, STEP)."""
    out = []
    for message in messages:
        kind = kind_of(message)
        if kind in (Kind.OPEN, Kind.OPENED):
            inner = parse_open(message, kind)[0]
        elif kind is Kind.STEP:
            inner = parse_step(message)
        else:
            continue
        ae_kind, body = decode_message(inner, 1 << 24)
        if ae_kind == AntiEntropyMessageType.EXCHANGE:
            assert isinstance(body, dict)
            out.append(body)
    return out


def context_rows(messages: list[bytes]) -> list[tuple[str, bool]]:
    return [(row[0].decode(), row[2]) for body in exchange_bodies(messages) for row in body.get("cx", [])]


def synced_pair(elements: int, key: str = "big", seed: int = 7) -> tuple[Replica, Replica, list[int]]:
    """Two replicas holding the same ``elements``-element set (random integers) under ``key``."""
    base = random.Random(seed).sample(range(10**9), elements)
    a, b = Replica("a", seed=1), Replica("b", seed=2)
    a.keyspace.apply_local(key, SetChange(add=tuple(base)))
    sync_pair(b.core, a.core, 0.0)
    assert states(a.keyspace) == states(b.keyspace)
    return a, b, base


def change_both(a: Replica, b: Replica, base: list[int], key: str = "big") -> None:
    """Ten adds and three removes on each side, concurrently."""
    a.keyspace.apply_local(key, SetChange(add=tuple(f"a{i}" for i in range(10)), remove=tuple(base[:3])))
    b.keyspace.apply_local(key, SetChange(add=tuple(f"b{i}" for i in range(10)), remove=tuple(base[3:6])))


def whole_state_bytes(replica: Replica, key: str) -> int:
    return len(replica.core.encode_key(key) or b"")


def test_a_20k_set_changed_on_both_sides_syncs_in_a_tenth_of_one_state() -> None:
    a, b, base = synced_pair(20_000)
    change_both(a, b, base)
    whole = max(whole_state_bytes(a, "big"), whole_state_bytes(b, "big"))
    messages: list[bytes] = []
    session = sync_pair(a.core, b.core, 1.0, observe=messages.append)
    assert session.outcome is not None and session.outcome.complete
    assert states(a.keyspace) == states(b.keyspace)
    item = a.keyspace.item("big")
    assert item is not None
    assert {*(f"a{i}" for i in range(10)), *(f"b{i}" for i in range(10))} <= set(item.value)
    assert not set(base[:6]) & set(item.value) and len(item.value) == 20_000 + 20 - 6
    assert sum(map(len, messages)) < whole / 10, (sum(map(len, messages)), whole)
    # one question, one answer, never a ping-pong
    assert sorted(context_rows(messages)) == [("big", False), ("big", True)]


def test_a_small_key_still_goes_as_a_whole_state() -> None:
    a, b, base = synced_pair(50, key="small")
    change_both(a, b, base, key="small")
    assert whole_state_bytes(a, "small") < a.core.ae_config.context_min_bytes
    messages: list[bytes] = []
    sync_pair(a.core, b.core, 1.0, observe=messages.append)
    assert states(a.keyspace) == states(b.keyspace)
    assert context_rows(messages) == []


@pytest.mark.parametrize("initiator", ["holder", "other"])
def test_a_big_key_only_one_side_holds_crosses_once(initiator: str) -> None:
    a, b, _ = synced_pair(100, key="shared")
    a.keyspace.apply_local("only-a", SetChange(add=tuple(range(20_000))))
    whole = whole_state_bytes(a, "only-a")
    messages: list[bytes] = []
    first, second = (a, b) if initiator == "holder" else (b, a)
    session = sync_pair(first.core, second.core, 1.0, observe=messages.append)
    assert session.outcome is not None and session.outcome.complete
    assert states(a.keyspace) == states(b.keyspace)
    assert whole < sum(map(len, messages)) < whole + 4096


def test_a_garbled_context_row_is_refused_and_changes_nothing() -> None:
    a, b, base = synced_pair(20_000)
    change_both(a, b, base)
    before, merged = states(b.keyspace), b.core.stats.states_merged
    for key in (b"big", b"unknown"):
        for context in (b"\x93garbage", msgpack.packb({"not": "a context"})):
            request = encode_message(AntiEntropyMessageType.EXCHANGE,
                                     {"s": 0, "ft": FEATURE_CONTEXTS, "cx": [[key, context, False]]})
            reply = parse_step(b.core.handle_request(step_message(request), "a", 1.0))
            assert decode_message(reply, 1 << 20) == (AntiEntropyMessageType.ERROR, {"reason": "context_rejected"})
    assert b.core.responder.stats.errors == {"context_rejected": 4}
    assert states(b.keyspace) == before and b.core.stats.states_merged == merged
    # and a session afterwards is unharmed
    sync_pair(a.core, b.core, 2.0)
    assert states(a.keyspace) == states(b.keyspace)


def test_a_peer_not_known_to_read_context_rows_gets_none() -> None:
    """An older peer refuses any message with a field it does not know: it gets only fields it knows, and the
    key is repaired as before (one whole state, then only what that state lacks)."""
    a, b, base = synced_pair(20_000)
    change_both(a, b, base)
    whole = whole_state_bytes(a, "big")
    messages: list[bytes] = []
    sync_pair(a.core, b.core, 1.0, observe=messages.append, contexts=False)
    assert states(a.keyspace) == states(b.keyspace)
    assert all(set(body) <= OLD_FIELDS for body in exchange_bodies(messages))
    assert whole < sum(map(len, messages)) < whole + 4096


def test_a_core_sends_rows_only_to_peers_it_is_told_read_them() -> None:
    told: list[str] = []

    def reads(peer: str) -> bool:
        told.append(peer)
        return peer == "b"

    a, b, base = synced_pair(20_000)
    a.core.peer_reads_contexts = reads
    change_both(a, b, base)
    for peer, expected in (("c", False), ("b", True)):
        session, opening = a.core.start_sync(peer, 1.0)
        reply = b.core.handle_request(opening, "a", 1.0)
        request = session.receive(reply, 1.0)
        assert request is not None
        assert ("ft" in exchange_bodies([request])[0]) is expected
        session.fail("test over", 1.0)
        a.core.sync_finished(session)
    assert told == ["c", "b"]


def test_member_metadata_says_who_reads_context_rows() -> None:
    meta = encode_meta("127.0.0.1:7000")
    assert reads_context_rows(meta) and decode_meta(meta)["http"] == "127.0.0.1:7000"
    older = msgpack.packb({"http": "127.0.0.1:7000"})
    for other in (older, b"", b"\xc1", msgpack.packb([1]), msgpack.packb({"reads": "ae-cx"})):
        assert not reads_context_rows(other)


def test_simulated_replicas_learn_from_metadata_and_repair_a_big_set_by_context_rows() -> None:
    cluster = ReplicatedSimulation(3, seed=5, config=ReplicationConfig(sync_interval_s=1.0), gossip_config=Config.lan())
    cluster.sim.form_cluster()
    first, second, third = cluster.nodes
    cluster.update(first, "big", SetChange(add=tuple(range(5_000))))
    assert cluster.settle(60.0), cluster.describe()
    cluster.sim.partition([first], [second, third])
    cluster.update(first, "big", SetChange(add=("first",), remove=(1,)))
    cluster.update(second, "big", SetChange(add=("second",), remove=(2,)))
    cluster.run_for(5.0)
    cluster.heal_all()
    assert cluster.settle(60.0), cluster.describe()
    item = cluster.keyspaces[third.id].item("big")
    assert item is not None and {"first", "second"} <= set(item.value) and not {1, 2} & set(item.value)
    assert sum(cluster.core(node).responder.stats.contexts_received for node in cluster.nodes) > 0
