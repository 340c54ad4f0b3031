"""A key's CRDT state as replication moves it: checking what a peer sent, and making what a peer lacks of ours.

Three ways to learn what a peer holds, one answer each, always an encoded ``delta_since`` the peer's context (it
merges there like our whole state, and is as small as the difference): from a state it sent (an anti-entropy
push-back, read repair: `diff_for`), or from its context alone (an anti-entropy context row: `context_of` and
`diff_for_context`), which is what lets neither side send a big state whole.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from rumor.crdt import CausalContext, CRDTError, decode, decode_context, encode, encode_context
from rumor.server.replication.errors import ReplicationProtocolError
from rumor.server.values import TYPES

MAX_STATE_DECODE_BYTES = 512 * 1024 * 1024


@cache
def _bottom(type_name: str) -> bytes:
    return encode(TYPES[type_name]())


def is_bottom(type_name: str, data: bytes) -> bool:
    """Whether ``data`` is the encoded bottom of ``type_name`` (the empty state: no dot seen, nothing held), which
    every state of that type already includes: merging it changes nothing. Peers send it as the diff of a key
    they hold nothing of ours past (`delta_since` our context), and counting that merge as a change cost a big key
    a full encode for its digest and discarded the diffs in flight for it (bench/scale_bench.py's big-set sync:
    two 1M-element diffs made again, 0.7 s of the worker each). Canonical encodings make the test a comparison."""
    return type_name in TYPES and data == _bottom(type_name)


def decode_state(type_name: str, data: bytes) -> Any:
    """Decode a received state/delta and check it is of the type it claims; `ReplicationProtocolError` otherwise."""
    cls = TYPES.get(type_name)
    if cls is None:
        raise ReplicationProtocolError("unknown_type_name", type_name)
    try:
        state = decode(data, max_bytes=MAX_STATE_DECODE_BYTES)
    except CRDTError as exc:
        raise ReplicationProtocolError("bad_state", str(exc)[:200]) from None
    if type(state) is not cls:
        raise ReplicationProtocolError("type_mismatch", f"{type_name} carried a {type(state).__name__}")
    return state


def diff_for(type_name: str, state: Any, peer_data: bytes) -> bytes:
    """What a peer holding the encoded state ``peer_data`` of the key lacks of ``state``: the encoded
    ``delta_since`` its context, which merges there like the whole state. The whole state when ``peer_data``
    does not decode as a state of ``type_name`` (already checked on receipt: not expected)."""
    try:
        peer = decode_state(type_name, peer_data)
    except ReplicationProtocolError:
        return encode(state)
    return encode(state.delta_since(peer.context()))


def context_of(state: Any) -> bytes:
    """The encoded causal context of ``state``: a counter per replica and a cloud of gaps, however big the state."""
    return encode_context(state.context())


def read_context(context: bytes) -> CausalContext:
    """A peer's encoded context, checked; one that does not decode came garbled: `ReplicationProtocolError`
    ``bad_context``."""
    try:
        return decode_context(context)
    except CRDTError as exc:
        raise ReplicationProtocolError("bad_context", str(exc)[:200]) from None


def diff_for_context(state: Any, context: CausalContext) -> bytes:
    """What a peer whose state of the key has ``context`` lacks of ``state``, encoded."""
    return encode(state.delta_since(context))


__all__ = ["MAX_STATE_DECODE_BYTES", "context_of", "decode_state", "diff_for", "diff_for_context", "read_context"]
