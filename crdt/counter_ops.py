"""Op-keyed counter contributions: an increment that names its request (an op_id) counts once cluster-wide.

A plain increment adds to the acting replica's running total (``crdt.gcounter``): two replicas that each apply a
retried request add it twice, and no merge can tell. An increment made with an op_id is instead an entry keyed by
the op, ``(op_id,)`` (a 1-tuple: never equal to a replica id, which keys the running totals), whose payload is
``(amount, at_ms)``:

* a replica that already holds the op's key makes no delta at all (the retry arrived after the first attempt);
* two replicas that applied it before hearing of each other (a retry across a partition) each hold an entry
  under the op's key, with their own dots; the join keeps both, and the read counts the key once, by the largest
  amount among its entries (the same request gives the same amount; an op_id reused with another amount still
  reads the same everywhere, whatever the replica ids);
* ``at_ms`` is when the applying replica made the entry (the caller's clock, handed in: this package reads none).

State must not grow with every request ever made, so contributions *fold* into running totals once old: the
fold delta removes every entry of the folded keys (its context covers their dots) and adds their amounts to the
folding replica's total under a fresh dot, leaving the value unchanged. Exactly one replica folds a key: the
owner of its smallest dot, among the entries it knows. A key is due when all its entries are older than the
retention, or when the state holds more op keys than the count retention allows (the oldest first).

The documented limit: a retry that arrives after its op was folded counts again (the key is gone), and so does
an op applied on both sides of a partition that outlived the retention (each side folds what it alone knows).
Within the retention, on any replicas, in any order, an op counts once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar

from rumor.crdt import entries
from rumor.crdt.errors import InvalidOperationError

if TYPE_CHECKING:
    from rumor.crdt.dot_kernel import DotKernel

#: the longest op_id accepted (a client's idempotency key; the server allows as many)
MAX_OP_ID_CHARS = 256
#: at_ms bound: a signed 64-bit wall clock in milliseconds
MAX_AT_MS = (1 << 63) - 1

OpKey = tuple[str]
S = TypeVar("S", bound="DotKernel[Any]")


def op_key(op_id: str) -> OpKey:
    if type(op_id) is not str or not 0 < len(op_id) <= MAX_OP_ID_CHARS:
        raise InvalidOperationError(f"an op_id is a string of 1 to {MAX_OP_ID_CHARS} characters")
    return (op_id,)


def is_op_key(key: object) -> bool:
    return type(key) is tuple


def check_at_ms(at_ms: object) -> int:
    if type(at_ms) is not int or not 0 <= at_ms <= MAX_AT_MS:
        raise InvalidOperationError("an op's time is a non-negative int of milliseconds")
    return at_ms


def contribution(kd: Any) -> Any:
    """What an op key adds to the value: the largest amount among its entries (one entry: its amount)."""
    if type(kd) is tuple:
        return kd[2][0]
    return max(amount for amount, _ in entries.payloads(kd))


def has_ops(state: DotKernel[Any]) -> bool:
    """Whether ``state`` holds any op-keyed entry (a counter's method: ``has_ops = counter_ops.has_ops``)."""
    return any(type(key) is tuple for key in state._keys)


def op_delta(state: S, replica: str, op_id: str, amount: Any, at_ms: int) -> S:
    """The delta adding ``amount`` under the op's key, or an empty delta if ``state`` holds that op already."""
    key = op_key(op_id)
    check_at_ms(at_ms)
    if key in state._keys:
        return type(state)()
    return state._write_delta(replica, key, (amount, at_ms))


def op_keys(state: DotKernel[Any]) -> Iterator[tuple[OpKey, Any]]:
    return ((k, kd) for k, kd in state._keys.items() if type(k) is tuple)


def due_for_fold(state: DotKernel[Any], replica: str, before_ms: int, keep: int,
                 limit: int) -> list[tuple[OpKey, Any]]:
    """The op keys ``replica`` folds now: those it owns (its dot is the key's smallest) that are older than
    ``before_ms`` (every entry) or, past the newest ``keep`` op keys of the state, the oldest; at most ``limit``."""
    aged: list[tuple[int, OpKey, Any]] = []
    for key, kd in op_keys(state):
        newest = max(at for _, at in entries.payloads(kd))
        aged.append((newest, key, kd))
    aged.sort(key=lambda row: (row[0], row[1]))
    surplus = len(aged) - keep
    due: list[tuple[OpKey, Any]] = []
    for i, (newest, key, kd) in enumerate(aged):
        if newest >= before_ms and i >= surplus:
            break  # sorted by age: every later key is newer and within the count
        if min(entries.dots(kd))[0] == replica:
            due.append((key, kd))
            if len(due) == limit:
                break
    return due


def fold(state: S, replica: str, before_ms: int, keep: int, limit: int, running_total: Callable[[Any], Any],
         add: Callable[[Any, Any], Any]) -> S:
    """The delta folding the op keys ``replica`` owns that are due (`due_for_fold`) into its running total (read
    from its entries by ``running_total``; amounts summed by ``add``); empty when nothing is due."""
    due = due_for_fold(state, replica, before_ms, keep, limit)
    if not due:
        return type(state)()
    held = state._keys.get(replica)
    return fold_delta(state, replica, due, running_total(held) if held else None, add)


def fold_delta(state: S, replica: str, due: list[tuple[OpKey, Any]], total: Any,
               add: Callable[[Any, Any], Any]) -> S:
    """The delta folding ``due`` into ``replica``'s running total ``total`` (None: it has none yet)."""
    for _, kd in due:
        amount = contribution(kd)
        total = amount if total is None else add(total, amount)
    delta = state._write_delta(replica, replica, total)
    for _, kd in due:
        for dot in entries.dots(kd):
            delta._ctx.add(dot)
    return delta


def op_entry_from_wire(key: Any, payload: Any, check_amount: Callable[[Any], Any]) -> tuple[OpKey, Any]:
    """Validate a decoded op entry: ``(op_id,)`` and ``(amount, at_ms)``; raises ValueError."""
    if len(key) != 1 or type(key[0]) is not str or not 0 < len(key[0]) <= MAX_OP_ID_CHARS:
        raise ValueError("an op key is (op_id,) with a string op_id")
    if type(payload) is not tuple or len(payload) != 2:
        raise ValueError("an op entry's payload is (amount, at_ms)")
    amount, at_ms = payload
    if type(at_ms) is not int or not 0 <= at_ms <= MAX_AT_MS:
        raise ValueError("an op's time is a non-negative int of milliseconds")
    return key, (check_amount(amount), at_ms)
