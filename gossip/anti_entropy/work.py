"""Work items: what one side still has to put into its next messages, queued in the order they are placed.

Absorbing a peer's message turns it into items; composing the next message places items from the front of the
queue until it is full (`ExchangeEngine.fill`). Two kinds are lazy, `DiffListing` and `AnswerWant`: they expand into
other items only once the message has room, so a full reply defers them without doing the work.
Slotted dataclasses, never changed once made, and not frozen: a catch-up makes one per key and per tree node, and a
frozen dataclass or a named tuple costs two to three times as much to make.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import final


@final
@dataclass(slots=True)
class ExpandNode:
    """Send my hashes of ``node``'s children (a sketch of them when ``sketch``), or my listing at the leaf level."""

    level: int
    node: int
    sketch: bool


@final
@dataclass(slots=True)
class AskGroup:
    """Ask the peer for its full group of ``node``'s children (my sketch comparison found several differing)."""

    level: int
    node: int


@final
@dataclass(slots=True)
class AskStates:
    """Ask for the states of the keys in ``leaf`` that ``name`` (a key fingerprint or an entry tag) names."""

    leaf: int
    name: bytes


@final
@dataclass(slots=True)
class SendState:
    """Send my state of ``key``; with ``pushback`` the peer sends its merged state back if that still differs.
    With ``pushback``, a big key goes as a context row instead when the peer reads them (`engine.ExchangeEngine`).

    ``since``: the state the peer just sent of ``key`` (set when this answers its pushback). The peer holds at least
    that, so what it lacks of mine is enough: the caller's ``get_state_since`` makes that diff, when it has one.
    """

    key: bytes
    pushback: bool
    since: bytes | None = None


@final
@dataclass(slots=True)
class SendDiff:
    """Send what a holder of ``context`` (the peer's opaque context of ``key``, from its context row) lacks of my
    state, without a pushback flag: the context rows carry the other direction. Empty ``context``: the peer holds
    nothing of ``key``, so that is my whole state."""

    key: bytes
    context: bytes


@final
@dataclass(slots=True)
class AnswerContext:
    """Send my context of ``key`` as an *answer* row (the peer sent me its own): the peer answers it with a diff
    only, never with another context row, so an exchange of contexts ends after one round."""

    key: bytes


@final
@dataclass(slots=True)
class SendChunks:
    """Send chunks ``next_chunk``... of my state of ``key``, too big for one message, as transfer ``transfer_id``."""

    key: bytes
    transfer_id: bytes
    next_chunk: int
    pushback: bool


@final
@dataclass(slots=True)
class AskChunks:
    """Ask the peer for chunks ``next_chunk``... of its transfer ``transfer_id`` (it said more are available)."""

    key: bytes
    transfer_id: bytes
    next_chunk: int
    pushback: bool


@final
@dataclass(slots=True)
class DiffListing:
    """Lazy: compare the peer's listing of ``leaf`` (``entries`` in listing ``form``) with mine."""

    leaf: int
    entries: bytes
    form: int


@final
@dataclass(slots=True)
class AnswerWant:
    """Lazy: send my states of the keys in ``leaf`` that the peer asked for by ``name``."""

    leaf: int
    name: bytes


WorkItem = (ExpandNode | AskGroup | AskStates | SendState | SendDiff | AnswerContext | SendChunks | AskChunks
            | DiffListing | AnswerWant)

__all__ = [
    "AnswerContext",
    "AnswerWant",
    "AskChunks",
    "AskGroup",
    "AskStates",
    "DiffListing",
    "ExpandNode",
    "SendChunks",
    "SendDiff",
    "SendState",
    "WorkItem",
]
