"""Instruments for bench/scale_bench.py: a node's event-loop lag and false suspicions over a phase (from `/metrics`
and the membership events of `/v1/ui/events`), its RSS, and bounded load generators over the HTTP API.

Every loop here is bounded in count and in time: loaders stop at their deadline and say how far they got.
"""

from __future__ import annotations

import asyncio
import math
import random
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from rumor.server.client import RumorClient
from rumor.server.local_cluster import NodeProcess

LAG = "rumor_event_loop_lag_seconds"
LAG_MAX = "rumor_event_loop_lag_max_seconds"
_SAMPLE = re.compile(r'^([a-z_]+)(?:\{([^}]*)\})? (\S+)$')


def parse_metrics(text: str) -> dict[str, dict[str, float]]:
    """metric name -> {label text ('' when none): value}."""
    out: dict[str, dict[str, float]] = {}
    for line in text.splitlines():
        match = _SAMPLE.match(line)
        if match:
            name, labels, value = match.groups()
            out.setdefault(name, {})[labels or ""] = float(value)
    return out


@dataclass(frozen=True)
class LagReading:
    """A node's loop-lag histogram (cumulative count per upper bound, +Inf last) and max gauge at one moment."""

    buckets: tuple[tuple[float, float], ...]
    max_s: float

    @classmethod
    def zero(cls) -> LagReading:
        return cls((), 0.0)

    @classmethod
    def from_metrics(cls, metrics: dict[str, dict[str, float]]) -> LagReading:
        rows = metrics.get(LAG + "_bucket", {})
        buckets = sorted((math.inf if (b := labels.split('"')[1]) == "+Inf" else float(b), n)
                         for labels, n in rows.items())
        return cls(tuple(buckets), metrics.get(LAG_MAX, {}).get("", 0.0))


def lag_between(before: LagReading, after: LagReading) -> dict[str, Any]:
    """The phase's lag figures from two readings: ticks, p99 (interpolated within its bucket, as Prometheus's
    histogram_quantile does; `p99_bucket_ms` is that bucket's upper bound) and max. The max is exact when the phase
    raised the since-start gauge; otherwise it is the upper bound of the highest bucket the phase reached, capped
    by the earlier max (`max_exact` false)."""
    earlier = dict(before.buckets)
    delta = [(bound, n - earlier.get(bound, 0.0)) for bound, n in after.buckets]
    ticks = delta[-1][1] if delta else 0.0
    if ticks <= 0:
        return {"ticks": 0, "p99_ms": None, "p99_bucket_ms": None, "max_ms": None, "max_exact": False}
    rank = 0.99 * ticks
    lower, p99, p99_bound = 0.0, after.max_s, after.max_s
    previous = 0.0
    for bound, cumulative in delta:
        if cumulative >= rank:
            if math.isinf(bound):  # beyond the last finite bucket: the max is the best figure there is
                p99 = p99_bound = after.max_s
            else:
                inside = cumulative - previous
                p99 = lower + (bound - lower) * ((rank - previous) / inside if inside else 1.0)
                p99_bound = bound
            break
        lower, previous = bound, cumulative
    if after.max_s > before.max_s:
        top, exact = after.max_s, True
    else:
        reached = [b for (b, n), (_, m) in zip(delta, [(0.0, 0.0), *delta], strict=False) if n > m]
        top, exact = min(reached[-1] if reached else 0.0, before.max_s), False
    p99 = min(p99, top)  # interpolation can overshoot the largest lag (or its bound) the phase saw
    return {"ticks": int(ticks), "p99_ms": round(1000 * p99, 2), "p99_bucket_ms": round(1000 * p99_bound, 2),
            "max_ms": round(1000 * top, 2), "max_exact": exact}


async def lag_reading(node: NodeProcess) -> LagReading:
    return LagReading.from_metrics(parse_metrics(await node.api().metrics()))


async def suspicions(node: NodeProcess, since: float, up: set[str]) -> list[dict[str, Any]]:
    """Membership events this node saw since wall-clock `since` that marked a member of `up` (nodes that were
    running all along) suspect or dead: each is a false suspicion. Read from the dashboard snapshot (its latest 30
    events: a phase with more than that would be a storm, and shows as at least 30)."""
    _, snapshot = await node.api().request("GET", "/v1/ui/events")
    return [e for e in snapshot["events"]
            if e["t"] >= since and e["member"] in up and not e["self"] and e["status"] in ("suspect", "dead")]


class Phase:
    """Lag and suspicions on a set of nodes between `begin` and `end` (nodes may be added once started)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.started_wall = 0.0
        #: membership events from this wall-clock time on count (`count_suspicions_from`); default: the begin
        self.suspicions_from: float | None = None
        self.before: dict[str, LagReading] = {}
        self.nodes: dict[str, NodeProcess] = {}

    async def begin(self, nodes: Sequence[NodeProcess]) -> None:
        self.started_wall = time.time()
        for node in nodes:
            await self.add(node, fresh=False)

    def count_suspicions_from(self, wall: float) -> None:
        """Suspicions before `wall` were real (a partition's): only later ones are false."""
        self.suspicions_from = wall

    async def add(self, node: NodeProcess, *, fresh: bool = True) -> None:
        """A node taking part; `fresh`: started within the phase, so everything it measured counts."""
        self.nodes[node.name] = node
        self.before[node.name] = LagReading.zero() if fresh else await lag_reading(node)

    async def end(self) -> dict[str, Any]:
        up = set(self.nodes)
        per_node: dict[str, Any] = {}
        false_suspicions = 0
        for name, node in self.nodes.items():
            per_node[name] = lag_between(self.before[name], await lag_reading(node))
            since = self.suspicions_from if self.suspicions_from is not None else self.started_wall
            seen = await suspicions(node, since, up) if len(up) > 1 else []
            per_node[name]["suspicions_seen"] = len(seen)
            per_node[name]["suspicion_events"] = seen[:5]
            false_suspicions += len(seen)
        p99s = [row["p99_ms"] for row in per_node.values() if row["p99_ms"] is not None]
        maxes = [row["max_ms"] for row in per_node.values() if row["max_ms"] is not None]
        return {"loop_lag_p99_ms": max(p99s, default=None), "loop_lag_max_ms": max(maxes, default=None),
                "false_suspicions": false_suspicions if len(up) > 1 else None,
                "seconds": round(time.time() - self.started_wall, 2), "nodes": per_node}


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    raise RuntimeError(f"no VmRSS for pid {pid}")


# -- load ------------------------------------------------------------------------------------------------------------


def key_name(i: int) -> str:
    return f"k{i:08d}"


def update_for(i: int, salt: int = 0) -> dict[str, Any]:
    """Small mixed keys: a third counters, a third sets (one short element more per salt), a third registers."""
    kind = i % 3
    if kind == 0:
        return {"key": key_name(i), "type": "counter", "increment": 1}
    if kind == 1:
        return {"key": key_name(i), "type": "set", "add": [f"e{salt % 8}"]}
    return {"key": key_name(i), "type": "register", "value": f"v{i}.{salt}"}


async def load_keys(client: RumorClient, start: int, stop: int, deadline: float, *, batch_size: int = 1000,
                    concurrency: int = 2) -> int:
    """Creates keys start..stop-1 through `POST /v1/batch`; returns the next key not loaded (== stop when done).
    Batches are taken in order and each one taken is finished, so the keys loaded are always a prefix."""
    starts = iter(range(start, stop, batch_size))
    loaded = [start]

    async def worker() -> None:
        for first in starts:
            if time.monotonic() >= deadline:
                return
            last = min(first + batch_size, stop)
            answer = await client.batch([update_for(i) for i in range(first, last)])
            if answer["errors"]:
                raise RuntimeError(f"load batch at {first} failed: {answer['results'][:2]}")
            loaded.append(last)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return max(loaded)


async def write_rate(client: RumorClient, n_keys: int, seconds: float, *, batch_size: int = 100,
                     concurrency: int = 4, seed: int = 0) -> dict[str, Any]:
    """Updates of random existing keys among `n_keys` for `seconds` (at most 10M updates), through `/v1/batch`
    with `batch_size` updates a request and `concurrency` requests in flight; the rate of acknowledged updates."""
    rng = random.Random(seed)
    deadline = time.monotonic() + seconds
    count = 0
    budget = [10_000_000 // batch_size]

    async def worker() -> None:
        nonlocal count
        while time.monotonic() < deadline and budget[0] > 0:
            budget[0] -= 1
            await client.batch([update_for(rng.randrange(n_keys), salt=rng.randrange(1 << 30))
                                for _ in range(batch_size)])
            count += batch_size

    started = time.monotonic()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.monotonic() - started
    return {"ops_per_s": round(count / elapsed), "ops": count, "seconds": round(elapsed, 2)}


async def get_latencies_ms(client: RumorClient, keys: Sequence[str], deadline: float, *,
                           pause_s: float = 0.0, stop: asyncio.Event | None = None) -> list[float]:
    """One GET after another (each must answer 200), with `pause_s` between, until the keys, the deadline or
    `stop` run out."""
    latencies: list[float] = []
    for key in keys:
        if time.monotonic() >= deadline or (stop is not None and stop.is_set()):
            break
        started = time.perf_counter()
        item = await client.get(key)
        latencies.append(1000 * (time.perf_counter() - started))
        if item is None:
            raise RuntimeError(f"GET {key}: not found")
        if pause_s:
            await asyncio.sleep(pause_s)
    return latencies


def p99(values: Sequence[float]) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, math.ceil(0.99 * len(ordered)) - 1)], 2)


__all__ = ["LagReading", "Phase", "get_latencies_ms", "key_name", "lag_between", "lag_reading", "load_keys",
           "p99", "parse_metrics", "rss_mib", "suspicions", "update_for", "write_rate"]
