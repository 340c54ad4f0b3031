"""The join of a one-entry delta, done directly: how ``DotKernel.merge`` (and ``ORMap.merge``) apply the commonest
deltas without the general join's walks.

Almost every delta is one mutator's: an add, a counter increment (the replica's new total under a fresh dot,
covering its previous dot), a register overwrite or one LWWMap field write (a fresh dot covering what the writer
observed of that key). Each holds one entry ``(dot, key, payload)`` and a context of that dot plus the few it
replaces. For such a delta the join (``crdt.dot_kernel``'s module docstring) is three steps:

1. each dot of the delta's context that the receiver holds, but the entry's own, leaves the store. In a mutator's
   delta those dots are the replaced entries of the same key (a dot is one event, which wrote one key), but the
   rule needs no check of that: held under any key, the general join would remove them too;
2. the entry arrives unless the receiver's context (before this merge) covers it: covered means it is here
   already, or was removed since;
3. the receiver's context gains the delta's dots.

Nothing here depends on delivery order, duplicates, or what the receiver has seen: the steps are the join
restricted to that shape, so ``tests/crdt/test_fast_paths.py`` checks the result equals the general join (store,
index and context) for deltas of every type delivered out of order, twice, and to replicas behind or ahead.
Any other shape (several entries, or a context of more than ``MAX_DOTS`` dots, such as a full state that
happens to hold one entry, whose context the general join walks more cleverly) is left to the general join.
"""

from __future__ import annotations

from typing import Any, ClassVar, Protocol

from rumor.crdt.causal_context import CausalContext
from rumor.crdt.entries import Entries, with_entry

#: the most dots a delta's context may name for the direct path (a write covers its key's few observed dots)
MAX_DOTS = 8


class Store(Protocol):
    """The parts of a ``DotKernel`` this module uses (named here so it need not import the kernel)."""

    _keys: dict[Any, Any]  # crdt.entries.Entries
    _dots: dict[str, dict[int, Any]]
    _ctx: CausalContext
    #: whether the store keeps an index of its keys that ``_discard`` maintains (ORMap): then entries always
    #: leave through ``_discard``
    _KEYS_INDEXED: ClassVar[bool]

    def _discard(self, r: str, c: int) -> None: ...


def apply_write(state: Store, delta: Store, replace_in_place: bool = True) -> bool:
    """Join ``delta`` into ``state`` in place if it is one entry under a context of at most ``MAX_DOTS`` dots.

    Returns False, having changed nothing, for any other shape. Entries leave through ``state._discard`` (so a
    subclass's index hears of them; one that keeps an index of keys passes ``replace_in_place=False``, which keeps
    a replaced entry from being swapped without it); the new entry is inserted into the store directly, and a caller
    keeping an index of keys indexes ``delta._keys`` afterwards, as after the general join.
    """
    okeys = delta._keys
    if len(okeys) != 1:
        return False
    octx = delta._ctx
    ovv = octx._vv
    ocloud = octx._cloud
    if not ovv and len(ocloud) == 1:
        for r, cs in ocloud.items():
            size = len(cs)
            if size == 1:  # the commonest of all: a fresh add, whose context is its own dot alone
                return _apply_own_dot(state, okeys, r, cs)
            if size == 2 and replace_in_place:  # a counter increment, an overwrite by its own writer
                for key, okd in okeys.items():  # noqa: B007  (the one entry, read out of its dict)
                    pass
                # the entry's dot and the one before it of r, which the key holds as its one entry, while the
                # state has seen every earlier dot of r and no later one: the entry replaces the held one in place
                # (the store has one entry a dot, so no other dot of cs is held), as _discard then an insert would
                if type(okd) is tuple and okd[0] == r:
                    c = okd[1]
                    held = state._keys.get(key)
                    if type(held) is tuple and held[0] == r and held[1] < c and held[1] in cs and c in cs:
                        sctx = state._ctx
                        svv = sctx._vv
                        if svv.get(r, 0) == c - 1 and r not in sctx._cloud:
                            of_r = state._dots[r]
                            del of_r[held[1]]
                            of_r[c] = key
                            state._keys[key] = okd
                            svv[r] = c
                            return True
            if size <= MAX_DOTS and _apply_successor(state, okeys, r, cs):
                return True
    n = sum(ovv.values()) if ovv else 0
    for cs in ocloud.values():
        n += len(cs)
    if n > MAX_DOTS:
        return False
    for key, okd in okeys.items():  # noqa: B007  (the one entry, read out of its dicts)
        if type(okd) is not tuple:
            return False
        r, c, payload = okd
    sctx = state._ctx
    svv = sctx._vv
    scloud = sctx._cloud
    cl = scloud.get(r)
    fresh = c > svv.get(r, 0) and (cl is None or c not in cl)
    sdots = state._dots
    if sdots:  # 1.
        for q, m in ovv.items():
            mine = sdots.get(q)
            if mine:
                for k in range(1, m + 1):
                    if k in mine and (k != c or q != r):
                        state._discard(q, k)
        for q, cs in ocloud.items():
            mine = sdots.get(q)
            if mine:
                for k in cs:
                    if k in mine and (k != c or q != r):
                        state._discard(q, k)
    if fresh:  # 2.
        mine = sdots.get(r)
        if mine is None:
            sdots[r] = {c: key}
        else:
            mine[c] = key
        kd = state._keys.get(key)
        state._keys[key] = okd if kd is None else with_entry(kd, r, c, payload)
    for q, m in ovv.items():  # 3., keeping the context canonical (contiguous dots in the vector)
        top = svv.get(q, 0)
        if m > top:
            if q in scloud:
                for k in range(top + 1, m + 1):
                    sctx.add((q, k))
            else:
                svv[q] = m
    for q, cs in ocloud.items():
        if len(cs) == 1 and q not in scloud:  # the usual: one fresh dot of q, nothing of q pending here
            for k in cs:
                top = svv.get(q, 0)
                if k == top + 1:
                    svv[q] = k
                elif k > top:
                    scloud[q] = {k}
        else:
            for k in cs:
                sctx.add((q, k))
    return True


def _apply_own_dot(state: Store, okeys: dict[Any, Entries], r: str, cs: set[int]) -> bool:
    """``apply_write`` for a delta whose context is just the dot of its one entry: nothing of ``state`` can be
    covered but that dot, which ``state`` either has seen (then nothing changes) or gains."""
    for c in cs:
        sctx = state._ctx
        svv = sctx._vv
        top = svv.get(r, 0)
        if c <= top:
            return True
        scl = sctx._cloud.get(r)
        if scl is not None and c in scl:
            return True
        for key, okd in okeys.items():
            if type(okd) is not tuple or okd[1] != c or okd[0] != r:
                return False
            kd = state._keys.get(key)
            state._keys[key] = okd if kd is None else with_entry(kd, r, c, okd[2])
            mine = state._dots.get(r)
            if mine is None:
                state._dots[r] = {c: key}
            else:
                mine[c] = key
        if c == top + 1 and scl is None:
            svv[r] = c
        else:
            sctx.add((r, c))
    return True


def _apply_successor(state: Store, okeys: dict[Any, Entries], r: str, cs: set[int]) -> bool:
    """``apply_write`` for a replica's next write over its own earlier ones (a counter increment, an overwrite by
    the writer of what it overwrites): the context is dots of ``r`` only, the entry's is the highest, and ``state``
    has seen every earlier dot of ``r`` and no later one. Then the join removes the covered dots ``state`` holds,
    adds the entry, and the vector of ``r`` moves to it. False, having changed nothing, for any other case."""
    c = max(cs)
    sctx = state._ctx
    svv = sctx._vv
    if svv.get(r, 0) != c - 1 or r in sctx._cloud:
        return False
    for key, okd in okeys.items():
        if type(okd) is not tuple or okd[1] != c or okd[0] != r:
            return False
        mine = state._dots.get(r)
        if mine:
            for k in cs:
                if k in mine and k != c:
                    state._discard(r, k)
            mine = state._dots.get(r)  # emptied and dropped by the discards, perhaps
        if mine is None:
            state._dots[r] = {c: key}
        else:
            mine[c] = key
        kd = state._keys.get(key)
        state._keys[key] = okd if kd is None else with_entry(kd, r, c, okd[2])
    svv[r] = c
    return True
