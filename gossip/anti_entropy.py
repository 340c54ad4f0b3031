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
   At a leaf the sender lists its entries in one of three forms, chosen per leaf (`anti_entropy_wire.LISTING_*`):
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
3. States too big for one message go as `gossip.chunking` chunks, reassembled in a bounded `Reassembler`.

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
  Replication bench (67-byte counters, no size hints, responder newer): 14.9 KB, 2.2x the 6.7 KB of states (was
  25.7 KB, 3.8x). ``bench/anti_entropy_bench.py`` (64-200 byte states, with sizes): 24 KB (1.7-1.8x the states)
  when either side is newer, 43 KB (1.4x both sides' states) for concurrent edits; 0.002-0.003x a 14.8 MB
  full-state transfer; 5-6 round trips.

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

This module is the two roles and the message flow; what one message does on either side (merge, compare, diff,
compose) is `anti_entropy_engine.ExchangeEngine`; the bytes are `anti_entropy_wire`.
"""

from __future__ import annotations

import random
from collections import deque
from enum import IntEnum

from gossip.anti_entropy_engine import (
    AntiEntropyConfig,
    AntiEntropyMergeError,
    AntiEntropyStats,
    CheckState,
    ExchangeEngine,
    GetState,
    Item,
    Merge,
)
from gossip.anti_entropy_wire import (
    AntiEntropyProtocolError,
    Composer,
    Exchange,
    decode_message,
    encode_message,
)
from gossip.chunking import Reassembler
from gossip.errors import GossipError
from gossip.merkle import DIGEST_BYTES, MerkleTree

PROTOCOL_VERSION = 2


class AntiEntropyMessageType(IntEnum):
    """First byte of every anti-entropy message. Append-only."""

    HELLO = 0x41
    IN_SYNC = 0x42
    EXCHANGE = 0x43
    ERROR = 0x44


class AntiEntropyPeerError(GossipError):
    """The responder refused the session (shape mismatch, malformed request): its reason is in ``reason``."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"peer rejected anti-entropy: {reason}")
        self.reason = reason


class AntiEntropyResponder:
    """Answers anti-entropy requests from any number of peers; keeps no per-session state (only a bounded
    `Reassembler` for chunked states in flight and a one-slot cache), so each request is one bounded step."""

    def __init__(self, tree: MerkleTree, get_state: GetState, merge: Merge,
                 config: AntiEntropyConfig | None = None, check: CheckState | None = None,
                 reassembler: Reassembler | None = None) -> None:
        self._replica = ExchangeEngine(tree, get_state, merge, config or AntiEntropyConfig(), check, reassembler)

    @property
    def stats(self) -> AntiEntropyStats:
        return self._replica.stats

    def handle(self, request: bytes) -> bytes:
        """Answer one request. Malformed requests get an ERROR reply (and are counted), never an exception."""
        replica = self._replica
        replica.stats.rounds += 1
        replica.stats.bytes_received += len(request)
        try:
            reply = self._answer(request)
        except (AntiEntropyProtocolError, AntiEntropyMergeError) as exc:
            reason = exc.reason if isinstance(exc, AntiEntropyProtocolError) else "state_rejected"
            replica._count_error(reason)
            reply = encode_message(AntiEntropyMessageType.ERROR, {"reason": reason})
        replica.stats.bytes_sent += len(reply)
        return reply

    def _answer(self, request: bytes) -> bytes:
        replica, tree, config = self._replica, self._replica.tree, self._replica.config
        kind, body = decode_message(request, config.max_message_bytes)
        if kind == AntiEntropyMessageType.HELLO:
            hello = _parse_hello(body)
            shape = (tree.fanout, tree.depth, config.hash_bytes, PROTOCOL_VERSION)
            if (hello["f"], hello["D"], hello["w"], hello["v"]) != shape:
                raise AntiEntropyProtocolError("shape_mismatch", f"peer {hello} vs local {shape}")
            if hello["r"] == tree.root():
                return encode_message(AntiEntropyMessageType.IN_SYNC, {})
            work: list[Item] = [("x", 0, 0, False)]
            salt = hello["s"]
            count: int | None = len(tree)
        elif kind == AntiEntropyMessageType.EXCHANGE:
            ex = Exchange.parse(body, tree, config.hash_bytes)
            if ex.salt is None:
                raise AntiEntropyProtocolError("malformed_exchange", "request without a slice offset")
            salt = ex.salt
            work = replica.absorb(ex, salt)
            count = None
        else:
            raise AntiEntropyProtocolError("unexpected_type", f"{kind!r} is not a request")
        composer = Composer(tree, config, salt=None, count=count)
        queue = deque(work)
        replica.fill(composer, queue, salt)
        for item in queue:
            if not composer.add_deferral(item, tree):
                replica.stats.dropped_items += 1
        return composer.encode(AntiEntropyMessageType.EXCHANGE)


class AntiEntropySession:
    """The initiator's side of one push-pull session: `start` -> request, `receive(reply)` -> next request or None.

    Pure: no I/O, no clock; the only randomness is the slice offset drawn from the injected ``rng``.
    """

    def __init__(self, tree: MerkleTree, get_state: GetState, merge: Merge, rng: random.Random,
                 config: AntiEntropyConfig | None = None, check: CheckState | None = None,
                 reassembler: Reassembler | None = None) -> None:
        self._replica = ExchangeEngine(tree, get_state, merge, config or AntiEntropyConfig(), check, reassembler)
        config = self._replica.config
        self._salt = rng.randrange(DIGEST_BYTES - config.hash_bytes + 1)
        self._queue: deque[Item] = deque()
        self._started = False
        self.done = False
        self.aborted: BaseException | None = None
        self.incomplete = False
        """True when the session stopped at ``max_rounds`` or dropped work at ``max_pending``: run another soon."""

    @property
    def stats(self) -> AntiEntropyStats:
        return self._replica.stats

    def start(self) -> bytes:
        """The HELLO request."""
        if self._started:
            raise AntiEntropyProtocolError("already_started")
        self._started = True
        tree, config = self._replica.tree, self._replica.config
        body = {"D": tree.depth, "f": tree.fanout, "n": len(tree), "r": tree.root(), "s": self._salt,
                "v": PROTOCOL_VERSION, "w": config.hash_bytes}
        return self._count_sent(encode_message(AntiEntropyMessageType.HELLO, body))

    def receive(self, reply: bytes) -> bytes | None:
        """Digest the responder's reply; return the next request, or None when the session is over."""
        if self.done or not self._started:
            raise AntiEntropyProtocolError("not_running", "session finished, aborted or not started")
        replica = self._replica
        stats = replica.stats
        stats.rounds += 1
        stats.bytes_received += len(reply)
        try:
            kind, body = decode_message(reply, replica.config.max_message_bytes)
            if kind == AntiEntropyMessageType.IN_SYNC:
                return self._finish()
            if kind == AntiEntropyMessageType.ERROR:
                reason = body.get("reason") if isinstance(body, dict) else None
                raise AntiEntropyPeerError(reason if isinstance(reason, str) else "unreadable")
            if kind != AntiEntropyMessageType.EXCHANGE:
                raise AntiEntropyProtocolError("unexpected_type", f"{kind!r} is not a reply")
            ex = Exchange.parse(body, replica.tree, replica.config.hash_bytes)
            if ex.count is not None:
                replica.peer_keys = ex.count
            work = replica.absorb(ex, self._salt)
        except GossipError as exc:
            self.done = True
            self.aborted = exc
            raise
        for item in work:
            if len(self._queue) >= replica.config.max_pending:
                stats.dropped_items += 1
                self.incomplete = True
            else:
                self._queue.append(item)
        if not self._queue:
            return self._finish()
        if stats.rounds >= replica.config.max_rounds:
            self.incomplete = True
            return self._finish()
        composer = Composer(replica.tree, replica.config, salt=self._salt)
        replica.fill(composer, self._queue, self._salt)
        if self._queue and composer.empty:  # the head cannot fit even an empty message (a huge leaf): give up on it
            self._queue.popleft()
            stats.dropped_items += 1
            self.incomplete = True
            replica.fill(composer, self._queue, self._salt)
        if composer.empty:
            return self._finish()
        return self._count_sent(composer.encode(AntiEntropyMessageType.EXCHANGE))

    def _finish(self) -> None:
        self.done = True
        return None

    def _count_sent(self, message: bytes) -> bytes:
        self._replica.stats.bytes_sent += len(message)
        return message


def _parse_hello(body: object) -> dict[str, object]:
    expected = {"D": int, "f": int, "n": int, "r": bytes, "s": int, "v": int, "w": int}
    if not isinstance(body, dict) or set(body) != set(expected):
        raise AntiEntropyProtocolError("malformed_hello", "wrong fields")
    for name, typ in expected.items():
        if type(body[name]) is not typ:
            raise AntiEntropyProtocolError("malformed_hello", f"{name} must be {typ.__name__}")
    if len(body["r"]) != DIGEST_BYTES or not 0 <= body["s"] <= DIGEST_BYTES - body["w"]:
        raise AntiEntropyProtocolError("malformed_hello", "bad root or slice offset")
    return body


def run_session(session: AntiEntropySession, responder: AntiEntropyResponder) -> AntiEntropySession:
    """Drive a session against an in-process responder until it ends (tests, benches, and local catch-up)."""
    request: bytes | None = session.start()
    while request is not None:
        request = session.receive(responder.handle(request))
    return session


__all__ = [
    "PROTOCOL_VERSION",
    "AntiEntropyConfig",
    "AntiEntropyMergeError",
    "AntiEntropyMessageType",
    "AntiEntropyPeerError",
    "AntiEntropyProtocolError",
    "AntiEntropyResponder",
    "AntiEntropySession",
    "AntiEntropyStats",
    "CheckState",
    "GetState",
    "Merge",
    "run_session",
]
