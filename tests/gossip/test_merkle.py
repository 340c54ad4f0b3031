"""The hash tree: incremental updates equal a full rebuild, and equal key sets give equal trees on any replica."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rumor.gossip.anti_entropy import (
    DIGEST_BYTES,
    MerkleTree,
    entry_tag,
    key_fingerprint,
    locate_child,
    sketch_of,
    sketch_pays_below,
    sketch_size,
    slice_hash,
    state_digest,
)
from rumor.gossip.errors import ConfigError, GossipError

SMALL = {"fanout": 4, "depth": 3}

keys = st.binary(min_size=0, max_size=6)
ops = st.lists(
    st.tuples(st.sampled_from(["set", "remove"]), keys, st.binary(max_size=4)),
    max_size=60,
)


def model_after(operations: list[tuple[str, bytes, bytes]]) -> dict[bytes, bytes]:
    model: dict[bytes, bytes] = {}
    for op, key, value in operations:
        if op == "set":
            model[key] = state_digest(value)
        else:
            model.pop(key, None)
    return model


@given(ops)
def test_incremental_updates_equal_full_rebuild(operations: list[tuple[str, bytes, bytes]]) -> None:
    tree = MerkleTree(**SMALL)
    for op, key, value in operations:
        if op == "set":
            tree.set(key, state_digest(value))
        else:
            tree.remove(key)
    model = model_after(operations)
    rebuilt = MerkleTree.from_items(model.items(), **SMALL)
    assert tree.node_table() == rebuilt.node_table()
    assert len(tree) == len(model)
    assert dict(tree.items()) == model
    assert all(tree.get(k) == d for k, d in model.items())


@given(st.dictionaries(keys, st.binary(max_size=4), max_size=40), st.randoms(use_true_random=False))
def test_insertion_order_does_not_change_the_tree(data: dict[bytes, bytes], rnd: random.Random) -> None:
    items = [(k, state_digest(v)) for k, v in data.items()]
    shuffled = list(items)
    rnd.shuffle(shuffled)
    a = MerkleTree(**SMALL)
    for k, d in items:
        a.set(k, d)
    b = MerkleTree(**SMALL)
    for k, d in shuffled:
        b.set(k, d)
    assert a.root() == b.root()
    assert a.node_table() == b.node_table()


def test_one_changed_key_changes_exactly_its_leaf_to_root_path() -> None:
    items = [(b"k%d" % i, state_digest(b"v%d" % i)) for i in range(500)]
    a = MerkleTree.from_items(items, **SMALL)
    b = MerkleTree.from_items(items, **SMALL)
    b.set(b"k7", state_digest(b"other"))
    leaf = b.leaf_of(b"k7")
    changed = {
        (level, i)
        for level, (row_a, row_b) in enumerate(zip(a.node_table(), b.node_table(), strict=True))
        for i, (x, y) in enumerate(zip(row_a, row_b, strict=True))
        if x != y
    }
    path = {(level, leaf // SMALL["fanout"] ** (SMALL["depth"] - level)) for level in range(SMALL["depth"] + 1)}
    assert changed == path


def test_setting_the_same_digest_twice_is_a_no_op_and_remove_restores() -> None:
    tree = MerkleTree(**SMALL)
    empty_root = tree.root()
    tree.set(b"a", state_digest(b"1"))
    root = tree.root()
    tree.set(b"a", state_digest(b"1"))
    assert tree.root() == root and len(tree) == 1
    assert tree.remove(b"a") is True
    assert tree.remove(b"a") is False
    assert tree.root() == empty_root == bytes(DIGEST_BYTES)
    assert b"a" not in tree and tree.get(b"a") is None


def test_leaf_items_are_sorted_and_hold_only_their_keys() -> None:
    items = [(b"key:%04d" % i, state_digest(b"%d" % i)) for i in range(300)]
    tree = MerkleTree.from_items(items, **SMALL)
    seen = 0
    for leaf in range(tree.leaf_count):
        listing = tree.leaf_items(leaf)
        assert listing == sorted(listing)
        assert all(tree.leaf_of(k) == leaf for k, _ in listing)
        seen += len(listing)
    assert seen == 300


def test_shape_and_digest_are_validated() -> None:
    with pytest.raises(ConfigError):
        MerkleTree(fanout=1)
    with pytest.raises(ConfigError):
        MerkleTree(fanout=16, depth=6)
    with pytest.raises(GossipError):
        MerkleTree(depth=0)
    with pytest.raises(ValueError, match="16 bytes"):
        MerkleTree().set(b"k", b"short")


def test_slice_hash_and_fingerprints() -> None:
    value = int.from_bytes(bytes(range(16)), "big")
    assert slice_hash(value, 0, 4) == bytes([0, 1, 2, 3])
    assert slice_hash(value, 12, 4) == bytes([12, 13, 14, 15])
    assert len(key_fingerprint(b"x")) == 3
    assert key_fingerprint(b"x") == key_fingerprint(b"x") != key_fingerprint(b"y")


@settings(max_examples=5)
@given(st.integers(min_value=0, max_value=2**32))
def test_bulk_build_matches_sets_at_a_few_thousand_keys(seed: int) -> None:
    items = [(b"%d:%d" % (seed, i), state_digest(b"%d" % (i * seed))) for i in range(3000)]
    bulk = MerkleTree.from_items(items)
    one_by_one = MerkleTree()
    for k, d in items:
        one_by_one.set(k, d)
    assert bulk.root() == one_by_one.root()
    assert len(bulk) == 3000


def test_size_hints_do_not_change_hashes() -> None:
    plain = MerkleTree(**SMALL)
    hinted = MerkleTree(**SMALL)
    plain.set(b"k", state_digest(b"state"))
    hinted.set(b"k", state_digest(b"state"), size=5)
    assert plain.node_table() == hinted.node_table()
    assert hinted.size_of(b"k") == 5 and plain.size_of(b"k") == 0
    bulk = MerkleTree.from_items([(b"k", state_digest(b"state"), 5)], **SMALL)
    assert bulk.size_of(b"k") == 5 and bulk.root() == hinted.root()
    hinted.remove(b"k")
    assert hinted.size_of(b"k") == 0


@given(fanout=st.sampled_from([2, 3, 4, 5, 8, 16]), data=st.data())
def test_a_sketch_locates_one_differing_child_and_flags_several(fanout: int, data: st.DataObject) -> None:
    mine = data.draw(st.lists(st.integers(0, 2**128 - 1), min_size=fanout, max_size=fanout))
    changed = data.draw(st.sets(st.integers(0, fanout - 1), max_size=fanout))
    theirs = [v ^ data.draw(st.integers(1, 2**128 - 1)) if i in changed else v for i, v in enumerate(mine)]
    deltas = [x ^ y for x, y in zip(sketch_of(mine), sketch_of(theirs), strict=True)]
    assert len(deltas) == sketch_size(fanout)
    found = locate_child(deltas, fanout)
    if not changed:
        assert found == -1
    elif len(changed) == 1:
        assert found == next(iter(changed))
    elif deltas[0] == 0:
        assert found == -1  # the differences cancel: a hash collision, like two equal slices
    elif len(changed) == 2:
        assert found is None  # two differing children always differ in some index bit


def test_sketches_of_slices_are_slices_of_sketches() -> None:
    rng = random.Random(5)
    children = [rng.getrandbits(128) for _ in range(8)]
    for offset in range(DIGEST_BYTES - 3 + 1):
        sliced = [int.from_bytes(slice_hash(v, offset, 3), "big") for v in children]
        assert [slice_hash(v, offset, 3) for v in sketch_of(children)] == [
            v.to_bytes(3, "big") for v in sketch_of(sliced)]


def test_sketches_pay_only_where_differences_are_sparse() -> None:
    assert sketch_pays_below(2, 3, 2) == 0.0  # a sketch of two children is no smaller than the children
    for fanout in (4, 8, 16):
        threshold = sketch_pays_below(fanout, 3, 2)
        assert 1.0 < threshold < fanout
    assert sketch_pays_below(8, 3, 2) > sketch_pays_below(4, 3, 2)


def test_entry_tags_name_one_version_of_one_key_and_rotate_with_the_salt() -> None:
    d1, d2 = state_digest(b"1"), state_digest(b"2")
    assert len(entry_tag(b"k", d1)) == 3
    assert entry_tag(b"k", d1, 5) == entry_tag(b"k", d1, 5)
    assert len({entry_tag(b"k", d1), entry_tag(b"k", d2), entry_tag(b"j", d1)}) == 3
    assert len({entry_tag(b"k", d1, salt) for salt in range(DIGEST_BYTES - 2)}) > 1
