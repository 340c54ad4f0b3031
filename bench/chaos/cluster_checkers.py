"""Checkers of what the cluster did: convergence after the heal, consistency levels under partitions, membership
after the heal, availability during the run. Pure functions of a parsed `History`, like `bench.chaos.checkers`.
"""

from __future__ import annotations

from typing import Any

from bench.chaos.checkers import Verdict
from bench.chaos.history import History, item_of
from bench.chaos.timeline import down_certain, max_reachable, maybe_unavailable, overlaps, partitions


def _healed_at(history: History) -> float:
    return history.marks.get("healed", 0.0)


def check_convergence(history: History, bound_s: float | None = None) -> Verdict:
    """The first final-read round in which every node answered every key with the same value and the same
    context (the context encodes the causal context: equal both means equal states). Passes when that round
    completed within ``bound_s`` of the heal (default: the quiet period plus the run's convergence timeout)."""
    bound = bound_s if bound_s is not None else (history.meta.get("quiet_s", 0) + history.meta.get(
        "converge_timeout_s", 60))
    rounds: dict[int, list[dict[str, Any]]] = {}
    for rec in history.final_ops():
        rounds.setdefault(rec["round"], []).append(rec)
    verdict = Verdict("convergence", False, {"rounds": len(rounds), "convergence_s": None, "diverged_keys": []})
    for round_no in sorted(rounds):
        states: dict[str, set[str]] = {}
        for rec in rounds[round_no]:
            item = item_of(rec) if rec["status"] == "ok" else {"failed": rec["id"]}
            state = repr((item or {}).get("value")) + "|" + repr((item or {}).get("context")) + repr(
                (item or {}).get("failed"))
            states.setdefault(rec["key"], set()).add(state)
        diverged = sorted(k for k, s in states.items() if len(s) > 1)
        missing_nodes = {r["node"] for r in rounds[round_no]} != set(history.nodes)
        took = max(r["complete_s"] for r in rounds[round_no]) - _healed_at(history)
        if not diverged and not missing_nodes:
            verdict.ok = took <= bound
            verdict.counts.update(convergence_s=round(took, 3), diverged_keys=[])
            if not verdict.ok:
                verdict.problems.append(f"converged {took:.1f}s after the heal, over the {bound:.0f}s bound")
            return verdict
        verdict.counts["diverged_keys"] = diverged
    if not rounds:
        verdict.add("no final reads in the history: the run did not get that far")
    else:
        verdict.add(f"never converged: keys still differing in the last round: {verdict.counts['diverged_keys']}")
    return verdict


def stale_after_heal(history: History) -> int:
    """Final reads of the last round that differ from what most nodes returned for that key."""
    stale = 0
    for _key, by_node in history.last_final_reads().items():
        states = [repr((item_of(r) or {}).get("value")) + repr((item_of(r) or {}).get("context"))
                  for r in by_node.values() if r["status"] == "ok"]
        if states:
            common = max(set(states), key=states.count)
            stale += sum(s != common for s in states) + sum(r["status"] != "ok" for r in by_node.values())
    return stale


def check_consistency_levels(history: History) -> Verdict:
    """A ``w=quorum`` write (or ``r=quorum`` read) answered 200 while its node could not, at any moment of the
    request, exchange packets with a majority of the cluster's members (itself included; nodes certainly down or
    paused do not count) is a failure. A 202 must carry ``acks`` and ``required``."""
    verdict = Verdict("consistency_levels", True)
    majority = history.meta.get("majority", len(history.nodes) // 2 + 1)
    cached = {"down": down_certain(history), "cuts": partitions(history)}
    counts = {"quorum_writes": 0, "quorum_200": 0, "minority_quorum_200": 0, "minority_quorum_reads_200": 0,
              "answered_202": 0, "bad_202": 0}
    for rec in history.run_ops():
        level = rec["args"].get("w", rec["args"].get("r"))
        if rec["http_status"] == 202:
            counts["answered_202"] += 1
            body = rec.get("response") or {}
            if not ("acks" in body and "required" in body):
                counts["bad_202"] += 1
                verdict.add(f"op {rec['id']}: 202 without acks/required: {body}")
        if level != "quorum":
            continue
        is_write = "w" in rec["args"]
        counts["quorum_writes"] += is_write
        if rec["http_status"] != 200:
            continue
        counts["quorum_200"] += is_write
        reach = max_reachable(history, rec["node"], (rec["invoke_s"], rec["complete_s"]), **cached)
        if reach < majority:
            counts["minority_quorum_200" if is_write else "minority_quorum_reads_200"] += 1
            verdict.add(f"op {rec['id']} {rec['f']} {rec['key']} on {rec['node']} "
                        f"[{rec['invoke_s']:.3f}, {rec['complete_s']:.3f}]s: {'w' if is_write else 'r'}=quorum "
                        f"answered 200 while the node could reach at most {reach} of {len(history.nodes)} members")
    verdict.counts = counts
    return verdict


def check_membership(history: History, bound_s: float | None = None) -> Verdict:
    """After the heal, every node's /v1/members shows every node alive; reports how long after the heal."""
    bound = bound_s if bound_s is not None else history.meta.get("quiet_s", 0) + history.meta.get(
        "members_timeout_s", 30)
    rounds: dict[int, list[dict[str, Any]]] = {}
    for rec in history.final_ops("members"):
        rounds.setdefault(rec["round"], []).append(rec)
    verdict = Verdict("membership", False, {"rounds": len(rounds), "members_alive_s": None})
    last_bad: list[str] = []
    for round_no in sorted(rounds):
        views = {r["node"]: r["response"] if r["status"] == "ok" else {} for r in rounds[round_no]}
        last_bad = [f"{viewer} sees {peer} {view.get(peer, 'missing')}" for viewer in history.nodes
                    for view in [views.get(viewer, {})] for peer in history.nodes if view.get(peer) != "alive"]
        if not last_bad:
            took = max(r["complete_s"] for r in rounds[round_no]) - _healed_at(history)
            verdict.ok = took <= bound
            verdict.counts["members_alive_s"] = round(took, 3)
            if not verdict.ok:
                verdict.problems.append(f"all alive only {took:.1f}s after the heal (bound {bound:.0f}s)")
            return verdict
    verdict.add(f"not every member alive everywhere by the last poll: {last_bad[:8]}" if rounds
                else "no membership polls in the history: the run did not get that far")
    return verdict


def check_availability(history: History, minimum: float = 0.9, grace_s: float = 1.0) -> Verdict:
    """The fraction of requests that succeeded (2xx, or 404 for a read) among those sent to a node that was up,
    not paused and reachable from the client for the whole request (clients reach every node in both modes:
    partitions only cut node-to-node traffic). Passes at ``minimum`` or above."""
    unavailable = maybe_unavailable(history, grace_s)
    eligible = succeeded = 0
    by_status: dict[str, int] = {}
    for rec in history.run_ops():
        if overlaps((rec["invoke_s"], rec["complete_s"]), unavailable.get(rec["node"], [])):
            continue
        eligible += 1
        succeeded += rec["status"] == "ok"
        if rec["status"] != "ok":
            label = str(rec["http_status"] or (rec.get("response") or {}).get("error", "?"))
            by_status[label] = by_status.get(label, 0) + 1
    fraction = succeeded / eligible if eligible else 1.0
    verdict = Verdict("availability", fraction >= minimum,
                      {"availability": round(fraction, 5), "eligible": eligible, "succeeded": succeeded,
                       "failures_by_status": by_status, "minimum": minimum})
    if not verdict.ok:
        verdict.problems.append(f"{fraction:.3%} of {eligible} eligible requests succeeded (minimum {minimum:.0%})")
    return verdict


def check_restarts(history: History) -> Verdict:
    """Every node the nemesis stopped started again (a node that cannot restart on its own data dir after a
    crash has lost everything acknowledged through it, whatever the other checkers say)."""
    failed = [e for e in history.nemesis if e["nemesis"] == "start_failed"]
    restarts = sum(len(e.get("windows", [])) for e in history.nemesis if e["nemesis"] != "start_failed")
    verdict = Verdict("restarts", not failed, {"restarts": restarts, "failed_starts": len(failed)})
    for event in failed:
        lines = [line for line in event.get("error", "").splitlines() if line.strip()]
        verdict.problems.append(f"{event['nodes'][0]} would not start at {event['start_s']:.1f}s: "
                                + " | ".join(lines[-2:]))
    return verdict
