"""Big keys' anti-entropy blobs encoded off the event loop, for their digests and for sending them whole.

A key's digest is the hash of its blob (`digests`), so every change of a million-element set costs a full encode
(0.4 s) at its next rehash, and so does sending it whole. For a key whose last known blob is `Offloader.min_bytes`
or more and whose state is decoded (a state still held as its stored bytes encodes for free), the digest's encoder
(`ReplicaCore.digest_blob`) answers `digests.DEFERRED` and starts an encode on the worker instead; the key stays
dirty meanwhile. The worker reads the live state while the loop may change it: the blob is kept only if no change
of the key was counted meanwhile (`ReplicaCore.changes`), so it is the state as one instant saw it; then the digest
is set at once and the blob is kept for senders until the key changes again. A discarded encode is simply asked
for again by a later flush. A worker that fails for another reason is reported (the key stays dirty; the next
flush asks again).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from rumor.crdt import encode
from rumor.server.offload import ChangeCounter, Offloader


class PreparedBlobs:
    """``blob_of(type_name, encoded state)`` makes the anti-entropy blob; ``ready(key, blob)`` hears of each blob
    encoded off the loop that still holds; ``report(exc)`` of each failure that is not a change meanwhile."""

    def __init__(self, offloader: Offloader, changes: ChangeCounter, blob_of: Callable[[str, bytes], bytes],
                 ready: Callable[[str, bytes], None], report: Callable[[BaseException], None]) -> None:
        self.offloader = offloader
        self.changes = changes
        self._blob_of = blob_of
        self._ready = ready
        self._report = report
        self._blobs: dict[str, tuple[int, bytes]] = {}  # key -> (change mark, blob), each holding a watch
        self._encoding: dict[str, asyncio.Task[None]] = {}
        self._retry_at: dict[str, float] = {}  # key -> loop time before which a discarded encode is not restarted
        self.encoded = 0
        """Blobs encoded off the loop and kept (tests and benches)."""

    def blob(self, key: str) -> bytes | None:
        """The key's blob if one encoded off the loop still describes its state."""
        held = self._blobs.get(key)
        if held is None:
            return None
        mark, blob = held
        if self.changes.changed_since(key, mark):
            del self._blobs[key]
            self.changes.unwatch(key)
            return None
        return blob

    def encoding(self, key: str) -> bool:
        return key in self._encoding

    def start(self, key: str, type_name: str, state: Any) -> None:
        """Encode ``state`` (``key``'s live state, of ``type_name``) on the worker, unless that is under way, or
        the last encode of the key was discarded lately: a key changing faster than it encodes would otherwise
        keep the worker busy for nothing (it waits twice the discarded encode's time, so at most half the worker)."""
        loop = asyncio.get_running_loop()
        if key in self._encoding or loop.time() < self._retry_at.get(key, 0.0):
            return
        mark = self.changes.watch(key)
        task = loop.create_task(self._encode(key, type_name, state, mark))
        self._encoding[key] = task

    async def _encode(self, key: str, type_name: str, state: Any, mark: int) -> None:
        kept = False
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            try:
                data = await self.offloader.run(encode, state)
            except Exception as exc:
                if not self.changes.changed_since(key, mark):  # not the loop changing the state under the encoder
                    self._report(exc)
                return
            if self.changes.changed_since(key, mark):
                self._retry_at[key] = loop.time() + 2 * (loop.time() - started)
                return
            self._retry_at.pop(key, None)
            blob = self._blob_of(type_name, data)
            previous = self._blobs.pop(key, None)
            if previous is not None:
                self.changes.unwatch(key)
            self._blobs[key] = (mark, blob)
            kept = True
            self.encoded += 1
            self._ready(key, blob)
        finally:
            self._encoding.pop(key, None)
            if not kept:
                self.changes.unwatch(key)

    def cancel(self) -> None:
        for task in self._encoding.values():
            task.cancel()


__all__ = ["PreparedBlobs"]


#: a prepared diff discarded by a change of its key (the worker read a moving state) is made again this many times
#: in all before the core makes it inline
DIFF_ATTEMPTS = 3

Slot = tuple[str, str, bytes]
"""``("context" | "state", key, the peer's context or state bytes)``: what a prepared diff answers."""


class PreparedDiffs:
    """What anti-entropy asks of a big key's state while it composes a message (`ReplicaCore.get_blob_for_context`,
    `ReplicaCore.get_blob_since`: a `delta_since` over the whole state, 1.6 s for a million elements, then its
    encoding), computed off the loop before the message is composed: the driver hands each peer message to
    `prepare` first, which reads the context rows and pushed states it holds for our big keys, and has their
    diffs made on the worker; the core takes them (`take`) instead of computing them inline.

    The worker reads the live state, kept only if no change of the key was counted meanwhile. Used a little later,
    a diff may miss a change made since: still correct, as the peer is sent part of what it lacks (our state only
    grows, and a diff of an earlier state is part of the later one's); the next session sends the rest, and pushes
    carry local changes anyway. A diff not ready (discarded, failed) is computed inline as before."""

    def __init__(self, offloader: Offloader, changes: ChangeCounter, big_state: Callable[[str], Any],
                 read_peer_message: Callable[[bytes], Any], work: Callable[[Slot, Any], bytes]) -> None:
        self.offloader = offloader
        self.changes = changes
        self._big_state = big_state
        self._read = read_peer_message
        self._work = work
        self._ready: dict[Slot, bytes] = {}
        self.prepared = 0
        """Diffs made off the loop and kept (tests and benches)."""

    async def prepare(self, ae: bytes) -> list[Slot]:
        """Make the diffs ``ae`` (a peer's anti-entropy message) will ask of our big keys; returns their slots, for
        `discard` once the message is handled. Anything it cannot read is left to the core, which refuses it."""
        slots: list[Slot] = []
        for slot in self._read(ae):
            state = self._big_state(slot[1])
            if state is None or slot in self._ready:
                continue
            diff = await self._attempts(slot, state)
            if diff is not None:
                self._ready[slot] = diff
                slots.append(slot)
                self.prepared += 1
        return slots

    async def _attempts(self, slot: Slot, state: Any) -> bytes | None:
        """The diff, made again (up to `DIFF_ATTEMPTS` times in all) while a change of the key discards it."""
        key = slot[1]
        for _ in range(DIFF_ATTEMPTS):
            mark = self.changes.watch(key)
            try:
                diff = await self.offloader.run(self._work, slot, state)
            except Exception:  # a garbled context or state, or the loop changing the state: retried, then inline
                diff = None
            finally:
                changed = self.changes.changed_since(key, mark)
                self.changes.unwatch(key)
            if not changed:
                return diff
            state = self._big_state(key)  # the state may have been replaced (an adopted join)
            if state is None:
                return None
        return None

    def take(self, slot: Slot) -> bytes | None:
        return self._ready.pop(slot, None)

    def discard(self, slots: list[Slot]) -> None:
        for slot in slots:
            self._ready.pop(slot, None)
