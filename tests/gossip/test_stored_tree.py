"""`merkle.StoredTree`: a hash tree whose per-key digests are stored elsewhere (a `LeafSource`) equals the in-memory
`MerkleTree` of the same keys through any interleaving of changes, stored writes and their commits, and keeps only
the keys whose stored digest is not the tree's in memory."""

from __future__ import annotations

from hashlib import blake2b

from hypothesis import given
from hypothesis import strategies as st

from rumor.gossip.anti_entropy.merkle import MerkleTree, StoredTree, entry_hash, leaf_of

FANOUT, DEPTH = 4, 3


class FakeStore:
    """A `LeafSource` with the contract the real one keeps: leaf hashes change with the digests they cover."""

    def __init__(self) -> None:
        self.rows: dict[bytes, tuple[bytes, int]] = {}
        self.leaves = [0] * FANOUT**DEPTH

    def write(self, key: bytes, digest: bytes, size: int) -> None:
        leaf = leaf_of(key, len(self.leaves))
        old = self.rows.get(key)
        if old is not None:
            self.leaves[leaf] ^= entry_hash(key, old[0])
        self.leaves[leaf] ^= entry_hash(key, digest)
        self.rows[key] = (digest, size)

    def leaf_hashes(self, leaf_count: int) -> tuple[list[int], int]:
        return list(self.leaves), len(self.rows)

    def digest_row(self, key: bytes) -> tuple[bytes, int] | None:
        return self.rows.get(key)

    def digest_rows(self, keys: list[bytes]) -> dict[bytes, tuple[bytes, int]]:
        return {key: self.rows[key] for key in keys if key in self.rows}

    def leaves_rows(self, leaves: list[int],
                    states_up_to: int = 0) -> list[tuple[int, bytes, bytes, int, bytes | None]]:
        return [(leaf_of(k, len(self.leaves)), k, d, s, b"state of " + k if s <= states_up_to else None)
                for k, (d, s) in self.rows.items() if leaf_of(k, len(self.leaves)) in leaves]


def digest(version: int) -> bytes:
    return blake2b(str(version).encode(), digest_size=16).digest()


# each step: (key number, action) with action 0 = a change the tree hears of, 1 = the change stored (queued),
# 2 = the oldest queued write commits
steps = st.lists(st.tuples(st.integers(0, 12), st.integers(0, 2)), max_size=60)


@given(steps)
def test_a_stored_tree_equals_the_tree_in_memory(plan: list[tuple[int, int]]) -> None:
    store = FakeStore()
    for i in range(5):  # some keys stored before the tree is built
        store.write(f"k{i}".encode(), digest(1000 + i), 10)
    tree = StoredTree(store, FANOUT, DEPTH)
    versions = {f"k{i}".encode(): 1000 + i for i in range(5)}
    queued: list[tuple[bytes, bytes]] = []
    counter = 0
    for number, action in plan:
        key = f"k{number}".encode()
        if action == 0:  # changed (rehashed): the tree takes the new digest, nothing is stored yet
            counter += 1
            versions[key] = counter
            with tree.reading([key, b"k1", b"k7"]):  # a flush's batch read ahead: lookups within see the sets
                tree.set(key, digest(counter), counter)
                assert tree.get(key) == digest(counter)
        elif action == 1 and key in versions:  # a checkpoint: told first (in a batch), stored at commit
            tree.set_many([(key, digest(versions[key]), versions[key])])
            queued.append((key, digest(versions[key])))
        elif queued:
            written, value = queued.pop(0)
            store.write(written, value, 0)
            tree.release(written, value)
        memory = MerkleTree.from_items([(k, digest(v)) for k, v in versions.items()], FANOUT, DEPTH)
        assert tree.node_table() == memory.node_table() and len(tree) == len(memory)
        leaf = tree.leaf_of(key)
        assert tree.leaf_items(leaf) == memory.leaf_items(leaf)
        some = sorted({leaf, tree.leaf_of(b"k1"), tree.leaf_of(b"k7")})
        assert tree.leaves_items(some) == memory.leaves_items(some)
        listed, states = tree.leaves_states(some, 500)  # states read with the listing: only the stored current ones
        assert listed == memory.leaves_items(some)
        assert states == {k: b"state of " + k for k, (d, s) in store.rows.items() if tree.leaf_of(k) in some
                          and s <= 500 and k not in tree._overlay.get(tree.leaf_of(k), {}) and tree.get(k) == d}
        for k in versions:  # the sizes listed with the leaves are the sizes a lookup finds
            assert tree.size_of(k) == (tree._current(k, tree.leaf_of(k)) or (b"", 0))[1]
        asked = [f"k{n}".encode() for n in range(0, 40, 3)]  # some held, some stored, some never written
        assert tree.get_many(asked) == memory.get_many(asked) == {k: memory.get(k) for k in asked if k in versions}
    while queued:
        written, value = queued.pop(0)
        store.write(written, value, 0)
        tree.release(written, value)
    unstored = sum(1 for k, v in versions.items() if store.rows.get(k, (None,))[0] != digest(v))
    assert tree.overlaid == unstored, "memory holds exactly the keys whose stored digest is not the tree's"


def test_a_reading_block_reads_its_keys_once() -> None:
    store = FakeStore()
    for i in range(4):
        store.write(f"k{i}".encode(), digest(i), 10 + i)
    tree = StoredTree(store, FANOUT, DEPTH)
    point_reads: list[bytes] = []
    store.digest_row = lambda key: point_reads.append(key) or store.rows.get(key)  # type: ignore[method-assign]
    with tree.reading([b"k1", b"k2", b"absent"]):
        assert tree.size_of(b"k1") == 11 and tree.get(b"absent") is None
        tree.set(b"k2", digest(99), 5)
        assert tree.get(b"k2") == digest(99) and tree.size_of(b"k2") == 5
    assert point_reads == []
    assert tree.get(b"k3") == digest(3) and point_reads == [b"k3"], "outside a block: a point read"


def test_keys_of_empty_leaves_are_not_looked_up() -> None:
    """A node catching up installs into leaves it holds nothing of: asking for those keys' stored digests would
    read the disk for nothing, a batch per reply, twice."""
    store = FakeStore()
    store.write(b"k1", digest(1), 10)
    tree = StoredTree(store, FANOUT, DEPTH)
    asked: list[bytes] = []
    store.digest_rows = lambda keys: asked.extend(keys) or {k: store.rows[k] for k in keys if k in store.rows}  # type: ignore[method-assign]
    store.digest_row = lambda key: asked.append(key) or store.rows.get(key)  # type: ignore[method-assign]
    by_leaf: dict[int, list[bytes]] = {}
    for i in range(2000):
        by_leaf.setdefault(tree.leaf_of(f"new{i}".encode()), []).append(f"new{i}".encode())
    del by_leaf[tree.leaf_of(b"k1")]
    fresh = [keys[0] for keys in by_leaf.values()][:40]  # one key a leaf, each leaf empty
    assert tree.get_many([b"k1", *fresh]) == {b"k1": digest(1)} and asked == [b"k1"]
    asked.clear()
    tree.set_many([(key, digest(7), 7) for key in fresh[:20]])
    with tree.reading(fresh[20:]):
        for key in fresh[20:]:
            tree.set(key, digest(8), 8)
    assert asked == [], "every key lay in a leaf the tree held nothing of"
    neighbours = [by_leaf[tree.leaf_of(key)][1] for key in fresh]
    assert tree.get_many(neighbours) == {} and asked == neighbours, "a leaf that holds keys now is read"
    assert len(tree) == 41
