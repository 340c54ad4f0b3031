"""Where two trees differ: pure functions of our tree and what the peer sent.

Comparing the peer's hash groups and sketches with ours says which nodes to expand next, and how; diffing its leaf
listings says which keys to push, which to want, and which side sends a key both hold first. `engine` turns the
results (work items) into messages; keeping these apart keeps each readable on its own, and testable without one.
"""

from __future__ import annotations

from rumor.gossip.anti_entropy.merkle import (
    KEY_HASH_BYTES,
    MerkleTree,
    entry_tag,
    key_fingerprint,
    locate_child,
    sketch_of,
    slice_hash,
)
from rumor.gossip.anti_entropy.wire import LISTING_TAGS, Exchange, entry_width, size_hint
from rumor.gossip.anti_entropy.work import AskGroup, AskStates, ExpandNode, SendState, WorkItem


def compare_nodes(tree: MerkleTree, ex: Exchange, salt: int, width: int, sketch_below: float) -> list[WorkItem]:
    """Compare the peer's groups and sketches with our tree: the differing nodes, each to be expanded.

    Whether we expand a node with a sketch or a full group follows the differing children per differing parent
    seen at its level in this message (`sketch_pays_below`): many means the next level is dense too.
    """
    fanout = tree.fanout
    found: list[tuple[int, int]] = []
    failed: list[WorkItem] = []
    seen: dict[int, list[int]] = {}  # level -> [parents compared, differing children found]
    for level, parent, hashes in ex.groups:
        tally = seen.setdefault(level, [0, 0])
        tally[0] += 1
        for i, value in enumerate(tree.children_ints(level - 1, parent)):
            if slice_hash(value, salt, width) != hashes[i * width : (i + 1) * width]:
                found.append((level, parent * fanout + i))
                tally[1] += 1
    for level, parent, theirs in ex.sketches:
        mine = sketch_of(tree.children_ints(level - 1, parent))
        deltas = [int.from_bytes(slice_hash(v, salt, width), "big") ^ int.from_bytes(
            theirs[k * width : (k + 1) * width], "big") for k, v in enumerate(mine)]
        child = locate_child(deltas, fanout)
        tally = seen.setdefault(level, [0, 0])
        tally[0] += 1
        if child is None:
            # Several children differ: ask the sender for its full group rather than sending ours, so the same
            # side keeps listing the leaves below (which side that is decides who pushes on a tie).
            failed.append(AskGroup(level - 1, parent))
            tally[1] += 2
        elif child >= 0:
            found.append((level, parent * fanout + child))
            tally[1] += 1
    sparse = {level: differing < parents * sketch_below for level, (parents, differing) in seen.items()}
    expand: list[WorkItem] = [ExpandNode(level, node, sparse[level]) for level, node in found]
    return expand + failed


def wanted_keys(tree: MerkleTree, leaf: int, name: bytes, salt: int, just_received: set[bytes]) -> list[bytes]:
    """Keys a want names (by fingerprint or entry tag), less ``just_received``: those the same message brought
    flagged, or as a context row, whose push-back (or our answer to the row) already carries ours."""
    return [k for k, d in tree.leaf_items(leaf) if k not in just_received and (
        key_fingerprint(k, salt) == name or entry_tag(k, d, salt) == name)]


def diff_leaf(tree: MerkleTree, leaf: int, entries: bytes, form: int, salt: int, width: int) -> list[WorkItem]:
    """Compare the peer's listing of a leaf with ours: push what they lack, want what we lack.

    For a key both hold differently, the side whose encoded state is larger (the size hint in the listing) is
    guessed to be newer and pushes first; the other merges and pushes back only if the result still differs.
    """
    if form == LISTING_TAGS:
        return diff_tag_listing(tree, leaf, entries, salt)
    entry_bytes = KEY_HASH_BYTES + width
    step = entry_width(width, form)
    theirs: set[bytes] = set()
    their_size: dict[bytes, int] = {}
    for i in range(0, len(entries), step):
        theirs.add(entries[i : i + entry_bytes])
        fp = entries[i : i + KEY_HASH_BYTES]
        their_size[fp] = max(their_size.get(fp, 0), int.from_bytes(entries[i + entry_bytes : i + step], "big"))
    matched: set[bytes] = set()
    my_fps: set[bytes] = set()
    work: list[WorkItem] = []
    wanted: set[bytes] = set()
    for key, digest in tree.leaf_items(leaf):
        fp = key_fingerprint(key, salt)
        my_fps.add(fp)
        entry = fp + digest[salt : salt + width]
        if entry in theirs:
            matched.add(entry)
        elif fp not in their_size:
            work.append(SendState(key, False))
        elif 0 < size_hint(tree.size_of(key)) < their_size[fp]:
            wanted.add(fp)  # theirs is probably newer: it comes first, ours follows only if still needed
        else:
            work.append(SendState(key, True))  # ours is larger, or nothing tells: push now, saving a round trip
    wanted.update(e[:KEY_HASH_BYTES] for e in theirs - matched if e[:KEY_HASH_BYTES] not in my_fps)
    work.extend(AskStates(leaf, fp) for fp in sorted(wanted))
    return work


def diff_tag_listing(tree: MerkleTree, leaf: int, entries: bytes, salt: int) -> list[WorkItem]:
    """Entry tags cannot pair two versions of a key: push every version they lack (flagged), want every tag we
    lack."""
    step = KEY_HASH_BYTES
    tags = {entries[i : i + step] for i in range(0, len(entries), step)}
    mine: set[bytes] = set()
    work: list[WorkItem] = []
    for key, digest in tree.leaf_items(leaf):
        tag = entry_tag(key, digest, salt)
        mine.add(tag)
        if tag not in tags:
            work.append(SendState(key, True))
    work.extend(AskStates(leaf, tag) for tag in sorted(tags - mine))
    return work


__all__ = ["compare_nodes", "diff_leaf", "diff_tag_listing", "wanted_keys"]
