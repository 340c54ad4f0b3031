"""The bulk walk on its own (`gossip.anti_entropy.bulk`): a stateless responder answering cursor requests, leaves
both hold alike skipped, a leaf split across replies resumed where it stopped, and a state too big for any reply
left to the descent."""

from __future__ import annotations

from rumor.gossip.anti_entropy import BulkWalk, MerkleTree, answer_bulk, should_walk, state_digest
from rumor.gossip.anti_entropy.bulk import STATES_A_READ
from rumor.gossip.anti_entropy.wire import decode_message

MAX = 4096  # the smallest message: leaves split across replies


def _tree(states: dict[bytes, bytes]) -> MerkleTree:
    tree = MerkleTree(8, 3)
    for key, state in states.items():
        tree.set(key, state_digest(state), len(state))
    return tree


def _walk(mine: MerkleTree, theirs: MerkleTree, states: dict[bytes, bytes]) -> tuple[list[bytes], int]:
    walk = BulkWalk(mine, salt=5, width=3)
    got: list[bytes] = []
    while not walk.done:
        _, request = decode_message(walk.request(), MAX)
        reply, count, _size = answer_bulk(theirs, states.get, request, 3, MAX)
        assert len(reply) <= MAX
        _, body = decode_message(reply, MAX)
        rows = walk.absorb(body).rows
        assert len(rows) == count
        got += [key for key, _ in rows]
    return got, walk.requests


def test_a_walk_brings_every_key_of_every_leaf_that_differs_once() -> None:
    states = {f"k{i:04d}".encode(): bytes(40 + i % 50) for i in range(3000)}
    theirs = _tree(states)
    got, requests = _walk(MerkleTree(8, 3), theirs, states)
    assert sorted(got) == sorted(states) and requests > 3000 * 50 // MAX


def test_leaves_held_alike_are_skipped() -> None:
    states = {f"k{i:04d}".encode(): bytes(40) for i in range(2000)}
    theirs = _tree(states)
    half = {key: state for key, state in states.items() if theirs.leaf_of(key) % 2 == 0}
    got, _ = _walk(_tree(half), theirs, states)
    assert sorted(got) == sorted(set(states) - set(half))


def test_a_state_too_big_for_any_reply_is_left_to_the_descent() -> None:
    states = {b"small": b"s" * 10, b"huge": b"h" * (2 * MAX)}
    got, _ = _walk(MerkleTree(8, 3), _tree(states), states)
    assert got == [b"small"]


def test_a_reply_read_in_batches_is_the_reply_read_key_by_key() -> None:
    """The responder's batch read (`get_states`, a bounded read ahead) answers exactly as its one-key read, and
    replaces it."""
    states = {f"k{i:04d}".encode(): bytes(30 + i % 70) for i in range(1500)}
    states[b"huge"] = b"h" * (2 * MAX)
    theirs = _tree(states)
    walk = BulkWalk(_tree({k: v for k, v in states.items() if theirs.leaf_of(k) % 3 == 0}), salt=2, width=3)
    batches: list[int] = []

    def one_key_read(key: bytes) -> bytes | None:
        raise AssertionError("the batch read answers every key")

    def batch_read(keys: list[bytes]) -> dict[bytes, bytes]:
        batches.append(len(keys))
        return {key: states[key] for key in keys if key in states}

    while not walk.done:
        _, request = decode_message(walk.request(), MAX)
        expected = answer_bulk(theirs, states.get, request, 3, MAX)
        assert answer_bulk(theirs, one_key_read, request, 3, MAX, batch_read) == expected
        walk.absorb(decode_message(expected[0], MAX)[1])
    assert batches and max(batches) <= STATES_A_READ, "read ahead of the reply, not the keyspace"


def test_only_a_node_far_behind_a_big_enough_peer_walks() -> None:
    assert should_walk(0, 1000) and should_walk(499, 1000)
    assert not should_walk(500, 1000) and not should_walk(0, 999)
