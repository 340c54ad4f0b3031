"""`merkle.StoredTree`: a hash tree whose per-key digests are stored elsewhere (a `LeafSource`) equals the in-memory
`MerkleTree` of the same keys through any interleaving of changes, stored writes and their commits, and keeps only
the keys whose stored digest is not the tree's in memory."""

from __future__ import annotations

import random
from contextlib import AbstractContextManager, nullcontext
from hashlib import blake2b

from hypothesis import given
from hypothesis import strategies as st

from rumor.gossip.anti_entropy import AntiEntropyConfig, AntiEntropyResponder, AntiEntropySession
from rumor.gossip.anti_entropy.merkle import MerkleTree, StoredTree, entry_hash, leaf_of, state_digest

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

    def rows_of(self, keys: list[bytes]) -> AbstractContextManager[None]:
        return nullcontext()

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
        # listings read ahead stay true through the next step's changes and commits (a commit drops its leaf)
        tree.list_ahead(sorted({tree.leaf_of(f"k{n}".encode()) for n in range(13)}))
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


class GSetOnDisk:
    """Grow-only sets (comma-joined, sorted) over a `StoredTree`: each write is stored and committed at once."""

    def __init__(self, items: dict[bytes, bytes], fanout: int, depth: int) -> None:
        self.store = FakeStore()
        self.store.leaves = [0] * fanout**depth
        self.data = dict(items)
        for key, state in items.items():
            self.store.write(key, state_digest(state), len(state))
        self.tree = StoredTree(self.store, fanout, depth)
        self.listings: list[int] = []  # leaves a listing alone read, per read
        self.rows_read = 0  # keys those listings read
        rows = self.store.leaves_rows

        def counted(leaves: list[int], states_up_to: int = 0) -> list[tuple[int, bytes, bytes, int, bytes | None]]:
            found = rows(leaves, states_up_to)
            if not states_up_to:
                self.listings.append(len(leaves))
                self.rows_read += len(found)
            return found
        self.store.leaves_rows = counted  # type: ignore[method-assign]

    def merge(self, key: bytes, state: bytes) -> None:
        old = self.data.get(key)
        new = state if old is None else b",".join(sorted(set(old.split(b",")) | set(state.split(b","))))
        self.data[key] = new
        digest_of = state_digest(new)
        self.tree.set(key, digest_of, len(new))
        self.store.write(key, digest_of, len(new))
        self.tree.release(key, digest_of)


def test_a_descent_lists_its_leaves_in_batches() -> None:
    """A step of the descent lists hundreds of leaves; over disk each listing alone was a statement of its own
    (0.3 ms at 1M keys: steps of 100-450 ms under a write load). Now the leaves a message lists are read ahead
    together, and the session still repairs every difference."""
    fanout, depth = 8, 3
    rng = random.Random(5)
    base = {b"key%05d" % i: b"v%d" % rng.randrange(10**6) for i in range(3000)}
    a, b = GSetOnDisk(base, fanout, depth), GSetOnDisk(base, fanout, depth)
    for key in rng.sample(sorted(base), 300):
        (a if rng.random() < 0.5 else b).merge(key, b"w%d" % rng.randrange(10**6))
    a.listings.clear()
    b.listings.clear()
    config = AntiEntropyConfig()
    session = AntiEntropySession(a.tree, a.data.get, a.merge, random.Random(1), config)
    responder = AntiEntropyResponder(b.tree, b.data.get, b.merge, config)
    request: bytes | None = session.start()
    while request is not None:
        request = session.receive(responder.handle(request))
    assert a.data == b.data and a.tree.root() == b.tree.root()
    for side in (a, b):
        listed = sum(side.listings)
        assert listed >= 100, "the differences spread over many leaves"
        assert len(side.listings) <= listed / 8, side.listings


def _steps_rows_read(config: AntiEntropyConfig) -> tuple[list[int], int]:
    """A session over 3,000 keys in 64 leaves (about 47 a leaf, as 30 at 1M keys in the node's tree) with 400
    differing keys: the keys each step's listings read (both sides), and the most a leaf holds."""
    rng = random.Random(9)
    base = {b"key%05d" % i: b"v%d" % rng.randrange(10**6) for i in range(3000)}
    a, b = GSetOnDisk(base, 8, 2), GSetOnDisk(base, 8, 2)
    for key in rng.sample(sorted(base), 400):
        (a if rng.random() < 0.5 else b).merge(key, b"w%d" % rng.randrange(10**6))
    session = AntiEntropySession(a.tree, a.data.get, a.merge, random.Random(1), config)
    responder = AntiEntropyResponder(b.tree, b.data.get, b.merge, config)
    steps: list[int] = []
    request: bytes | None = session.start()
    while request is not None:
        before = b.rows_read
        reply = responder.handle(request)
        steps.append(b.rows_read - before)
        before = a.rows_read
        request = session.receive(reply)
        steps.append(a.rows_read - before)
    assert a.data == b.data and a.tree.root() == b.tree.root()
    return steps, max(len(a.tree.leaf_items(leaf)) for leaf in range(64))


def test_a_step_lists_a_bounded_number_of_keys() -> None:
    """Listings are most of a descent step's work over big leaves (a message full of them read 8,000 keys at 1M
    keys: a 100-250 ms step); a message lists `max_listed_keys` keys and leaves the rest to the next round, and
    the session still converges."""
    budget = 150
    bounded, widest = _steps_rows_read(AntiEntropyConfig(max_listed_keys=budget))
    assert max(bounded) <= 2 * (budget + widest), bounded
    unbounded, _ = _steps_rows_read(AntiEntropyConfig())
    assert max(unbounded) > 2 * (budget + widest), "without the bound a step lists far more"
    assert len(bounded) > len(unbounded), "the rest of the listings went in more rounds"
