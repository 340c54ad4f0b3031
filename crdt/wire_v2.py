"""Wire format version 2: a state as a few flat columns, packed by one msgpack call and read back by one.

Version 1 (``crdt.wire_v1``) nested a list per entry and an ext wrapper per LWW payload, so decoding a big map made
six Python calls per entry and then re-encoded the whole state to prove it canonical. Version 2 lays a state out
as columns (a handful of lists of scalars, however many entries) and checks canonical form while it builds:

``[type_name, replicas, vector, cloud, groups, runs, columns, deferred]``

* ``replicas``: the replica-id table, sorted, each id once, exactly the replicas of the context (every entry's dot
  is covered by the context, so its replica is there too). Everything below names a replica by its index.
* ``vector``: ``[replica, n, ...]``; ``cloud``: ``[replica, count, counter, ...]`` (counters ascending, each past
  ``n + 1``: the context is compact). Replicas ascending in both.
* ``groups``: ``[replica, run count, ...]`` (ascending) and ``runs``: ``[gap, length, ...]``: the entries' dots in
  order, replica by replica, as runs of consecutive counters (a run starts ``gap`` past the previous run's end,
  counted from 0; a gap of 1 after a run would have extended it, so later gaps are at least 2). A replica's
  sequential writes are one run: two small ints, however many entries.
* ``columns``: one list per field of an entry, in dot order, by the type's layout (``LAYOUTS``): the key (absent
  when the replica or nothing is the key), the payload (a plain value; a PN pair as two columns; an LWW payload
  as a timestamp column plus a value column, the replica being the entry's own). Timestamps are runs
  ``[wall - previous wall, logical, length, ...]``: a batch written at one timestamp is three ints.
* ``deferred``: ``[[vector, cloud, keys or nil], ...]`` with replica ids spelt out, rows and keys sorted by their
  bytes, ``[]`` when there are none.

A context alone is ``["ctx", vector, cloud]`` and an op ``["op", replica, counter, deps, state]``, replica ids
spelt out. ``crdt.encoding`` frames these (magic byte, version, compression flag) and checks that the msgpack
layer is minimal by packing the decoded tree once more (one C call, not a re-encode of the state).
"""

from __future__ import annotations

from itertools import pairwise, repeat
from typing import Any

from rumor.crdt.causal_context import CausalContext
from rumor.crdt.causal_delivery import Op
from rumor.crdt.dot import Dot
from rumor.crdt.dot_kernel import Deferred, DotKernel, context_identity
from rumor.crdt.entries import payload_at, with_entry
from rumor.crdt.errors import CRDTError, DecodeError
from rumor.crdt.hlc import HLCTimestamp
from rumor.crdt.version_vector import VersionVector
from rumor.crdt.wire_values import (
    AS_IS,
    MAX_INT,
    MIN_INT,
    WIRE_SCALARS,
    int_to_wire,
    pack,
    type_for,
    value_from_wire,
    value_to_wire,
)

KEY_NONE, KEY_REPLICA, KEY_PLAIN = range(3)
PAY_NONE, PAY_PLAIN, PAY_PN, PAY_LWW = range(4)
#: per type: how its key and payload become columns; a type not listed (an application's own) uses the default
LAYOUTS: dict[str, tuple[int, int]] = {
    "orset": (KEY_PLAIN, PAY_NONE),
    "gcounter": (KEY_REPLICA, PAY_PLAIN),
    "pncounter": (KEY_REPLICA, PAY_PN),
    "mvregister": (KEY_NONE, PAY_PLAIN),
    "lwwregister": (KEY_NONE, PAY_LWW),
    "lwwmap": (KEY_PLAIN, PAY_LWW),
}
DEFAULT_LAYOUT = (KEY_PLAIN, PAY_PLAIN)
_COLUMNS = {PAY_NONE: 0, PAY_PLAIN: 1, PAY_PN: 2, PAY_LWW: 2}
_new_ts = tuple.__new__


# -- encoding -------------------------------------------------------------------------------------------------------
def _plain_column(values: list[Any]) -> list[Any]:
    return [v if type(v) in AS_IS or (type(v) is int and MIN_INT <= v <= MAX_INT) else value_to_wire(v)
            for v in values]


def _timestamp_runs(payloads: list[Any]) -> list[Any]:
    runs: list[Any] = []
    last: Any = None
    wall = 0
    length = 0
    for p in payloads:
        ts = p[0]
        if ts is last or ts == last:
            length += 1
            continue
        if length:
            runs.append(length)
        w, logical = ts
        runs.append(int_to_wire(w - wall))
        runs.append(int_to_wire(logical))
        wall, last, length = w, ts, 1
    if length:
        runs.append(length)
    return runs


def flat_context(ctx: CausalContext, index: dict[str, int] | None = None) -> tuple[list[Any], list[Any]]:
    """``(vector, cloud)`` of ``ctx``, replicas as indices into a table (``index``) or spelt out."""
    vector: list[Any] = []
    cloud: list[Any] = []
    for r in sorted(ctx._vv):
        vector += (r if index is None else index[r], ctx._vv[r])
    for r in sorted(ctx._cloud):
        cs = sorted(ctx._cloud[r])
        cloud += (r if index is None else index[r], len(cs))
        cloud += cs
    return vector, cloud


def state_body(state: DotKernel[Any]) -> list[Any]:
    one = _one_entry_body(state)
    if one is not None:
        return one
    ctx = state._ctx
    replicas = sorted(ctx._vv.keys() | ctx._cloud.keys()) if ctx._cloud else sorted(ctx._vv)
    index = {r: i for i, r in enumerate(replicas)}
    vector, cloud = flat_context(ctx, index)
    groups: list[int] = []
    runs: list[int] = []
    keys: list[Any] = []
    payloads: list[Any] = []
    skeys = state._keys
    for r in sorted(state._dots):
        per = state._dots[r]
        cs = sorted(per)
        previous, start, end, count = 0, cs[0], cs[0], 1
        for c in cs[1:]:
            if c != end + 1:
                runs += (start - previous, end - start + 1)
                previous, start, count = end, c, count + 1
            end = c
        runs += (start - previous, end - start + 1)
        groups += (index[r], count)
        ks = [per[c] for c in cs]
        keys += ks
        payloads += [payload_at(skeys[k], r, c) for k, c in zip(ks, cs, strict=True)]
    ops = _op_rows(keys, payloads) if LAYOUTS.get(state.TYPE_NAME, DEFAULT_LAYOUT)[0] == KEY_REPLICA else []
    body = [state.TYPE_NAME, replicas, vector, cloud, groups, runs, _columns(state.TYPE_NAME, keys, payloads),
            _deferred_rows(state) if state._deferred else []]
    return [*body, ops] if ops else body


def _op_rows(keys: list[Any], payloads: list[Any]) -> list[Any]:
    """A counter's op-keyed entries (``crdt.counter_ops``) as ``[position, op_id, at_ms]`` rows, in entry order;
    their payloads are replaced by the amounts, which go in the payload columns like a running total."""
    rows: list[Any] = []
    for i, key in enumerate(keys):
        if type(key) is tuple:
            amount, at_ms = payloads[i]
            payloads[i] = amount
            rows.append([i, key[0], at_ms])
    return rows


def _columns(type_name: str, keys: list[Any], payloads: list[Any]) -> list[list[Any]]:
    key_kind, pay_kind = LAYOUTS.get(type_name, DEFAULT_LAYOUT)
    columns: list[list[Any]] = [_plain_column(keys)] if key_kind == KEY_PLAIN else []
    if pay_kind == PAY_PLAIN:
        columns.append(_plain_column(payloads))
    elif pay_kind == PAY_PN:
        columns += ([int_to_wire(p[0]) for p in payloads], [int_to_wire(p[1]) for p in payloads])
    elif pay_kind == PAY_LWW:
        columns += (_timestamp_runs(payloads), _plain_column([p[2] for p in payloads]))
    return columns


def _one_entry_body(state: DotKernel[Any]) -> list[Any] | None:
    """``state_body`` of the commonest delta (one entry, a context of its own replica only), without the sorts,
    the run building and the column machinery; None for any other state."""
    dots, ctx = state._dots, state._ctx
    if len(dots) != 1 or state._deferred:
        return None
    vv, cl = ctx._vv, ctx._cloud
    for r, per in dots.items():
        if len(per) != 1 or (vv and (len(vv) > 1 or r not in vv)) or (cl and (len(cl) > 1 or r not in cl)):
            return None
        for c, key in per.items():
            kd = state._keys[key]
            payload = kd[2] if type(kd) is tuple else kd[(r, c)]
            n = vv.get(r)
            cs = cl.get(r)
            cloud = ([0, 1, *cs] if len(cs) == 1 else [0, len(cs), *sorted(cs)]) if cs else []
            key_kind, pay_kind = LAYOUTS.get(state.TYPE_NAME, DEFAULT_LAYOUT)
            if key_kind == KEY_REPLICA and type(key) is tuple:
                return None  # an op-keyed counter entry: the general layout's op rows
            if pay_kind == PAY_LWW:
                ts = payload[0]
                value = payload[2]
                columns: list[Any] = [[int_to_wire(ts[0]), int_to_wire(ts[1]), 1],
                                      [value if type(value) in AS_IS else value_to_wire(value)]]
            elif pay_kind == PAY_NONE:
                columns = []
            else:
                columns = _columns(state.TYPE_NAME, [key], [payload])
                if key_kind == KEY_PLAIN:
                    del columns[0]
            if key_kind == KEY_PLAIN:
                columns.insert(0, [key if type(key) is str else value_to_wire(key)])
            return [state.TYPE_NAME, [r], [0, n] if n else [], cloud, [0, 1], [c, 1], columns, []]
    return None


def _deferred_rows(state: DotKernel[Any]) -> list[Any]:
    rows = []
    for ctx, keys in state._deferred.values():
        wire_keys = None if keys is None else sorted((value_to_wire(k) for k in keys), key=pack)
        rows.append([*flat_context(ctx), wire_keys])
    return sorted(rows, key=pack)


def op_body(op: Op) -> list[Any]:
    deps: list[Any] = []
    for r, n in sorted(op.deps.items()):
        deps += (r, n)
    return ["op", op.dot.replica, op.dot.counter, deps, state_body(op.delta)]


def context_body(ctx: CausalContext) -> list[Any]:
    return ["ctx", *flat_context(ctx)]


# -- decoding -------------------------------------------------------------------------------------------------------
def _fail(what: str) -> DecodeError:
    return DecodeError(f"malformed version-2 encoding: {what}")


def _count(x: Any, least: int = 1) -> int:
    if type(x) is not int or x < least:
        raise _fail(f"expected an int >= {least}, got {x!r}")
    return x


def _list(x: Any, what: str) -> list[Any]:
    if type(x) is not list:
        raise _fail(f"{what} must be an array")
    return x


def _replica(x: Any, names: list[str] | None) -> str:
    if names is None:
        if type(x) is not str:
            raise _fail("replica ids are strings")
        return x
    if type(x) is not int or not 0 <= x < len(names):
        raise _fail("replica index out of the table")
    return names[x]


def context_from_flat(vector: Any, cloud: Any, names: list[str] | None) -> CausalContext:
    """The context of ``(vector, cloud)``, accepting only its canonical form (sorted, compact, no zero counts)."""
    vector, cloud = _list(vector, "vector"), _list(cloud, "cloud")
    if len(vector) % 2:
        raise _fail("vector must hold [replica, n] pairs")
    ctx = CausalContext()
    vv, cl = ctx._vv, ctx._cloud
    last = None
    for j in range(0, len(vector), 2):
        r = _replica(vector[j], names)
        if last is not None and r <= last:
            raise _fail("vector replicas must ascend")
        vv[r] = _count(vector[j + 1])
        last = r
    last = None
    j = 0
    while j < len(cloud):
        if j + 1 >= len(cloud):
            raise _fail("cloud entry cut short")
        r = _replica(cloud[j], names)
        k = _count(cloud[j + 1])
        cs = cloud[j + 2 : j + 2 + k]
        if (last is not None and r <= last) or len(cs) != k:
            raise _fail("cloud replicas must ascend, each with its counters")
        floor = vv.get(r, 0) + 1  # a compact context never holds n + 1 in its cloud
        for c in cs:
            if type(c) is not int or c <= floor:
                raise _fail("cloud counters must ascend past the vector's next counter")
            floor = c
        cl[r] = set(cs)
        last = r
        j += 2 + k
    return ctx


def _replica_table(replicas: Any) -> list[str]:
    replicas = _list(replicas, "replica table")
    if not all(type(r) is str for r in replicas) or any(a >= b for a, b in pairwise(replicas)):
        raise _fail("the replica table must hold distinct ids, sorted")
    return replicas


def _dots(groups: Any, runs: Any, names: list[str], ctx: CausalContext, limit: int) -> list[tuple[str, list[int]]]:
    """``[(replica, counters)]`` of the entries, every run checked maximal and covered by ``ctx``; at most ``limit``
    entries (what the columns can hold: runs promising more are refused before anything is expanded)."""
    groups, runs = _list(groups, "groups"), _list(runs, "runs")
    if len(groups) % 2 or len(runs) % 2:
        raise _fail("groups and runs are pairs")
    out: list[tuple[str, list[int]]] = []
    last = -1
    at = total = 0
    for j in range(0, len(groups), 2):
        ri, count = groups[j], _count(groups[j + 1])
        r = _replica(ri, names)
        if ri <= last:
            raise _fail("entry groups must ascend by replica")
        last = ri
        top = ctx._vv.get(r, 0)
        cloud = ctx._cloud.get(r, ())
        counters: list[int] = []
        end = 0
        for k in range(at, at + 2 * count, 2):
            if k + 1 >= len(runs):
                raise _fail("fewer runs than the groups promise")
            start = end + _count(runs[k], 2 if end else 1)
            end = start + _count(runs[k + 1]) - 1
            total += end - start + 1
            if total > limit:
                raise _fail("runs promise more entries than the columns hold")
            if end > top and not all(c in cloud for c in range(max(start, top + 1), end + 1)):
                raise _fail(f"an entry of {r!r} is not covered by the context")
            counters += range(start, end + 1)
        at += 2 * count
        out.append((r, counters))
    if at != len(runs):
        raise _fail("more runs than the groups use")
    return out


def _plain_values(column: Any, n: int, max_depth: int) -> list[Any]:
    column = _list(column, "column")
    if len(column) != n:
        raise _fail("a column's length differs from the entry count")
    scalars = WIRE_SCALARS
    if scalars.issuperset(map(type, column)):  # the common case, tested at C speed: nothing to convert
        return column
    return [v if type(v) in scalars else value_from_wire(v, 2, max_depth) for v in column]


def _int_of(x: Any, max_depth: int) -> int:
    value = value_from_wire(x, 2, max_depth) if type(x) is not int else x
    if type(value) is not int:
        raise _fail("expected an int")
    return value


def _timestamps(runs: Any, n: int, max_depth: int) -> list[HLCTimestamp]:
    runs = _list(runs, "timestamps")
    if len(runs) % 3:
        raise _fail("timestamps are [wall step, logical, length] runs")
    out: list[HLCTimestamp] = []
    wall = total = 0
    last = None
    for j in range(0, len(runs), 3):
        step, logical = _int_of(runs[j], max_depth), _int_of(runs[j + 1], max_depth)
        wall += step
        if wall < 0 or logical < 0 or (step == 0 and logical == last):
            raise _fail("timestamps must be non-negative, each run differing from the one before")
        last = logical
        length = _count(runs[j + 2])
        total += length
        if total > n:
            raise _fail("timestamp runs cover more entries than there are")
        out += repeat(_new_ts(HLCTimestamp, (wall, logical)), length)
    if len(out) != n:
        raise _fail("timestamp runs cover a different number of entries")
    return out


def context_and_dots(replicas: Any, vector: Any, cloud: Any, groups: Any, runs: Any, limit: int) -> \
        tuple[CausalContext, list[tuple[str, list[int]]]]:
    """A state's context and its entries' dots, every invariant and canonical form checked (see `_dots`)."""
    names = _replica_table(replicas)
    ctx = context_from_flat(vector, cloud, names)
    if len(ctx._vv.keys() | ctx._cloud.keys()) != len(names):
        raise _fail("the replica table names a replica the context does not")
    return ctx, _dots(groups, runs, names, ctx, limit)


def one_run_dots(replicas: Any, vector: Any, cloud: Any, groups: Any, runs: Any, limit: int) -> \
        tuple[CausalContext, list[tuple[str, list[int]]]] | None:
    """`context_and_dots` of the commonest shape, a small key's: one replica, its vector entry and no cloud, and the
    entries' counters one run within it; None for any other shape or anything malformed (`context_and_dots` then
    decides, and raises). What this accepts, the general path accepts and reads the same (tests/crdt hold the two
    to that); it costs a third of the general path's time, which is much of a small state's decode."""
    if not (type(replicas) is list and len(replicas) == 1 and type(vector) is list and len(vector) == 2
            and type(cloud) is list and not cloud and type(groups) is list and len(groups) == 2
            and type(runs) is list and len(runs) == 2):
        return None
    replica, (first, top), (group, count), (start, length) = replicas[0], vector, groups, runs
    if not (type(replica) is str and type(first) is int and first == 0 and type(top) is int and top >= 1
            and type(group) is int and group == 0 and type(count) is int and count == 1
            and type(start) is int and start >= 1 and type(length) is int and 1 <= length <= limit
            and start + length - 1 <= top):
        return None
    ctx = CausalContext()
    ctx._vv[replica] = top
    return ctx, [(replica, list(range(start, start + length)))]


def state_from_body(body: Any, max_depth: int) -> DotKernel[Any]:
    """Build a state from its version-2 body, checking every invariant and canonical form; raises ``DecodeError``."""
    if type(body) is not list or len(body) not in (8, 9):
        raise _fail("a state is [type, replicas, vector, cloud, groups, runs, columns, deferred] (+ op rows)")
    name, replicas, vector, cloud, groups, runs, columns, deferred = body[:8]
    cls = type_for(name)
    key_kind, pay_kind = LAYOUTS.get(name, DEFAULT_LAYOUT)
    columns = _list(columns, "columns")
    if len(columns) != (key_kind == KEY_PLAIN) + _COLUMNS[pay_kind]:
        raise _fail(f"{name} takes other columns")
    # the last column holds one item per entry in every layout (timestamps, which are runs, are never last)
    limit = len(_list(columns[-1], "column")) if columns else 0
    held = one_run_dots(replicas, vector, cloud, groups, runs, limit)
    ctx, dots = held if held is not None else context_and_dots(replicas, vector, cloud, groups, runs, limit)
    n = sum(len(cs) for _, cs in dots)
    keys = _plain_values(columns.pop(0), n, max_depth) if key_kind == KEY_PLAIN else None
    ops = None
    if len(body) == 9:
        if key_kind != KEY_REPLICA:
            raise _fail(f"{name} has no op rows")
        ops = _ops_from_rows(body[8], n)
    state = cls()
    state._ctx = ctx
    try:
        if pay_kind == PAY_LWW and (keys is None or {str}.issuperset(map(type, keys))):
            _fill_lww(state, dots, keys, _timestamps(columns[0], n, max_depth),
                      _plain_values(columns[1], n, max_depth))
        else:
            _fill(state, dots, keys, _payloads(pay_kind, columns, n, max_depth), key_kind, pay_kind, ops)
    except (CRDTError, TypeError, ValueError) as exc:
        raise DecodeError(f"invalid {name} entry: {exc}") from exc
    rows = _list(deferred, "deferred removes")
    if rows:
        _fill_deferred(state, rows, max_depth)
    return state


def _payloads(pay_kind: int, columns: list[Any], n: int, max_depth: int) -> list[Any]:
    if pay_kind == PAY_NONE:
        return [None] * n
    if pay_kind == PAY_PLAIN:
        return _plain_values(columns[0], n, max_depth)
    if pay_kind == PAY_PN:
        return list(zip(_plain_values(columns[0], n, max_depth), _plain_values(columns[1], n, max_depth),
                        strict=True))
    ts = _timestamps(columns[0], n, max_depth)
    return [((t.wall_ms, t.logical), v) for t, v in zip(ts, _plain_values(columns[1], n, max_depth), strict=True)]


def _fill_lww(state: DotKernel[Any], dots: list[tuple[str, list[int]]], keys: list[Any] | None,
              stamps: list[HLCTimestamp], values: list[Any]) -> None:
    """LWW registers and maps (the bulk of big states): keys and timestamps are already checked, the replica of
    each payload is its entry's, so entries go straight in, built by C-level zips rather than a Python loop per
    entry: a key's one entry is the tuple ``(replica, counter, payload)`` (``crdt.entries``)."""
    skeys, sdots = state._keys, state._dots
    at = 0
    for r, cs in dots:
        k = len(cs)
        ks = [None] * k if keys is None else keys[at : at + k]
        payloads = zip(stamps[at : at + k], repeat(r, k), values[at : at + k], strict=True)
        held = list(zip(repeat(r, k), cs, payloads, strict=True))
        sdots[r] = dict(zip(cs, ks, strict=True))
        fresh = dict(zip(ks, held, strict=True))
        if len(fresh) == k and skeys.keys().isdisjoint(fresh):
            skeys.update(fresh)
        else:  # a field written more than once (siblings): join its entries
            for key, (_, c, payload) in zip(ks, held, strict=True):
                skeys[key] = with_entry(skeys.get(key), r, c, payload)
        at += k


def _ops_from_rows(rows: Any, n: int) -> dict[int, tuple[tuple[str], int]]:
    """``[position, op_id, at_ms]`` rows -> position -> (op key, at_ms); positions ascend within the entries."""
    rows = _list(rows, "op rows")
    if not rows:
        raise _fail("op rows, when present, are not empty")
    ops: dict[int, tuple[tuple[str], int]] = {}
    last = -1
    for row in rows:
        if type(row) is not list or len(row) != 3 or type(row[0]) is not int or not last < row[0] < n \
                or type(row[1]) is not str or type(row[2]) is not int:
            raise _fail("op rows are [position, op_id, at_ms], positions ascending within the entries")
        last = row[0]
        ops[last] = ((row[1],), row[2])
    return ops


def _fill(state: DotKernel[Any], dots: list[tuple[str, list[int]]], keys: list[Any] | None, payloads: list[Any],
          key_kind: int, pay_kind: int, ops: dict[int, tuple[tuple[str], int]] | None = None) -> None:
    """Every other layout: each entry checked by its type (``_entry_from_wire``), inserted through ``_insert``."""
    cls = type(state)
    check, insert = cls._entry_from_wire, state._insert
    plain_keys = cls.TYPE_NAME == "orset"  # str and int elements are their own keys: skip the per-entry call
    at = 0
    for r, cs in dots:
        for c in cs:
            key = r if keys is None and key_kind == KEY_REPLICA else None if keys is None else keys[at]
            payload = payloads[at]
            if ops is not None and at in ops:
                key, at_ms = ops[at]
                payload = (payload, at_ms)
            at += 1
            if plain_keys and (type(key) is str or type(key) is int):
                insert((r, c), key, None)
                continue
            if pay_kind == PAY_LWW:  # ((wall, logical), value): the writer is the entry's replica
                payload = (payload[0], r, payload[1])
            key, payload = check(r, key, payload)
            hash(key)
            insert((r, c), key, payload)


def _fill_deferred(state: DotKernel[Any], rows: list[Any], max_depth: int) -> None:
    cls = type(state)
    deferred: dict[tuple[Any, ...], Deferred[Any]] = {}
    last = b""
    for row in rows:
        packed = pack(row)
        if packed <= last or type(row) is not list or len(row) != 3 or not (row[2] is None or type(row[2]) is list):
            raise _fail("deferred removes are distinct [vector, cloud, keys or nil] rows, sorted by their bytes")
        last = packed
        ctx = context_from_flat(row[0], row[1], None)
        if state._ctx.covers(ctx):
            raise _fail("a deferred remove whose read context is all here (a merge drops it)")
        keys = None
        if row[2] is not None:
            wire = [pack(k) for k in row[2]]
            if any(a >= b for a, b in pairwise(wire)):
                raise _fail("a deferred remove's keys must be distinct, sorted by their bytes")
            try:
                keys = frozenset(cls._key_from_wire(value_from_wire(k, 2, max_depth)) for k in row[2])
            except (TypeError, ValueError) as exc:
                raise DecodeError(f"invalid key in a deferred remove: {exc}") from exc
            if len(keys) != len(row[2]):
                raise _fail("a deferred remove names one key twice")
        identity = context_identity(ctx)
        if identity in deferred:
            raise _fail("two deferred removes share one read context")
        deferred[identity] = (ctx, keys)
    state._deferred = deferred


def context_from_body(body: Any) -> CausalContext:
    if type(body) is not list or len(body) != 3 or body[0] != "ctx":
        raise _fail('a context is ["ctx", vector, cloud]')
    return context_from_flat(body[1], body[2], None)


def op_from_body(body: Any, max_depth: int) -> Op:
    if type(body) is not list or len(body) != 5 or body[0] != "op" or type(body[1]) is not str:
        raise _fail('an op is ["op", replica, counter, deps, state]')
    deps_flat = _list(body[3], "deps")
    deps = context_from_flat(deps_flat, [], None)
    delta = state_from_body(body[4], max_depth)
    return Op(Dot(body[1], _count(body[2])), VersionVector._wrap(deps._vv), delta.TYPE_NAME, delta)
