"""The nemesis: a seeded schedule of faults, run one at a time, each written to the history when it ends.

Kinds: ``kill`` (SIGKILL one or two nodes, restart them on the same data dir), ``pause`` (SIGSTOP/SIGCONT; the first
pause outlasts the local preset's suspicion timeout), ``partition`` (real packet loss: random halves, one node
isolated, one-way, or a bridge node that sees both sides), ``crash-all`` (SIGKILL every node, then cold restarts in a
random order, staggered so some start while others are still down), ``clock-skew`` (restart nodes with
``--clock-offset-ms`` of up to an hour either way, and back to 0 when the fault ends).

Faults never overlap and each one ends with every node it touched running, unpaused and reachable again; the
schedule is fixed by the seed before the run starts (what the run does with it depends on timing, as in Jepsen).
A record's windows say when each node could not serve: ``stop_s`` (just before the signal), ``start_s`` (restart or
SIGCONT issued) and ``ready_s`` (serving again). A partition's ``drops`` are the (src, dst) pairs whose packets were
lost between ``start_s`` (rules in place) and ``end_s`` (rules removed).
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass, field
from typing import Any

from bench.chaos.cluster import ChaosCluster, NodeStartError
from bench.chaos.history import HistoryWriter

KINDS = ("kill", "pause", "partition", "crash-all", "clock-skew")
SHAPES = ("halves", "isolate", "oneway", "bridge")
SUSPICION_TIMEOUT_S = 10.0  # roughly, under --preset local
NEVER_S = 1e9  # the end of a window that never ended


@dataclass
class Fault:
    kind: str
    at_s: float
    duration_s: float
    nodes: list[str]
    params: dict[str, Any] = field(default_factory=dict)


def partition_drops(shape: str, nodes: list[str], rng: random.Random) -> tuple[set[tuple[str, str]], list[list[str]]]:
    """(dropped (src, dst) pairs, the sides) for one partition shape."""
    shuffled = rng.sample(nodes, len(nodes))
    if shape == "isolate":
        a, b = shuffled[:1], shuffled[1:]
    elif shape == "bridge":
        bridge, rest = shuffled[0], shuffled[1:]
        a, b = rest[: len(rest) // 2], rest[len(rest) // 2:]
        drops = {(x, y) for x in a for y in b} | {(y, x) for x in a for y in b}
        return drops, [[*a, bridge], [*b, bridge]]
    else:
        a, b = shuffled[: len(nodes) // 2], shuffled[len(nodes) // 2:]
    if shape == "oneway":
        return {(x, y) for x in a for y in b}, [a, b]
    return {(x, y) for x in a for y in b} | {(y, x) for x in a for y in b}, [a, b]


def make_schedule(rng: random.Random, kinds: list[str], duration_s: float, nodes: list[str],
                  warmup_s: float = 3.0) -> list[Fault]:
    """Every selected kind once (in a seeded order), then random ones, while they fit in ``duration_s``."""
    faults: list[Fault] = []
    pending = rng.sample(kinds, len(kinds))
    t = warmup_s
    long_pause_done = False
    shapes = rng.sample(SHAPES, len(SHAPES))
    while True:
        kind = pending.pop(0) if pending else rng.choice(kinds)
        params: dict[str, Any] = {}
        few = rng.sample(nodes, rng.choice([1, 1, 2]) if len(nodes) >= 3 else 1)
        if kind == "kill":
            duration, chosen = rng.uniform(1.5, 4.0), few
        elif kind == "pause":
            duration = rng.uniform(2.0, 6.0) if long_pause_done else SUSPICION_TIMEOUT_S + rng.uniform(1.0, 3.0)
            long_pause_done, chosen = True, few
        elif kind == "partition":
            shape = shapes.pop(0) if shapes else rng.choice(SHAPES)
            drops, sides = partition_drops(shape, nodes, rng)
            duration, chosen = rng.uniform(4.0, 8.0), list(nodes)
            params = {"shape": shape, "drops": sorted(drops), "sides": sides}
        elif kind == "crash-all":
            order = rng.sample(nodes, len(nodes))
            delays = [round(rng.uniform(0.0, 1.5), 3) for _ in order]
            delays[0] = round(rng.uniform(0.5, 2.0), 3)
            duration, chosen, params = sum(delays), order, {"order": order, "delays": delays}
        elif kind == "clock-skew":
            offsets = {n: rng.choice([-1, 1]) * rng.randrange(1_000, 3_600_001) for n in few}
            duration, chosen, params = rng.uniform(4.0, 8.0), few, {"offsets": offsets}
        else:
            raise ValueError(f"unknown fault kind {kind!r}; choose from {', '.join(KINDS)}")
        if t + duration > duration_s - 2.0:
            if pending:
                continue  # a kind that does not fit now: try the others, then stop
            break
        faults.append(Fault(kind, round(t, 3), round(duration, 3), chosen, params))
        t += duration + rng.uniform(1.0, 2.0) + (2.0 if kind in ("crash-all", "clock-skew", "kill") else 0.0)
        if not pending and t > duration_s - 4.0:
            break
    return faults


class Nemesis:
    def __init__(self, cluster: ChaosCluster, history: HistoryWriter) -> None:
        self.cluster = cluster
        self.history = history
        self.injected: dict[str, int] = {}

    async def _restart(self, name: str, offset_ms: int) -> dict[str, Any]:
        node = self.cluster[name]
        window: dict[str, Any] = {"node": name, "stop_s": self.history.now()}
        await node.kill()
        node.clock_offset_ms = offset_ms
        window["start_s"] = self.history.now()
        await self._start(name)
        window["ready_s"] = self.history.now()
        return window

    async def _start(self, name: str) -> bool:
        """Three tries; a node that will not start is recorded (``start_failed``, down until the end) and left
        down, so the run still heals, reads and checks what the others hold (and the checkers say why)."""
        for attempt in range(3):
            try:
                await self.cluster.start_node(name)
                return True
            except NodeStartError as exc:
                if attempt == 2:
                    now = self.history.now()
                    self.history.write({"nemesis": "start_failed", "start_s": now, "end_s": now, "nodes": [name],
                                        "error": str(exc)[-3000:], "windows": [
                                            {"node": name, "stop_s": now, "start_s": NEVER_S, "ready_s": NEVER_S}]})
                    return False
                await asyncio.sleep(1.0)
        return False

    async def run(self, schedule: list[Fault], stop_at_s: float) -> None:
        for fault in schedule:
            delay = fault.at_s - self.history.now()
            if delay > 0:
                await asyncio.sleep(delay)
            if self.history.now() > stop_at_s:
                break
            await self.inject(fault)

    async def inject(self, fault: Fault) -> None:
        record: dict[str, Any] = {"nemesis": fault.kind, "start_s": self.history.now(), "nodes": fault.nodes,
                                  **fault.params}
        windows: list[dict[str, Any]] = []
        try:
            if fault.kind == "kill":
                stops = {n: self.history.now() for n in fault.nodes}
                await asyncio.gather(*(self.cluster[n].kill() for n in fault.nodes))
                await asyncio.sleep(fault.duration_s)
                for n in fault.nodes:
                    start = self.history.now()
                    await self._start(n)
                    windows.append({"node": n, "stop_s": stops[n], "start_s": start, "ready_s": self.history.now()})
            elif fault.kind == "pause":
                stop = self.history.now()
                for n in fault.nodes:
                    self.cluster[n].pause()
                await asyncio.sleep(fault.duration_s)
                resume = self.history.now()
                for n in fault.nodes:
                    self.cluster[n].resume()
                windows = [{"node": n, "stop_s": stop, "start_s": resume, "ready_s": resume} for n in fault.nodes]
            elif fault.kind == "partition":
                await self.cluster.network.apply({tuple(pair) for pair in fault.params["drops"]})  # type: ignore[misc]
                record["drops"] = sorted(self.cluster.network.drops)  # in hook mode, each pair is cut both ways
                record["start_s"] = self.history.now()
                await asyncio.sleep(fault.duration_s)
                record["end_s"] = self.history.now()
                await self.cluster.network.apply(set())
            elif fault.kind == "crash-all":
                windows = await self._crash_all(fault)
            elif fault.kind == "clock-skew":
                offsets = fault.params["offsets"]
                windows = list(await asyncio.gather(*(self._restart(n, offsets[n]) for n in fault.nodes)))
                await asyncio.sleep(fault.duration_s)
                windows += await asyncio.gather(*(self._restart(n, 0) for n in fault.nodes))
        finally:
            record.setdefault("end_s", self.history.now())
            record["windows"] = windows
            self.injected[fault.kind] = self.injected.get(fault.kind, 0) + 1
            self.history.write(record)

    async def _crash_all(self, fault: Fault) -> list[dict[str, Any]]:
        stop = self.history.now()
        await asyncio.gather(*(self.cluster[n].kill() for n in self.cluster.names))
        windows: dict[str, dict[str, Any]] = {n: {"node": n, "stop_s": stop} for n in self.cluster.names}

        async def start(name: str, at: float) -> None:
            await asyncio.sleep(at)
            windows[name]["start_s"] = self.history.now()
            await self._start(name)
            windows[name]["ready_s"] = self.history.now()

        at, starts = 0.0, []
        for name, delay in zip(fault.params["order"], fault.params["delays"], strict=True):
            at += delay
            starts.append(start(name, at))
        await asyncio.gather(*starts)
        return list(windows.values())

    async def heal(self) -> dict[str, Any]:
        """Network healed, every node resumed, then every node restarted (gracefully, clock offset 0)."""
        record: dict[str, Any] = {"nemesis": "heal", "start_s": self.history.now(), "nodes": self.cluster.names}
        await self.cluster.network.apply(set())
        for node in self.cluster.nodes.values():
            node.resume()

        async def restart(name: str) -> dict[str, Any]:
            window: dict[str, Any] = {"node": name, "stop_s": self.history.now()}
            self.cluster[name].clock_offset_ms = 0
            await self.cluster[name].terminate()
            window["start_s"] = self.history.now()
            await self._start(name)
            window["ready_s"] = self.history.now()
            return window

        record["windows"] = list(await asyncio.gather(*(restart(n) for n in self.cluster.names)))
        record["end_s"] = self.history.now()
        self.history.write(record)
        return record
