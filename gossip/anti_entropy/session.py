"""The two roles of an anti-entropy session and the message flow between them (see the package docstring).

The initiator (`AntiEntropySession`) keeps the session's state: its slice offset and a queue of work. The responder
(`AntiEntropyResponder`) keeps none per session, so every request is one bounded step; what one message does on
either side is `engine.ExchangeEngine`.
"""

from __future__ import annotations

import random
from collections import deque
from dataclasses import dataclass

from rumor.gossip.anti_entropy.bulk import BulkWalk, GetStatesFn, answer_bulk, should_walk
from rumor.gossip.anti_entropy.chunking import Reassembler
from rumor.gossip.anti_entropy.composer import Composer
from rumor.gossip.anti_entropy.config import AntiEntropyConfig
from rumor.gossip.anti_entropy.engine import (
    AntiEntropyMergeError,
    AntiEntropyStats,
    CheckState,
    ExchangeEngine,
    GetContext,
    GetState,
    GetStateForContext,
    GetStateSince,
    Install,
    Merge,
    Prefetch,
)
from rumor.gossip.anti_entropy.merkle import DIGEST_BYTES, MerkleTree, state_digest
from rumor.gossip.anti_entropy.wire import (
    FEATURE_CONTEXTS,
    PROTOCOL_VERSION,
    AntiEntropyMessageType,
    AntiEntropyProtocolError,
    Exchange,
    Hello,
    decode_message,
    encode_message,
)
from rumor.gossip.anti_entropy.work import ExpandNode, WorkItem
from rumor.gossip.errors import GossipError


@dataclass(slots=True, eq=False)
class WaitingStates:
    """A walk reply's states, waiting to be stored (`AntiEntropySession.settle`); ``verdict`` once the caller
    checked them: (the refusal or None, the keys it checked)."""

    rows: list[tuple[bytes, bytes]]
    verdict: tuple[BaseException | None, set[bytes]] | None = None
    handed_out: bool = False
    """Handed to the caller for checking (`AntiEntropySession.unchecked`)."""


class AntiEntropyPeerError(GossipError):
    """The responder refused the session (shape mismatch, malformed request): its reason is in ``reason``."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"peer rejected anti-entropy: {reason}")
        self.reason = reason


class AntiEntropyResponder:
    """Answers anti-entropy requests from any number of peers; keeps no per-session state (only a bounded
    `Reassembler` for chunked states in flight and the few values it is sending in chunks), so each request is one
    bounded step.

    Pass ``reassembler`` to share one reassembly budget with other sessions and responders of the same store,
    ``get_state_since`` to answer a pushback with what the peer lacks rather than the whole state, and
    ``get_context`` with ``get_state_for_context`` to answer context rows with diffs, and to send context rows for
    big keys in reply to requests that say (``ft``) they read them, and ``get_states`` (``get_state`` of many keys
    at once) to read each leaf of a bulk walk's reply in one batch.
    """

    def __init__(self, tree: MerkleTree, get_state: GetState, merge: Merge,
                 config: AntiEntropyConfig | None = None, check: CheckState | None = None,
                 reassembler: Reassembler | None = None, get_state_since: GetStateSince | None = None,
                 get_context: GetContext | None = None,
                 get_state_for_context: GetStateForContext | None = None,
                 get_states: GetStatesFn | None = None, prefetch: Prefetch | None = None) -> None:
        self._replica = ExchangeEngine(tree, get_state, merge, config or AntiEntropyConfig(), check, reassembler,
                                       get_state_since, get_context, get_state_for_context, prefetch)
        self._get_states = get_states

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
            replica.count_error(exc.reason)
            reply = encode_message(AntiEntropyMessageType.ERROR, {"reason": exc.reason})
        replica.stats.bytes_sent += len(reply)
        return reply

    def _answer(self, request: bytes) -> bytes:
        replica, tree, config = self._replica, self._replica.tree, self._replica.config
        kind, body = decode_message(request, config.max_message_bytes)
        work: list[WorkItem]
        replica.send_contexts = False
        if kind == AntiEntropyMessageType.HELLO:
            hello = Hello.parse(body)
            shape = (tree.fanout, tree.depth, config.hash_bytes, PROTOCOL_VERSION)
            if (hello.fanout, hello.depth, hello.width, hello.version) != shape:
                raise AntiEntropyProtocolError("shape_mismatch", f"peer {hello} vs local {shape}")
            if hello.root == tree.root():
                return encode_message(AntiEntropyMessageType.IN_SYNC, {})
            work = [ExpandNode(0, 0, False)]
            salt = hello.salt
            count: int | None = len(tree)
        elif kind == AntiEntropyMessageType.BULK:
            reply, count, size = answer_bulk(tree, replica.get_state, body, config.hash_bytes,
                                             config.max_message_bytes, self._get_states)
            replica.stats.walk_rounds += 1
            replica.stats.states_sent += count
            replica.stats.state_bytes_sent += size
            return reply
        elif kind == AntiEntropyMessageType.EXCHANGE:
            ex = Exchange.parse(body, tree, config.hash_bytes)
            if ex.salt is None:
                raise AntiEntropyProtocolError("malformed_exchange", "request without a slice offset")
            salt = ex.salt
            # Stateless: whether this requester reads context rows is said by each request, not remembered.
            replica.send_contexts = bool(ex.features & FEATURE_CONTEXTS) and replica.answers_contexts
            work = replica.absorb(ex, salt)
            count = None
        else:
            raise AntiEntropyProtocolError("unexpected_type", f"{kind!r} is not a request")
        composer = Composer(tree, config, salt=None, count=count)
        queue = deque(work)
        replica.fill(composer, queue, salt)
        for item in queue:
            if not replica.defer(composer, item):
                replica.stats.dropped_items += 1
        return composer.encode(AntiEntropyMessageType.EXCHANGE)


class AntiEntropySession:
    """The initiator's side of one push-pull session: `start` -> request, `receive(reply)` -> next request or None.

    Pure: no I/O, no clock; the only randomness is the slice offset drawn from the injected ``rng``. Pass
    ``reassembler`` to share one reassembly budget with other sessions and responders of the same store, and
    ``get_state_since`` to answer a pushback with what the peer lacks rather than the whole state.

    Context rows (see `engine`) need ``get_context`` and ``get_state_for_context``, and ``peer_reads_contexts``: the
    application knows the responder reads them (and ``ft``). Nothing in this protocol can tell: a responder that
    predates them refuses any message holding them, so without that knowledge none is sent, and the session runs
    exactly as before them.

    A bulk walk (`bulk`) needs ``install`` and ``peer_reads_bulk`` (known the same way); ``check_install`` runs on
    each state before it is installed unmerged (a state that is merged is checked by ``merge``, as ever). The first
    reply tells the peer's key count: a session far behind walks, then descends from the root.
    """

    def __init__(self, tree: MerkleTree, get_state: GetState, merge: Merge, rng: random.Random,
                 config: AntiEntropyConfig | None = None, check: CheckState | None = None,
                 reassembler: Reassembler | None = None, get_state_since: GetStateSince | None = None,
                 get_context: GetContext | None = None, get_state_for_context: GetStateForContext | None = None,
                 peer_reads_contexts: bool = False, install: Install | None = None,
                 check_install: CheckState | None = None, peer_reads_bulk: bool = False,
                 prefetch: Prefetch | None = None) -> None:
        self._replica = ExchangeEngine(tree, get_state, merge, config or AntiEntropyConfig(), check, reassembler,
                                       get_state_since, get_context, get_state_for_context, prefetch)
        self._install = install if peer_reads_bulk else None
        self._check_install = check_install
        self._walk: BulkWalk | None = None
        self._waiting: deque[WaitingStates] = deque()  # walk replies received, not stored yet (`settle`)
        self.max_waiting = 0
        """Walk replies whose states may wait for the driver's `settle` (beyond that a reply's states are stored
        as it is received): a driver that settles while its next requests are out raises it."""
        # Our requests say we read context rows (so the responder may send them) exactly when we may send them.
        self._replica.send_contexts = peer_reads_contexts and self._replica.answers_contexts
        self._features = FEATURE_CONTEXTS if self._replica.send_contexts else 0
        config = self._replica.config
        self._salt = rng.randrange(DIGEST_BYTES - config.hash_bytes + 1)
        self._queue: deque[WorkItem] = deque()
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
        hello = Hello(tree.depth, tree.fanout, len(tree), tree.root(), self._salt, PROTOCOL_VERSION, config.hash_bytes)
        return self._count_sent(encode_message(AntiEntropyMessageType.HELLO, hello.body()))

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
                self.done = True
                return None
            if kind == AntiEntropyMessageType.ERROR:
                reason = body.get("reason") if isinstance(body, dict) else None
                raise AntiEntropyPeerError(reason if isinstance(reason, str) else "unreadable")
            if kind == AntiEntropyMessageType.BULK_STATES and self._walk is not None:
                return self._count_sent(self._absorb_walk(body))
            if kind != AntiEntropyMessageType.EXCHANGE:
                raise AntiEntropyProtocolError("unexpected_type", f"{kind!r} is not a reply")
            ex = Exchange.parse(body, replica.tree, replica.config.hash_bytes)
            if ex.count is not None:
                replica.peer_keys = ex.count
                if self._install is not None and should_walk(len(replica.tree), ex.count):
                    # far behind: the first reply holds only hashes, which the walk makes moot
                    self._walk = BulkWalk(replica.tree, self._salt, replica.config.hash_bytes)
                    return self._count_sent(self._walk.request())
            work = replica.absorb(ex, self._salt)
        except GossipError as exc:
            self._abort(exc)
            raise
        for item in work:
            if len(self._queue) >= replica.config.max_pending:
                stats.dropped_items += 1
                self.incomplete = True
            else:
                self._queue.append(item)
        if not self._queue:
            self.done = True
            return None
        if stats.rounds - stats.walk_rounds >= replica.config.max_rounds:
            self.incomplete = True
            self.done = True
            return None
        composer = Composer(replica.tree, replica.config, salt=self._salt, features=self._features)
        try:
            replica.fill(composer, self._queue, self._salt)
            if self._queue and composer.empty:  # the head cannot fit an empty message (a huge leaf): give up on it
                self._queue.popleft()
                stats.dropped_items += 1
                self.incomplete = True
                replica.fill(composer, self._queue, self._salt)
        except AntiEntropyMergeError as exc:  # a context from the reply that the caller refused
            self._abort(exc)
            raise
        if composer.empty:
            self.done = True
            return None
        return self._count_sent(composer.encode(AntiEntropyMessageType.EXCHANGE))

    @property
    def walking(self) -> bool:
        """True while a bulk walk is under way (the application may refuse other sessions meanwhile)."""
        return self._walk is not None and not self.done

    @property
    def waiting(self) -> int:
        """Walk replies whose states wait for `settle` (the next requests are out meanwhile)."""
        return len(self._waiting)

    @property
    def oldest_waiting(self) -> WaitingStates | None:
        return self._waiting[0] if self._waiting else None

    def unchecked(self) -> list[tuple[WaitingStates, list[tuple[bytes, bytes]]]]:
        """The waiting replies not handed out for checking yet, each with its states that `settle` would check with
        ``check_install`` (those of keys our tree lacks), for the caller to check elsewhere (worker processes, so
        a validating decode does not hold the event loop) and report with `checked`. Each reply is handed out
        once."""
        tree, check = self._replica.tree, self._check_install
        out = []
        for batch in self._waiting:
            if not batch.handed_out and batch.verdict is None:
                batch.handed_out = True
                held = tree.get_many([key for key, _ in batch.rows]) if check else {}
                rows = [(key, state) for key, state in batch.rows if key not in held] if check else []
                out.append((batch, rows))
        return out

    def checked(self, batch: WaitingStates, rows: list[tuple[bytes, bytes]], refused: tuple[bytes, str] | None) -> None:
        """The caller checked ``rows`` of ``batch`` (from `unchecked`): `settle` does not check them again, and if
        ``refused`` names one (key, reason), `settle` refuses that reply, storing nothing of it."""
        error = None if refused is None else AntiEntropyMergeError(refused[0], ValueError(refused[1]))
        batch.verdict = (error, {key for key, _ in rows})

    def settle(self, upto: WaitingStates | None = None, max_rows: int | None = None) -> None:
        """Store the states of the waiting replies, oldest first, up to ``upto`` (all when None), each checked by
        the caller (`checked`) or now: those of keys we lack as they are, in one ``install`` a reply; those we hold
        and differ, merged. A refused state aborts the session (raising) with nothing of its reply stored.

        ``max_rows``: store at most that many states of a reply the caller checked, leaving the rest waiting (the
        caller yields to other work in between: a reply's ~1000 states take the loop ~15 ms). Each part is one
        ``install``, so a crash keeps whole parts; a reply the caller did not check is stored whole, as its check
        must see every state before any is stored."""
        if self.done:
            self._waiting.clear()
            return
        try:
            while self._waiting and (upto is None or upto in self._waiting):
                if not self._settle_oldest(max_rows):
                    return
        except GossipError as exc:
            self._abort(exc)
            raise

    def _settle_oldest(self, max_rows: int | None = None) -> bool:
        """Store the oldest waiting reply's states (or a part: see `settle`); True when it is all stored."""
        batch = self._waiting[0]
        checked: set[bytes] = set()
        if batch.verdict is not None:
            if batch.verdict[0] is not None:
                self._waiting.popleft()
                raise batch.verdict[0]
            checked = batch.verdict[1]
        rows = batch.rows
        whole = max_rows is None or batch.verdict is None or len(rows) <= max_rows
        if whole:
            self._waiting.popleft()
        else:
            rows, batch.rows = rows[:max_rows], rows[max_rows:]
        with self._replica.tree.reading([key for key, _ in rows]):  # one read of their rows serves every lookup
            return self._store(rows, checked, whole)

    def _store(self, rows: list[tuple[bytes, bytes]], checked: set[bytes], whole: bool) -> bool:
        """`_settle_oldest`'s part inside its read of the rows' stored digests."""
        replica = self._replica
        stats, tree = replica.stats, replica.tree
        fresh: list[tuple[bytes, bytes]] = []
        changed: list[tuple[bytes, bytes]] = []
        digests = tree.get_many([key for key, _ in rows])
        for key, state in rows:
            held = digests.get(key)
            if held is None:
                fresh.append((key, state))
            elif held != state_digest(state):
                changed.append((key, state))
        if self._check_install is not None:
            for key, state in fresh:
                if key not in checked:
                    try:
                        self._check_install(key, state)
                    except Exception as exc:  # the caller's decoder: whatever it raises means "not a valid state"
                        raise AntiEntropyMergeError(key, exc) from exc
        held_after_all: list[tuple[bytes, bytes]] = []
        if fresh:
            assert self._install is not None
            try:
                held_after_all = self._install(fresh)
            except Exception as exc:
                raise AntiEntropyMergeError(fresh[0][0], exc) from exc
            changed.extend(held_after_all)
        for key, state in changed:
            try:
                replica.merge(key, state)
            except Exception as exc:
                raise AntiEntropyMergeError(key, exc) from exc
        stats.states_received += len(fresh) + len(changed)
        stats.states_installed += len(fresh) - len(held_after_all)
        stats.state_bytes_received += sum(len(state) for _, state in rows)
        return whole

    def _absorb_walk(self, body: object) -> bytes:
        """A walk reply: its states wait for `settle` while the next request is out (it depends only on the cursor
        and our hashes of the leaves past it, which those states do not touch); once the walk is over they are
        stored at once and the session descends from our root."""
        replica, walk = self._replica, self._walk
        assert walk is not None
        replica.stats.walk_rounds += 1
        self._waiting.append(WaitingStates(walk.absorb(body).rows))
        if not walk.done:
            while len(self._waiting) > self.max_waiting:  # a driver that does not keep up: store them now
                self._settle_oldest()
            return walk.request()
        while self._waiting:
            self._settle_oldest()
        # The walk is over: descend from the root, as if the peer had just said its root differs. What the walk
        # could not bring (our keys it lacks, states too big for a reply, writes meanwhile) is found there.
        self._walk = None
        self._queue.append(ExpandNode(0, 0, False))
        composer = Composer(replica.tree, replica.config, salt=self._salt, features=self._features)
        replica.fill(composer, self._queue, self._salt)
        return composer.encode(AntiEntropyMessageType.EXCHANGE)

    def _abort(self, exc: BaseException) -> None:
        self.done = True
        self.aborted = exc

    def _count_sent(self, message: bytes) -> bytes:
        self._replica.stats.bytes_sent += len(message)
        return message


def run_session(session: AntiEntropySession, responder: AntiEntropyResponder) -> AntiEntropySession:
    """Drive a session against an in-process responder until it ends (tests, benches, and local catch-up)."""
    request: bytes | None = session.start()
    while request is not None:
        request = session.receive(responder.handle(request))
    return session


__all__ = [
    "AntiEntropyPeerError",
    "AntiEntropyResponder",
    "AntiEntropySession",
    "WaitingStates",
    "run_session",
]
