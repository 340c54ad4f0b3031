"""A random workload over every replicated type, with the sequential model the converged cluster must match."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

from rumor.gossip.simulation import SimNode
from rumor.server.replication.simulation import ReplicatedSimulation
from rumor.server.updates import Increment, MapChange, MVRegisterWrite, RegisterWrite, SetChange

KINDS = ("counter", "set", "register", "map", "mvregister")


@dataclass
class Model:
    """What every replica must show once converged, computed from the acknowledged updates alone."""

    counters: dict[str, int] = field(default_factory=dict)
    adds: dict[str, set[str]] = field(default_factory=dict)
    removed: dict[str, set[str]] = field(default_factory=dict)
    registers: dict[str, list[tuple[Any, str, Any]]] = field(default_factory=dict)
    maps: dict[str, dict[str, list[tuple[Any, str, Any]]]] = field(default_factory=dict)
    mv: dict[str, set[Any]] = field(default_factory=dict)
    writes: int = 0


class Workload:
    def __init__(self, cluster: ReplicatedSimulation, rng: random.Random, keys_per_kind: int = 3) -> None:
        self.cluster = cluster
        self.rng = rng
        self.keys_per_kind = keys_per_kind
        self.model = Model()

    def random_update(self, node: SimNode) -> None:
        rng, model = self.rng, self.model
        kind = rng.choice(KINDS)
        key = f"{kind}-{rng.randrange(self.keys_per_kind)}"
        keyspace = self.cluster.keyspaces[node.id]
        model.writes += 1
        tag = f"{node.id}#{model.writes}"
        if kind == "counter":
            amount = rng.choice([-3, -1, 1, 2, 5])
            self.cluster.update(node, key, Increment(amount=amount))
            model.counters[key] = model.counters.get(key, 0) + amount
        elif kind == "set":
            item = keyspace.item(key)
            visible = sorted(item.value) if item is not None else []
            if visible and rng.random() < 0.3:
                element = rng.choice(visible)
                self.cluster.update(node, key, SetChange(remove=(element,)))
                model.removed.setdefault(key, set()).add(element)
            else:
                element = rng.choice([tag, f"shared-{rng.randrange(4)}"])
                self.cluster.update(node, key, SetChange(add=(element,)))
                model.adds.setdefault(key, set()).add(element)
        elif kind == "register":
            self.cluster.update(node, key, RegisterWrite(value=tag))
            model.registers.setdefault(key, []).append((keyspace.hlc.last, node.id, tag))
        elif kind == "map":
            name = f"f{rng.randrange(3)}"
            self.cluster.update(node, key, MapChange(set=((name, tag),)))
            model.maps.setdefault(key, {}).setdefault(name, []).append((keyspace.hlc.last, node.id, tag))
        else:
            self.cluster.update(node, key, MVRegisterWrite(value=tag))
            model.mv.setdefault(key, set()).add(tag)

    def check(self, node: SimNode) -> None:
        """Every value on ``node`` equals what the model computes (call after convergence)."""
        keyspace, model = self.cluster.keyspaces[node.id], self.model
        where = self.cluster.describe()

        def value(key: str) -> Any:
            item = keyspace.item(key)
            return None if item is None else item.value

        for key, total in model.counters.items():
            assert (value(key) or 0) == total, (key, where)
        for key, adds in model.adds.items():
            shown = set(value(key) or [])
            never_removed = adds - model.removed.get(key, set())
            assert never_removed <= shown <= adds, (key, shown, adds, where)
        for key, writes in model.registers.items():
            assert value(key) == max(writes, key=lambda w: (w[0], w[1]))[2], (key, where)
        for key, fields in model.maps.items():
            expect = {name: max(ws, key=lambda w: (w[0], w[1]))[2] for name, ws in fields.items()}
            assert value(key) == expect, (key, value(key), expect, where)
        for key, written in model.mv.items():
            shown = value(key)
            assert shown and set(shown) <= written, (key, shown, where)
