"""Checkers of what the data says: sets, counters (and op_id retries), registers, mvregisters and map fields.

Each is a pure function of a parsed `History` returning a `Verdict`. They judge the final reads of the last round
on every node (if the cluster did not converge, each node's state is judged on its own) and, for counters, every
read made during the run. Operations are grouped by ``op_id``: an op is *acked* if any attempt answered 2xx,
*unknown* if none did but one may have been applied (timeout, lost connection, 5xx), *failed* otherwise.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from typing import Any

from bench.chaos.history import History, item_of


@dataclass
class Verdict:
    name: str
    ok: bool
    counts: dict[str, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)  # one line each, with the op ids to look up

    def add(self, problem: str, limit: int = 50) -> None:
        self.ok = False
        if len(self.problems) < limit:
            self.problems.append(problem)

    def to_json(self) -> dict[str, Any]:
        return {"pass": self.ok, **self.counts, "problems": self.problems[:10]}


@dataclass
class Op:
    """One logical write: all attempts of one op_id."""

    op_id: str
    f: str
    key: str
    client: str
    node: str
    args: dict[str, Any]
    attempts: list[dict[str, Any]]

    @property
    def acked(self) -> bool:
        return any(a["status"] == "ok" for a in self.attempts)

    @property
    def maybe_applied(self) -> bool:
        return any(a["status"] in ("ok", "unknown") for a in self.attempts)

    @property
    def first_ack(self) -> dict[str, Any] | None:
        return next((a for a in self.attempts if a["status"] == "ok"), None)

    @property
    def invoke_s(self) -> float:
        return self.attempts[0]["invoke_s"]


def group_ops(history: History, fs: tuple[str, ...]) -> dict[str, Op]:
    ops: dict[str, Op] = {}
    for rec in history.run_ops():
        if rec["f"] not in fs:
            continue
        op_id = rec["args"]["op_id"]
        if op_id not in ops:
            ops[op_id] = Op(op_id, rec["f"], rec["key"], rec["client"], rec["node"], rec["args"], [])
        ops[op_id].attempts.append(rec)
    return ops


def final_values(history: History, key: str) -> dict[str, Any]:
    """node -> the value its last final read returned (None when absent); nodes whose read failed are left out."""
    out = {}
    for node, rec in history.last_final_reads().get(key, {}).items():
        if rec["status"] == "ok":
            item = item_of(rec)
            out[node] = None if item is None else item["value"]
    return out


# -- sets ----------------------------------------------------------------------------------------------------------

def check_sets(history: History) -> Verdict:
    """An acked add that no attempted remove named must be in every final state; an element whose add and every
    retry of it were invoked before an acked remove's read completed (so the remove observed the only add there
    was) must be absent; nothing may appear that no add attempted (an add refused with a 4xx never happened)."""
    verdict = Verdict("set", True)
    adds = group_ops(history, ("add",))
    removes = group_ops(history, ("remove",))
    reads = {rec["id"]: rec for rec in history.run_ops() if rec["f"] == "read"}
    lost, phantom, resurrected = set(), set(), set()
    for key, kind in history.keys.items():
        if kind != "set":
            continue
        key_adds = {op.args["element"]: op for op in adds.values() if op.key == key}
        key_removes: dict[str, list[Op]] = {}
        for op in removes.values():
            if op.key == key:
                key_removes.setdefault(op.args["element"], []).append(op)
        for node, value in final_values(history, key).items():
            present = set(value or [])
            for element in sorted(present):
                add = key_adds.get(element)
                if add is None or not add.maybe_applied:
                    phantom.add((key, element))
                    verdict.add(f"{key}@{node}: phantom element {element!r} (attempts: "
                                f"{[a['id'] for a in add.attempts] if add else 'none'})")
            for element, add in key_adds.items():
                named = [r for r in key_removes.get(element, []) if r.maybe_applied]
                if add.acked and not named and element not in present:
                    lost.add((key, element))
                    verdict.add(f"{key}@{node}: acked add {element!r} lost (op {add.first_ack['id']})")  # type: ignore[index]
                for remove in named:
                    read = reads.get(remove.args["read_id"])
                    observed = read is not None and all(a["invoke_s"] < read["complete_s"] for a in add.attempts)
                    if remove.acked and observed and element in present:
                        resurrected.add((key, element))
                        verdict.add(f"{key}@{node}: {element!r} present after acked remove op "
                                    f"{remove.first_ack['id']} (context read on {remove.args.get('read_node')}, "  # type: ignore[index]
                                    f"op {read['id'] if read else '?'}; add attempts "
                                    f"{[a['id'] for a in add.attempts]})")
    verdict.counts = {"adds": len(adds), "acked_adds": sum(op.acked for op in adds.values()),
                      "removes": len(removes), "acked_removes": sum(op.acked for op in removes.values()),
                      "lost": len(lost), "phantom": len(phantom), "resurrected": len(resurrected)}
    return verdict


# -- counters ------------------------------------------------------------------------------------------------------

def subset_sums(values: list[int]) -> set[int]:
    sums = {0}
    for v in values:
        sums |= {s + v for s in sums}
    return sums


def min_extra_copies(target: int, base: set[int], retried: list[tuple[int, int]]) -> int | None:
    """The fewest extra applications of retried ops (n, at most k extra each) that, added to some sum in ``base``,
    give ``target``; None when none do."""
    best: dict[int, int] = dict.fromkeys(base, 0)
    for n, k in retried:
        nxt = dict(best)
        for s, c in best.items():
            for extra in range(1, k + 1):
                t = s + extra * n
                if nxt.get(t, 1 << 30) > c + extra:
                    nxt[t] = c + extra
        best = nxt
    return best.get(target)


def check_counters(history: History) -> tuple[Verdict, Verdict]:
    """(counter verdict, op_id verdict). Final: every node's value = acked sum + the sum of some subset of the
    unknown ops, each op_id counted once however often it was retried. A value reachable only by applying a
    retried op_id more than once is a double application. During the run, a read lies between bounds kept as
    separate positive and negative sums: at least every acked increment the read must have seen (acknowledged
    through the same node before the read was invoked: a node's own acked writes are durable there) plus every
    decrement attempted before the read completed, at most the mirror image."""
    verdict, idem = Verdict("counter", True), Verdict("op_id", True)
    incrs = group_ops(history, ("incr",))
    out_of_bounds = deficit_keys = excess_keys = double = 0
    for key, kind in history.keys.items():
        if kind != "counter":
            continue
        ops = [op for op in incrs.values() if op.key == key]
        acked_sum = sum(op.args["n"] for op in ops if op.acked)
        unknown = [op.args["n"] for op in ops if not op.acked and op.maybe_applied]
        reachable = subset_sums(unknown)
        retried = [(op.args["n"], len(op.attempts) - 1) for op in ops if len(op.attempts) > 1 and op.maybe_applied]
        for node, value in final_values(history, key).items():
            diff = (value or 0) - acked_sum
            if diff in reachable:
                continue
            extra = min_extra_copies(diff, reachable, retried)
            if extra is not None:
                double += extra
                idem.add(f"{key}@{node}: final {value} needs {extra} retried op(s) applied twice "
                         f"(acked sum {acked_sum}, {len(unknown)} unknown)")
                continue
            if diff < min(reachable):
                deficit_keys += 1
                verdict.add(f"{key}@{node}: final {value} below acked sum {acked_sum} + unknown "
                            f"{min(reachable)}..{max(reachable)}: acked increments lost")
            else:
                excess_keys += 1
                verdict.add(f"{key}@{node}: final {value} above acked sum {acked_sum} + unknown "
                            f"{min(reachable)}..{max(reachable)}: phantom increments")
        out_of_bounds += _check_counter_reads(history, key, ops, verdict)
    retried_ops = [op for op in incrs.values() if len(op.attempts) > 1]
    verdict.counts = {"increments": len(incrs), "acked": sum(op.acked for op in incrs.values()),
                      "unknown": sum(not op.acked and op.maybe_applied for op in incrs.values()),
                      "lost_keys": deficit_keys, "phantom_keys": excess_keys, "reads_out_of_bounds": out_of_bounds}
    all_retried = [rec for rec in history.run_ops() if "retry_of" in rec]
    idem.counts = {"retried_ops": len({rec["args"].get("op_id") for rec in all_retried}),
                   "retry_attempts": len(all_retried), "replayed": sum(bool(r.get("replayed")) for r in all_retried),
                   "retried_increments": len(retried_ops), "double_applied": double}
    return verdict, idem


class _Prefix:
    """Sums of positive and of negative amounts of events at or before a time (sorted once, bisected per read)."""

    def __init__(self, events: list[tuple[float, int]]) -> None:
        events.sort()
        self.times = [t for t, _ in events]
        self.pos, self.neg = [0], [0]
        for _, n in events:
            self.pos.append(self.pos[-1] + max(n, 0))
            self.neg.append(self.neg[-1] + min(n, 0))

    def before(self, t: float) -> tuple[int, int]:
        i = bisect.bisect_left(self.times, t)
        return self.pos[i], self.neg[i]


def _check_counter_reads(history: History, key: str, ops: list[Op], verdict: Verdict) -> int:
    attempted = _Prefix([(min(a["invoke_s"] for a in op.attempts if a["status"] in ("ok", "unknown")), op.args["n"])
                         for op in ops if op.maybe_applied])
    must_by_node: dict[str, list[tuple[float, int]]] = {}
    for op in ops:
        acks: dict[str, float] = {}
        for a in op.attempts:
            if a["status"] == "ok":
                acks[a["node"]] = min(acks.get(a["node"], a["complete_s"]), a["complete_s"])
        for node, t in acks.items():
            must_by_node.setdefault(node, []).append((t, op.args["n"]))
    must = {node: _Prefix(events) for node, events in must_by_node.items()}
    bad = 0
    for read in history.run_ops():
        if read["f"] != "read" or read["key"] != key or read["status"] != "ok":
            continue
        item = item_of(read)
        value = 0 if item is None else item["value"]
        tried_pos, tried_neg = attempted.before(read["complete_s"])
        seen_pos, seen_neg = must[read["node"]].before(read["invoke_s"]) if read["node"] in must else (0, 0)
        lo, hi = seen_pos + tried_neg, tried_pos + seen_neg
        if not lo <= value <= hi:
            bad += 1
            verdict.add(f"{key}: read op {read['id']} on {read['node']} at {read['invoke_s']:.3f}s returned "
                        f"{value}, outside [{lo}, {hi}]")
    return bad


# -- registers, mvregisters, map fields ------------------------------------------------------------------------------

def _superseded_by(write: Op, writes: list[Op]) -> Op | None:
    """A later acked write of the same client (invoked after ``write`` was acked) that must have replaced it."""
    ack = write.first_ack
    if ack is None:
        return None
    for later in writes:
        if later is not write and later.client == write.client and later.acked and later.invoke_s > ack["complete_s"]:
            return later
    return None


def check_registers(history: History) -> Verdict:
    """Every final value (register value, each mvregister sibling, each map field's value) was written by some
    attempt, and no acked write of the same client to the same key (and field) invoked after it was acked
    superseded it; a key with an acked write is never absent."""
    verdict = Verdict("register", True)
    writes = group_ops(history, ("write", "mvwrite", "mapset"))
    stale = phantom = lost = 0
    for key, kind in history.keys.items():
        if kind not in ("register", "mvregister", "map"):
            continue
        ops = [op for op in writes.values() if op.key == key]
        for node, value in final_values(history, key).items():
            if value is None:
                if any(op.acked for op in ops):
                    lost += 1
                    verdict.add(f"{key}@{node}: absent although writes were acked")
                continue
            if kind == "register":
                shown: list[tuple[str | None, Any]] = [(None, value)]
            elif kind == "mvregister":
                shown = [(None, v) for v in value]
            else:
                shown = sorted(value.items())
            for fld, v in shown:
                candidates = [op for op in ops if op.args.get("field") == fld]
                source = next((op for op in candidates if op.args["value"] == v and op.maybe_applied), None)
                if source is None:
                    phantom += 1
                    verdict.add(f"{key}@{node}: {fld or 'value'} {v!r} was never written")
                    continue
                later = _superseded_by(source, candidates)
                if later is not None:
                    stale += 1
                    verdict.add(f"{key}@{node}: {fld or 'value'} {v!r} (op {source.first_ack['id']}) is stale: "  # type: ignore[index]
                                f"{later.client} acked {later.args['value']!r} after it (op {later.first_ack['id']})")  # type: ignore[index]
    verdict.counts = {"writes": len(writes), "acked": sum(op.acked for op in writes.values()),
                      "stale": stale, "phantom": phantom, "lost": lost}
    return verdict
