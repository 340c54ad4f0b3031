"""A key's entries in the dot store, in the smallest form that holds them.

Almost every key holds one entry (an element added once, a field or register written once, a counter's one
replica): that entry is the tuple ``(replica, counter, payload)``, 64 bytes. Two or more concurrent entries (an
element added by several replicas, a field's concurrent writes) live in a dict ``{(replica, counter): payload}``.
The form follows the count exactly (a dict never holds fewer than two), so two equal stores hold equal values and
``==`` on stores stays structural. A dict of one entry plus its dot tuple cost 280 bytes: on a million-entry map
this form is what brings a map entry near the size of the Rust-backed libraries' (see bench/rust_peers.py).

Hot paths test ``type(kd) is tuple`` inline; everything else goes through these functions, which also read a
mapping of several entries that is not a dict (ORMap's read-only view of a nested value).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

DotT = tuple[str, int]
#: one entry ``(replica, counter, payload)``, or a dict of two or more ``{(replica, counter): payload}``
Entries = tuple[str, int, Any] | dict[DotT, Any]


def items(kd: Entries | Mapping[DotT, Any]) -> Iterable[tuple[DotT, Any]]:
    if isinstance(kd, tuple):
        return (((kd[0], kd[1]), kd[2]),)
    return kd.items()


def dots(kd: Entries | Mapping[DotT, Any]) -> Iterable[DotT]:
    if isinstance(kd, tuple):
        return ((kd[0], kd[1]),)
    return kd.keys()


def payloads(kd: Entries | Mapping[DotT, Any]) -> Iterable[Any]:
    if isinstance(kd, tuple):
        return (kd[2],)
    return kd.values()


def count(kd: Entries | Mapping[DotT, Any]) -> int:
    return 1 if type(kd) is tuple else len(kd)


def payload_at(kd: Entries | Mapping[DotT, Any], r: str, c: int) -> Any:
    """The payload of dot ``(r, c)``, which ``kd`` holds."""
    if isinstance(kd, tuple):
        return kd[2]
    return kd[(r, c)]


def with_entry(kd: Entries | None, r: str, c: int, payload: Any) -> Entries:
    """``kd`` plus the entry ``(r, c): payload`` (a dict is updated in place and returned)."""
    if kd is None:
        return (r, c, payload)
    if isinstance(kd, tuple):
        if kd[1] == c and kd[0] == r:
            return kd  # dots are unique: the same dot holds the same payload
        return {(kd[0], kd[1]): kd[2], (r, c): payload}
    kd[(r, c)] = payload
    return kd


def without_entry(kd: Entries, r: str, c: int) -> Entries | None:
    """``kd`` less the entry ``(r, c)`` (which it holds); None when nothing is left."""
    if isinstance(kd, tuple):
        return None
    del kd[(r, c)]
    if len(kd) == 1:
        for (q, k), payload in kd.items():
            return (q, k, payload)
    return kd


def copied(kd: Entries) -> Entries:
    return kd if isinstance(kd, tuple) else dict(kd)
