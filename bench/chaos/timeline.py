"""What the nemesis records say about the cluster at a moment: which nodes were certainly not serving and which
packets were certainly lost. Pure functions of the parsed history, shared by the checkers and the plot.

Two readings of a node's fault window, conservative in opposite directions:
- *certainly down*: from the signal (``stop_s``) to the restart or SIGCONT (``start_s``); used where assuming a
  node down must never cause a false alarm (it cannot have acknowledged anything then);
- *maybe unavailable*: from the signal to ``ready_s`` plus a grace period; used to leave requests out of the
  availability figure (a request to a node that may not have been serving says nothing about availability).
"""

from __future__ import annotations

import itertools
from typing import Any

from bench.chaos.history import History

Interval = tuple[float, float]


def windows(history: History) -> list[dict[str, Any]]:
    return [w for event in history.nemesis for w in event.get("windows", []) if "start_s" in w]


def down_certain(history: History) -> dict[str, list[Interval]]:
    out: dict[str, list[Interval]] = {}
    for w in windows(history):
        out.setdefault(w["node"], []).append((w["stop_s"], w["start_s"]))
    return out


def maybe_unavailable(history: History, grace_s: float = 1.0) -> dict[str, list[Interval]]:
    out: dict[str, list[Interval]] = {}
    for w in windows(history):
        out.setdefault(w["node"], []).append((w["stop_s"], w.get("ready_s", w["start_s"]) + grace_s))
    return out


def partitions(history: History) -> list[tuple[Interval, frozenset[tuple[str, str]]]]:
    return [((e["start_s"], e["end_s"]), frozenset((a, b) for a, b in e.get("drops", [])))
            for e in history.nemesis if e["nemesis"] == "partition"]


def overlaps(interval: Interval, others: list[Interval]) -> bool:
    return any(start < interval[1] and interval[0] < end for start, end in others)


def _within(t: float, intervals: list[Interval]) -> bool:
    return any(start <= t <= end for start, end in intervals)


def reachable_peers(history: History, node: str, t: float, *, down: dict[str, list[Interval]] | None = None,
                    cuts: list[tuple[Interval, frozenset[tuple[str, str]]]] | None = None) -> set[str]:
    """Nodes (``node`` included unless down) with which ``node`` could exchange packets both ways at ``t``."""
    down = down_certain(history) if down is None else down
    cuts = partitions(history) if cuts is None else cuts
    drops = frozenset().union(*(d for (start, end), d in cuts if start <= t <= end))
    if _within(t, down.get(node, [])):
        return set()
    return {peer for peer in history.nodes
            if not _within(t, down.get(peer, []))
            and (peer == node or ((node, peer) not in drops and (peer, node) not in drops))}


def max_reachable(history: History, node: str, interval: Interval, **cached: Any) -> int:
    """The most replicas ``node`` could have counted at any moment of ``interval`` (piecewise constant: checked
    at both ends and in the middle of every piece between fault boundaries)."""
    start, end = interval
    edges = sorted({start, end} | {t for e in history.nemesis for t in _edges(e) if start < t < end})
    points = edges + [(a + b) / 2 for a, b in itertools.pairwise(edges)]
    return max(len(reachable_peers(history, node, t, **cached)) for t in points)


def _edges(event: dict[str, Any]) -> list[float]:
    times = [event["start_s"], event["end_s"]]
    for w in event.get("windows", []):
        times += [w[k] for k in ("stop_s", "start_s") if k in w]
    return times
