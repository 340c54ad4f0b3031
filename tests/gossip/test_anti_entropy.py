"""Anti-entropy sessions: byte costs (idle, d differences), push-pull convergence, bounded messages, garbage peers."""

from __future__ import annotations

import random
from hashlib import blake2b

import msgpack
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from rumor.gossip.anti_entropy import (
    AntiEntropyConfig,
    AntiEntropyMergeError,
    AntiEntropyMessageType,
    AntiEntropyPeerError,
    AntiEntropyProtocolError,
    AntiEntropyResponder,
    AntiEntropySession,
    MerkleTree,
    Reassembler,
    run_session,
    state_digest,
)
from rumor.gossip.anti_entropy.wire import MAX_CONTEXT_BYTES, MAX_CONTEXT_KEY_BYTES, MAX_FEATURES
from rumor.gossip.errors import GossipError


class GSetReplica:
    """A keyspace of grow-only sets encoded deterministically (sorted, comma-joined): a real join, so both
    "one side dominates" and "concurrent edits" happen."""

    def __init__(self, items: dict[bytes, bytes] | None = None, fanout: int = 8, depth: int = 5,
                 sized: bool = True) -> None:
        self.data = dict(items or {})
        self.sized = sized  # False: the tree gets no size hints, so leaves are listed by entry tags
        self.tree = MerkleTree.from_items(((k, state_digest(v), len(v) * sized) for k, v in self.data.items()), fanout,
                                          depth)
        self.merges = 0

    def get_state(self, key: bytes) -> bytes | None:
        return self.data.get(key)

    def merge(self, key: bytes, state: bytes) -> None:
        self.merges += 1
        old = self.data.get(key)
        new = state if old is None else b",".join(sorted(set(old.split(b",")) | set(state.split(b","))))
        self.put(key, new)

    def put(self, key: bytes, state: bytes) -> None:
        self.data[key] = state
        self.tree.set(key, state_digest(state), len(state) if self.sized else 0)

    def add(self, key: bytes, element: bytes) -> None:
        old = self.data.get(key)
        self.put(key, element if old is None else b",".join(sorted(set(old.split(b",")) | {element})))


def keyspace(n: int, seed: int) -> dict[bytes, bytes]:
    """n keys with 64-200 byte states, like the bench."""
    rng = random.Random(seed)
    return {b"key:%07d" % i: rng.randbytes(rng.randint(32, 100)).hex().encode() for i in range(n)}


def sync(a: GSetReplica, b: GSetReplica, seed: int = 0, config: AntiEntropyConfig | None = None,
         check_limit: bool = True) -> tuple[AntiEntropySession, AntiEntropyResponder, list[bytes]]:
    """One session a -> b, recording every message so tests can check sizes."""
    config = config or AntiEntropyConfig()
    session = AntiEntropySession(a.tree, a.get_state, a.merge, random.Random(seed), config)
    responder = AntiEntropyResponder(b.tree, b.get_state, b.merge, config)
    messages: list[bytes] = []
    request: bytes | None = session.start()
    while request is not None:
        reply = responder.handle(request)
        messages += [request, reply]
        request = session.receive(reply)
    if check_limit:
        assert max(len(m) for m in messages) <= config.max_message_bytes
    return session, responder, messages


def converged(a: GSetReplica, b: GSetReplica) -> bool:
    return a.data == b.data and a.tree.root() == b.tree.root()


@pytest.fixture(scope="module")
def base_20k() -> dict[bytes, bytes]:
    return keyspace(20_000, seed=1)


def test_converged_replicas_exchange_only_the_root(base_20k: dict[bytes, bytes]) -> None:
    a, b = GSetReplica(base_20k), GSetReplica(base_20k)
    session, _, messages = sync(a, b)
    assert [m[0] for m in messages] == [AntiEntropyMessageType.HELLO, AntiEntropyMessageType.IN_SYNC]
    total = session.stats.bytes_sent + session.stats.bytes_received
    assert total == sum(map(len, messages)) < 2048
    assert total < 100  # the idle cost does not depend on the key count: HELLO + IN_SYNC
    assert a.merges == b.merges == 0


@pytest.mark.parametrize("newer", ["initiator", "responder"])
def test_d_differences_cost_about_d_states(base_20k: dict[bytes, bytes], newer: str) -> None:
    a, b = GSetReplica(base_20k), GSetReplica(base_20k)
    rng = random.Random(7)
    changed = rng.sample(sorted(base_20k), 100)
    side = a if newer == "initiator" else b
    for key in changed:
        side.add(key, b"new-%d" % rng.randrange(10**6))
    state_bytes = sum(len(side.data[k]) for k in changed)
    session, _, _ = sync(a, b)
    assert converged(a, b)
    total = session.stats.bytes_sent + session.stats.bytes_received
    full_state = sum(len(k) + len(v) for k, v in side.data.items())
    assert state_bytes < total < 3 * state_bytes, (total, state_bytes)
    assert total < 0.01 * full_state * 5  # 20k keys here: at 100k keys the same cost is < 0.01x (see the bench)
    assert session.stats.rounds <= 7  # 6, plus one where a sketch finds several differing children (one level)


def test_both_directions_are_repaired_in_one_session() -> None:
    base = keyspace(3000, seed=2)
    a, b = GSetReplica(base), GSetReplica(base)
    a.put(b"only-a", b"x")
    b.put(b"only-b", b"y")
    for i in range(0, 3000, 97):
        key = b"key:%07d" % i
        a.add(key, b"from-a")
        b.add(key, b"from-b")
    session, responder, _ = sync(a, b)
    assert converged(a, b)
    assert b"from-a" in b.data[b"key:0000000"] and b"from-b" in a.data[b"key:0000000"]
    assert session.stats.states_received > 0 and responder.stats.states_received > 0
    assert not session.incomplete and session.done and session.aborted is None
    # A second session finds nothing left to do.
    _, _, messages = sync(a, b, seed=1)
    assert len(messages) == 2


edits = st.lists(st.tuples(st.sampled_from("ab"), st.integers(0, 60), st.integers(0, 5)), max_size=80)


@settings(max_examples=40)
@given(edits=edits, seed=st.integers(0, 2**16), limit=st.sampled_from([4096, 8192, 65536]), sized=st.booleans())
def test_one_session_converges_any_two_keyspaces(edits: list[tuple[str, int, int]], seed: int, limit: int,
                                                 sized: bool) -> None:
    a, b = GSetReplica(fanout=4, depth=3, sized=sized), GSetReplica(fanout=4, depth=3, sized=sized)
    for side, key, element in edits:
        (a if side == "a" else b).add(b"k%d" % key, b"e%d" % element)
    session, _, _ = sync(a, b, seed, AntiEntropyConfig(max_message_bytes=limit))
    assert converged(a, b), f"seed={seed}"
    assert not session.incomplete


@settings(max_examples=25)
@given(changes=st.lists(st.tuples(st.sampled_from("ab"), st.integers(0, 1999)), min_size=1, max_size=60),
       seed=st.integers(0, 2**16), sized=st.booleans())
def test_sketched_descent_converges_dense_or_sparse(changes: list[tuple[str, int]], seed: int, sized: bool) -> None:
    """fanout 8, depth 3 and 2,000 keys: sparse levels go by sketches, several differing children by full groups;
    ~4 keys a leaf, so unsized trees list most leaves by entry tags."""
    base = {b"k%d" % i: b"v%d" % i for i in range(2000)}
    a, b = GSetReplica(base, fanout=8, depth=3, sized=sized), GSetReplica(base, fanout=8, depth=3, sized=sized)
    for side, key in changes:
        (a if side == "a" else b).add(b"k%d" % key, side.encode())
    session, _, _ = sync(a, b, seed)
    assert converged(a, b), f"seed={seed}"
    assert not session.incomplete


def test_sparse_levels_go_by_sketches_and_several_differing_children_by_groups(
        base_20k: dict[bytes, bytes]) -> None:
    a, b = GSetReplica(base_20k), GSetReplica(base_20k)
    for key in random.Random(8).sample(sorted(base_20k), 100):
        b.add(key, b"new")
    _, _, messages = sync(a, b)
    bodies = [msgpack.unpackb(m[1:]) for m in messages[1:]]
    assert any("sk" in body for body in bodies[2:])  # below the dense top levels
    assert any("d" in body for body in bodies[::2])  # the initiator asked for a full group where a sketch failed
    assert converged(a, b)


def test_without_size_hints_a_key_travels_once_per_direction_it_needs() -> None:
    """Entry-tag listings: the side diffing them pushes at once; a want for a key it just pushed is not answered
    twice (the push-back already carries the merged state)."""
    base = keyspace(3000, seed=6)
    for newer in ("initiator", "responder"):
        a, b = GSetReplica(base, sized=False), GSetReplica(base, sized=False)
        changed = sorted(base)[::60]
        for key in changed:
            (a if newer == "initiator" else b).add(key, b"new")
        a.put(b"only-a", b"1")
        b.put(b"only-b", b"2")
        session, responder, _ = sync(a, b)
        assert converged(a, b) and not session.incomplete
        sent = session.stats.states_sent + responder.stats.states_sent
        # responder newer: one transfer a key; initiator newer: the responder's stale push and the push-back
        assert sent == len(changed) * (1 if newer == "responder" else 2) + 2, (newer, sent)


def test_a_huge_value_travels_in_bounded_chunks_both_ways() -> None:
    rng = random.Random(3)
    big_a = b",".join(sorted(b"%08x" % rng.getrandbits(32) for _ in range(60_000)))  # ~540 KB
    big_b = b",".join(sorted(b"%08x" % rng.getrandbits(32) for _ in range(30_000)))
    a, b = GSetReplica({b"small": b"1"}), GSetReplica({b"small": b"1"})
    a.put(b"big", big_a)
    b.put(b"big", big_b)
    b.put(b"big-b-only", big_b)
    config = AntiEntropyConfig(max_message_bytes=16 * 1024)
    session, _, messages = sync(a, b, config=config)
    assert converged(a, b) and not session.incomplete
    assert max(map(len, messages)) <= 16 * 1024
    assert len(a.data[b"big"]) > len(big_a)


def test_a_session_and_a_responder_can_share_one_reassembly_budget() -> None:
    """A node's sessions and its responder may be given one `Reassembler`: chunked states still arrive both ways."""
    rng = random.Random(4)
    a, b, c = (GSetReplica({name: b",".join(sorted(b"%08x" % rng.getrandbits(32) for _ in range(20_000)))})
               for name in (b"big-a", b"big-b", b"big-c"))
    shared = Reassembler(max_buffer_bytes=1 << 20)
    config = AntiEntropyConfig(max_message_bytes=8 * 1024)
    # a's session takes big-b in chunks, then a's responder takes big-c in chunks: both through `shared`.
    run_session(AntiEntropySession(a.tree, a.get_state, a.merge, random.Random(0), config, reassembler=shared),
                AntiEntropyResponder(b.tree, b.get_state, b.merge, config))
    responder = AntiEntropyResponder(a.tree, a.get_state, a.merge, config, reassembler=shared)
    run_session(AntiEntropySession(c.tree, c.get_state, c.merge, random.Random(1), config), responder)
    assert converged(a, c) and set(a.data) == {b"big-a", b"big-b", b"big-c"}
    assert responder.stats.states_received == 1
    assert shared.pending_transfers == 0 and shared.reserved_bytes == 0


def test_fresh_node_catches_up_in_bounded_steps() -> None:
    full = GSetReplica(keyspace(4000, seed=4), fanout=4, depth=4)
    fresh = GSetReplica(fanout=4, depth=4)
    config = AntiEntropyConfig(max_message_bytes=8 * 1024)
    session, responder, messages = sync(fresh, full, config=config)
    assert converged(fresh, full)
    assert max(map(len, messages)) <= 8 * 1024
    state_bytes = sum(len(k) + len(v) for k, v in full.data.items())
    assert sum(map(len, messages)) < 1.5 * state_bytes
    assert responder.stats.dropped_items == 0 and not session.incomplete


# -- garbage and refusals -------------------------------------------------------------------------------------


def started_session(a: GSetReplica) -> AntiEntropySession:
    session = AntiEntropySession(a.tree, a.get_state, a.merge, random.Random(0))
    session.start()
    return session


def exchange(body: dict[str, object]) -> bytes:
    return bytes([AntiEntropyMessageType.EXCHANGE]) + msgpack.packb(body, use_bin_type=True)


@pytest.mark.parametrize(
    "reply",
    [
        b"",
        b"\xff\x00",
        bytes([AntiEntropyMessageType.EXCHANGE]) + b"\xc1",
        bytes([AntiEntropyMessageType.HELLO]) + msgpack.packb({}),
        exchange({"k": [[b"stolen", b"state", True]], "g": [[9, b"\x00" * 26]]}),  # bad level
        exchange({"k": [[b"stolen", b"state", True]], "g": [[1, b"\x00" * 5]]}),  # bad record width
        exchange({"k": [[b"stolen", b"state", 1]]}),  # flag not a bool
        exchange({"k": [[b"stolen", b"state", True]], "e": b"\x00"}),  # truncated entries
        exchange({"k": [[b"stolen", b"state", True]], "e": b"\x00\x00\xc0"}),  # unknown listing form
        exchange({"k": [[b"stolen", b"state", True]], "zz": 1}),  # unknown field
        exchange({"k": [[b"stolen", b"state", True]], "c": [[b"big", True, [b"x" * 16, 0, 1, 3, b"12345678",
                                                                            b"abc"]]]}),  # bad checksum
        exchange({"k": [[b"stolen", b"state", True]], "d": [[1, b"\x00\x09"]]}),  # node out of range
        exchange({"k": [[b"stolen", b"state", True]], "sk": [[2, b"\x00" * 13]]}),  # bad sketch width
        exchange({"k": [[b"stolen", b"state", True]], "sk": [[1, b"\x00\x01" + b"\x00" * 12]]}),  # bad parent
        # context rows and the features field, appended later: checked as strictly as the rest
        exchange({"k": [[b"stolen", b"state", True]], "cx": [[b"big", b"ctx"]]}),  # row of two fields
        exchange({"k": [[b"stolen", b"state", True]], "cx": [["big", b"ctx", False]]}),  # key not bytes
        exchange({"k": [[b"stolen", b"state", True]], "cx": [[b"big", "ctx", False]]}),  # context not bytes
        exchange({"k": [[b"stolen", b"state", True]], "cx": [[b"big", b"ctx", 1]]}),  # answer flag not a bool
        exchange({"k": [[b"stolen", b"state", True]], "cx": [[b"k" * (MAX_CONTEXT_KEY_BYTES + 1), b"c", False]]}),
        exchange({"k": [[b"stolen", b"state", True]], "cx": [[b"big", b"c" * (MAX_CONTEXT_BYTES + 1), False]]}),
        exchange({"k": [[b"stolen", b"state", True]], "cx": {b"big": b"ctx"}}),  # not a list of rows
        exchange({"k": [[b"stolen", b"state", True]], "ft": -1}),  # features out of range
        exchange({"k": [[b"stolen", b"state", True]], "ft": MAX_FEATURES}),
        exchange({"k": [[b"stolen", b"state", True]], "ft": True}),  # a bool is no feature set
    ],
)
def test_garbage_reply_aborts_the_session_and_merges_nothing(reply: bytes) -> None:
    a = GSetReplica({b"k": b"v"})
    session = started_session(a)
    with pytest.raises(AntiEntropyProtocolError) as info:
        session.receive(reply)
    assert isinstance(info.value, GossipError) and isinstance(info.value, ValueError)
    assert session.done and session.aborted is info.value
    assert a.merges == 0 and b"stolen" not in a.data
    with pytest.raises(AntiEntropyProtocolError, match="not_running"):
        session.receive(reply)


def test_responder_answers_garbage_with_an_error_and_counts_it() -> None:
    b = GSetReplica({b"k": b"v"})
    responder = AntiEntropyResponder(b.tree, b.get_state, b.merge)
    reply = responder.handle(b"\x43garbage")
    assert reply[0] == AntiEntropyMessageType.ERROR
    assert responder.stats.errors == {"undecodable": 1}
    reply = responder.handle(exchange({"k": [[b"k", b"evil", True]]}))  # no slice offset: not a valid request
    assert reply[0] == AntiEntropyMessageType.ERROR and b.merges == 0
    session = started_session(GSetReplica())
    with pytest.raises(AntiEntropyPeerError, match="malformed_exchange"):
        session.receive(reply)


def test_shape_mismatch_is_refused() -> None:
    a, b = GSetReplica({b"k": b"1"}, fanout=4, depth=3), GSetReplica({b"k": b"2"})
    with pytest.raises(AntiEntropyPeerError, match="shape_mismatch"):
        sync(a, b)


def test_states_the_caller_rejects_abort_before_any_merge() -> None:
    a, b = GSetReplica({b"k1": b"1", b"k2": b"2"}), GSetReplica({b"k1": b"x", b"k2": b"y"})

    def check(key: bytes, state: bytes) -> None:
        if b"y" in state:
            raise ValueError("not a valid set")

    session = AntiEntropySession(a.tree, a.get_state, a.merge, random.Random(0), check=check)
    responder = AntiEntropyResponder(b.tree, b.get_state, b.merge)
    with pytest.raises(AntiEntropyMergeError):
        run_session(session, responder)
    assert a.data == {b"k1": b"1", b"k2": b"2"} and a.merges == 0


def test_config_is_validated() -> None:
    with pytest.raises(GossipError):
        AntiEntropyConfig(max_message_bytes=100)
    with pytest.raises(ValueError, match="hash_bytes"):
        AntiEntropyConfig(hash_bytes=1)


big_edits = st.lists(
    st.tuples(st.sampled_from("ab"), st.integers(0, 20), st.integers(0, 3), st.integers(0, 2500)), max_size=12
)


@settings(max_examples=15)
@given(edits=big_edits, seed=st.integers(0, 2**16))
# Shrunk failures, pinned: a request that could never carry a leaf listing whose estimated reply was too big,
# and two keys with equal big states that shared one chunk transfer.
@example(edits=[("a", 1, 0, 0), ("b", 0, 0, 878)], seed=0)
@example(edits=[("b", 0, 0, 884), ("b", 1, 0, 884)], seed=0)
def test_sessions_with_big_states_converge_within_the_limit(edits: list[tuple[str, int, int, int]], seed: int) -> None:
    a, b = GSetReplica(fanout=4, depth=3), GSetReplica(fanout=4, depth=3)
    for side, key, element, pad in edits:
        (a if side == "a" else b).add(b"k%d" % key, b"e%d-" % element + b"p" * pad * 4)  # up to 10 KB states
    session, _, _ = sync(a, b, seed, AntiEntropyConfig(max_message_bytes=4096))
    assert converged(a, b), f"seed={seed}"
    assert not session.incomplete


def test_replayed_requests_are_harmless() -> None:
    """A driver that retries a request (timeout, reconnect) must not corrupt anything: merges are joins."""
    base = keyspace(500, seed=5)
    a, b = GSetReplica(base, fanout=4, depth=3), GSetReplica(base, fanout=4, depth=3)
    for i in range(0, 500, 7):
        a.add(b"key:%07d" % i, b"a")
        b.add(b"key:%07d" % (i + 3), b"b")
    session = AntiEntropySession(a.tree, a.get_state, a.merge, random.Random(1))
    responder = AntiEntropyResponder(b.tree, b.get_state, b.merge)
    request = session.start()
    while request is not None:
        responder.handle(request)
        request = session.receive(responder.handle(request))
    assert converged(a, b)


def test_random_pairwise_sessions_converge_a_small_cluster() -> None:
    rng = random.Random(11)
    replicas = [GSetReplica(fanout=4, depth=3) for _ in range(4)]
    for _ in range(300):
        rng.choice(replicas).add(b"k%d" % rng.randrange(80), b"e%d" % rng.randrange(1000))
    for round_no in range(6):
        for i, replica in enumerate(replicas):
            peer = replicas[(i + 1 + round_no) % len(replicas)]
            if peer is not replica:
                sync(replica, peer, seed=rng.randrange(2**16))
    assert all(converged(replicas[0], r) for r in replicas[1:])


@pytest.mark.parametrize("bad_part", [{"w": b"\x00\x00\x00"}, {"ft": 1, "cx": [[b"k", b"ctx", "yes"]]}],
                         ids=["want", "context-row"])
def test_responder_merges_nothing_from_a_request_with_a_bad_part(bad_part: dict[str, object]) -> None:
    b = GSetReplica({b"k": b"v"})
    responder = AntiEntropyResponder(b.tree, b.get_state, b.merge)
    reply = responder.handle(exchange({"s": 0, "k": [[b"k", b"evil", True]], **bad_part}))
    assert reply[0] == AntiEntropyMessageType.ERROR
    assert b.data == {b"k": b"v"} and b.merges == 0
    assert responder.stats.errors == {"malformed_exchange": 1}


def test_wire_format_is_pinned() -> None:
    """Golden bytes: a change to the anti-entropy encoding must be deliberate (bump PROTOCOL_VERSION)."""
    a = GSetReplica({b"k%d" % i: b"v%d" % i for i in range(40)}, fanout=4, depth=3)
    b = GSetReplica({b"k%d" % i: b"v%d" % (i % 37) for i in range(45)}, fanout=4, depth=3)
    _, _, messages = sync(a, b, seed=3)
    assert messages[0].hex() == (
        "4187a14403a16604a16e28a172c410bcbfa8fa33b59be1ed9e19e92066cc49a17303a17602a17703"
    )
    assert len(messages) == 8
    assert blake2b(b"".join(messages), digest_size=16).hexdigest() == "e9f909a8def2994fcc586ff260f565b1"
