"""The knobs both sides of an anti-entropy session share, checked once where they are built."""

from __future__ import annotations

from dataclasses import dataclass

from rumor.gossip.anti_entropy.merkle import DIGEST_BYTES
from rumor.gossip.errors import ConfigError

MIN_MESSAGE_BYTES = 4096
"""Smallest ``max_message_bytes``: a message keeps fixed reserves (512 bytes beside a chunk, 256 beside deferral
notes), and what is left must still let a session progress."""


@dataclass(frozen=True, slots=True)
class AntiEntropyConfig:
    """Bounds and wire width of a session; both peers must agree on ``hash_bytes`` (HELLO checks it)."""

    max_message_bytes: int = 60 * 1024
    """Largest encoded message either side sends, framing included; leave room for the transport's own sealing."""
    hash_bytes: int = 3
    """Width of the hash, digest and sketch slices on the wire: a difference hides with odds ~2**(-8 * width)."""
    max_pending: int = 200_000
    """Work items the initiator queues at most; beyond it work is dropped and the session marked incomplete."""
    max_rounds: int = 10_000
    """Round trips one session makes at most before it stops, marked incomplete."""
    max_states_per_message: int = 200
    """Whole states one message carries at most, however small: the receiver merges each (decode, join, log,
    re-encode for its digest) before it answers, so this bounds a step's work as ``max_message_bytes`` bounds its
    bytes (a reply of 1,000 small states held the merging side's event loop 100-450 ms)."""
    max_listed_keys: int = 512
    """Keys the leaf listings of one message (ours, and those we compare with the peer's) read at most, once the
    message holds something: a leaf holds about 30 keys at 1M. A message full of listings read and hashed 8,000 of
    them, a step of 100-250 ms; 2,048 still made steps of 15-48 ms of CPU on both sides of every session under a
    cluster write load at 1M keys, where in-flight deltas keep hundreds of leaves different (the rest of the
    listings waits for the next round, a loopback round trip)."""
    context_min_bytes: int = 4096
    """A key both sides hold differently whose state (the tree's size hint) is at least this big goes first as a
    context row instead of its state, when the peer reads them: each side then sends only what the other lacks,
    at the price of one more message. Below it, sending the whole state is cheaper than waiting a round trip more."""

    def __post_init__(self) -> None:
        if self.max_message_bytes < MIN_MESSAGE_BYTES:
            raise ConfigError("max_message_bytes", self.max_message_bytes, f"must be >= {MIN_MESSAGE_BYTES}")
        if not 2 <= self.hash_bytes <= DIGEST_BYTES:
            raise ConfigError("hash_bytes", self.hash_bytes, f"must be in 2..{DIGEST_BYTES}")
        if self.max_pending < 1:
            raise ConfigError("max_pending", self.max_pending, "must be >= 1")
        if self.max_rounds < 1:
            raise ConfigError("max_rounds", self.max_rounds, "must be >= 1")
        if self.max_states_per_message < 1:
            raise ConfigError("max_states_per_message", self.max_states_per_message, "must be >= 1")
        if self.max_listed_keys < 1:
            raise ConfigError("max_listed_keys", self.max_listed_keys, "must be >= 1")
        if self.context_min_bytes < 0:
            raise ConfigError("context_min_bytes", self.context_min_bytes, "must be >= 0")


__all__ = ["MIN_MESSAGE_BYTES", "AntiEntropyConfig"]
