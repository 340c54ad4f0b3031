"""Push-pull anti-entropy between two replicas of a keyspace of opaque states, as pure state machines.

Shape of a session (initiator ``I``, responder ``R``; ``R`` keeps **no per-session state**):

1. ``I -> R`` HELLO: tree shape, the full 16-byte root, key count, and a slice offset ``s`` (below).
   Equal roots: ``R`` answers IN_SYNC and the session is over.
2. Otherwise the two sides alternate EXCHANGE messages. Whoever learns that node ``n`` differs sends *its own*
   hashes of ``n``'s children; the other compares them with its own and answers with the children hashes of the
   ones that differ, so each message descends one level and every round trip descends two. Where differences are
   sparse, ``n`` goes as a **sketch** of its children instead (`merkle.sketch_of`: 4 slices instead of 8 at fanout
   8) that names the one differing child; a sketch that shows several asks the sender for its full group ("d"), so
   the same side keeps listing the leaves. Which form a node takes follows the differing children per differing
   parent seen at its level in the message just received (`merkle.sketch_pays_below`): the dense top of the tree
   goes by groups, the sparse bottom by sketches, with no extra negotiation.
   At a leaf the sender lists its entries in one of three forms, chosen per leaf (`wire.LISTING_*`):
   ``(key fingerprint, digest slice, size hint)`` when the tree has sizes; else 3-byte *entry tags* (a hash of key
   and digest, `merkle.entry_tag`) from two keys a leaf, or ``(fingerprint, digest slice)`` for a lone key. The
   receiver pushes its states the lister lacks; a key both hold differently it pushes at once unless the hints say
   the lister's is larger (then it wants it); it wants the versions it lacks (by fingerprint, or by tag: tags cannot
   pair two versions of one key, so it also wants the lister's old version of a key it is pushing, which the lister
   then skips). A push of a key the other may hold (and an answered want) carries a flag: the receiver merges and,
   if its merged state's digest differs from the one it received, pushes its merged state back. Both directions
   are repaired in one session. A key one side dominates costs one state transfer when the hints tell, or when the
   side diffing the listing is the newer one; two otherwise. The initiator lists (the responder diffs) unless a
   deferral moved the listing: a lagging node tends to be the one starting sessions, and is then the older side.
3. States too big for one message go as `chunking` chunks, reassembled in a bounded `Reassembler`.
4. A node far behind its peer (far fewer keys: an empty node joining, one away for long) walks the leaves in bulk
   instead (`bulk`): whole leaves of states a message, stored unmerged where it lacks the key, then the descent.
5. Where the application gives a context (``get_context``, ``get_state_for_context``: a CRDT's causal context,
   opaque here) and knows the peer reads them, a flagged push of a big key (``context_min_bytes``) goes as a
   *context row* instead: the receiver answers with what that context lacks of its state and its own context as an
   answer row, which is answered with a diff only. Both directions then cost the difference, not a whole state
   (`engine` has the details; `wire` why they are never sent to a peer not known to read them).

Why the wire uses **3-byte slices** (``hash_bytes``) of the 16-byte node hashes and digests: locating ``d``
differences costs about ``d * fanout * width`` bytes per level near the leaves, so width dominates. A 3-byte slice
lets a differing node pass as equal with probability 2**-24; the initiator draws the slice *offset* ``s`` per session
from its injected ``random.Random`` (key fingerprints rotate with it), so an unlucky collision only delays that key to
a later session instead of hiding it forever. The root is always compared in full. Sketch values, fingerprints
and entry tags are 3 bytes too, so every shortcut in this protocol fails with the same ~2**-24 odds, and the same
way: a difference left for the next session.

Why listings carry a **size hint** when the tree has sizes: for a key both sides hold differently, one side must
send first. Sending the smaller state first wastes a transfer whenever the other side dominates; join-semilattice
states grow, so the larger state is usually the newer one, and that side pushes first (`MerkleTree.set` takes the
size; 0 means unknown). When the hints tie or are unknown, the side diffing the listing pushes at once (flagged):
that is one transfer if it is the newer side, two if not, where asking first would cost a want, a round trip and
the same transfers.

Expected bytes at 100k keys (fanout 8, depth 5: 32,768 leaves, ~3 keys a leaf):

* idle (converged): HELLO 44 bytes + IN_SYNC 2 bytes = 46 bytes, whatever the key count (target < 2 KiB).
* 100 differing keys: nodes that differ per level ~1, 8, 51, 91, 99, 100. The dense levels 1-3 go as full groups
  (8 x 3 bytes + a 2-byte id): ~1.5 KB; levels 4 and 5 as sketches (4 x 3 + 2 bytes), plus a few full groups where
  a sketch showed two differences: ~2.6 KB. Leaf listings by tags ~100 x (3 + 4 keys x 3 bytes) = 1.5 KB and
  ~0.5 KB of wants (by fingerprint with sizes: 2.7 KB, few wants); keys and framing of the states ~1.7 KB.
  Replication bench (67-byte counters, no size hints, responder newer): 14.9 KB, 2.2x the 6.7 KB of states.
  ``bench/anti_entropy_bench.py`` (64-200 byte states, with sizes): 24 KB (1.7-1.8x the states) when either side
  is newer, 43 KB (1.4x both sides' states) for concurrent edits; 0.002-0.003x a 14.8 MB full-state transfer;
  5-6 round trips.

Bounded everything: each message is at most ``max_message_bytes`` (framing included, checked on the encoded bytes);
requests are capped in the work they can ask for, the responder does lazy work (leaf diffs, state reads) only while
its reply has room and turns the rest into tiny deferrals the initiator re-asks for (dropping and counting only
what not even those fit); the initiator's queue holds at most ``max_pending`` items and a session at most
``max_rounds`` round trips. A fresh node catching up 100k keys therefore costs the serving node one bounded step
per request (measured: ~390 requests, every message <= 53 KB, slowest step ~80 ms on a loaded 2-core box).

Caller contract: ``merge(key, state)`` must join the state into the store *and* update the tree
(``tree.set(key, state_digest(new), len(new))``), as every local write does; ``get_state`` returns the
deterministic encoding (equal states, equal bytes) or None. ``check(key, state)``, if given, runs on every state of
a message before any of them is merged, so a state it rejects aborts the session with nothing from that message
merged.

Garbage from the peer (bad type, bad msgpack, wrong shapes, out-of-range ids, bad chunks) raises
`AntiEntropyProtocolError` before anything in that message is merged, and aborts the initiator's session.

Modules, each importing only those listed before it: `merkle` (the hash tree), `chunking` (big states in bounded
pieces), `config` (`AntiEntropyConfig`), `wire` (message types, record layouts, strict decoding), `work` (the work
items a side queues), `descent` (where two trees differ: hash comparison, listing diffs), `composer` (one message
within its bounds), `bulk` (the walk of a node far behind), `engine` (what one message does on either side: merge,
answer, compose), `session` (the two roles and the message flow).
"""

from rumor.gossip.anti_entropy.bulk import (
    BULK_BEHIND_RATIO,
    BULK_MIN_PEER_KEYS,
    MAX_BULK_LEAVES,
    BulkReply,
    BulkWalk,
    answer_bulk,
    should_walk,
)
from rumor.gossip.anti_entropy.chunking import (
    CHUNK_MESSAGE_TYPE,
    CHUNK_OVERHEAD_BYTES,
    Chunk,
    ChunkError,
    Reassembler,
    SentValues,
    chunk_data_bytes,
    decode_chunk,
    encode_chunk,
    split,
    transfer_id_of,
)
from rumor.gossip.anti_entropy.config import AntiEntropyConfig
from rumor.gossip.anti_entropy.engine import (
    AntiEntropyContextError,
    AntiEntropyMergeError,
    AntiEntropyStats,
    CheckState,
    GetContext,
    GetState,
    GetStateForContext,
    GetStateSince,
    Install,
    Merge,
    Prefetch,
)
from rumor.gossip.anti_entropy.merkle import (
    DIGEST_BYTES,
    KEY_HASH_BYTES,
    MAX_LEAVES,
    MerkleTree,
    entry_tag,
    key_fingerprint,
    key_hash,
    locate_child,
    sketch_of,
    sketch_pays_below,
    sketch_size,
    slice_hash,
    state_digest,
)
from rumor.gossip.anti_entropy.session import (
    AntiEntropyPeerError,
    AntiEntropyResponder,
    AntiEntropySession,
    run_session,
)
from rumor.gossip.anti_entropy.wire import (
    FEATURE_CONTEXTS,
    PROTOCOL_VERSION,
    AntiEntropyMessageType,
    AntiEntropyProtocolError,
)

__all__ = [
    "BULK_BEHIND_RATIO",
    "BULK_MIN_PEER_KEYS",
    "CHUNK_MESSAGE_TYPE",
    "CHUNK_OVERHEAD_BYTES",
    "DIGEST_BYTES",
    "FEATURE_CONTEXTS",
    "KEY_HASH_BYTES",
    "MAX_BULK_LEAVES",
    "MAX_LEAVES",
    "PROTOCOL_VERSION",
    "AntiEntropyConfig",
    "AntiEntropyContextError",
    "AntiEntropyMergeError",
    "AntiEntropyMessageType",
    "AntiEntropyPeerError",
    "AntiEntropyProtocolError",
    "AntiEntropyResponder",
    "AntiEntropySession",
    "AntiEntropyStats",
    "BulkReply",
    "BulkWalk",
    "CheckState",
    "Chunk",
    "ChunkError",
    "GetContext",
    "GetState",
    "GetStateForContext",
    "GetStateSince",
    "Install",
    "Merge",
    "MerkleTree",
    "Prefetch",
    "Reassembler",
    "SentValues",
    "answer_bulk",
    "chunk_data_bytes",
    "decode_chunk",
    "encode_chunk",
    "entry_tag",
    "key_fingerprint",
    "key_hash",
    "locate_child",
    "run_session",
    "should_walk",
    "sketch_of",
    "sketch_pays_below",
    "sketch_size",
    "slice_hash",
    "split",
    "state_digest",
    "transfer_id_of",
]
