"""Speed and correctness of rumor's CRDTs next to the two Python peers on PyPI, measured in one process.

Why one process: the peers (`crdts` 0.0.4, `python3-crdt` 1.0.3) are the baseline, so each ratio compares runs on the
same machine at the same moment. The peers are bench extras that live only in `.venv-bench` (see bench/README.md):

    .venv-bench/bin/python bench/crdt_bench.py            # human table
    .venv-bench/bin/python bench/crdt_bench.py --json     # one JSON object
    .venv-bench/bin/python bench/crdt_bench.py --quick    # sizes / 10, a smoke run in seconds

python3-crdt's wheel also installs top-level `src` and `tests` packages; we import only its real package `py3crdt`
(checked by path) and never `src`/`tests`; ours is `rumor.crdt`, which no peer's package can shadow.
Timed sections run with the garbage collector paused (as `timeit` does) for every library alike; setup is never timed.
"""

from __future__ import annotations

import argparse
import copy
import gc
import importlib
import importlib.metadata
import json
import platform
import random
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import rust_peers  # noqa: E402  (bench/ is sys.path[0] when run as a script)

import crdt  # noqa: E402

# ---------------------------------------------------------------------------------------------------------- peers


def load_peer(module: str, distribution: str, package_dir: str) -> tuple[ModuleType | None, str]:
    """Import a peer if the bench venv has it; refuse a same-named module from anywhere but its own package dir."""
    try:
        mod = importlib.import_module(module)
        version = importlib.metadata.version(distribution)
    except ImportError as exc:
        return None, f"not installed ({exc}); use .venv-bench"
    if Path(mod.__file__ or "").parent.name != package_dir:
        return None, f"{module} resolved to {mod.__file__}, not the {distribution} wheel"
    return mod, version


crdts, CRDTS_VERSION = load_peer("crdts", "crdts", "crdts")
py3crdt, PY3CRDT_VERSION = load_peer("py3crdt", "python3-crdt", "py3crdt")
if py3crdt is not None:
    # Submodules, imported by their package path: the wheel's stray top-level `src` has the same files but
    # imports `gcounter` absolutely and breaks.
    for _sub in ("gcounter", "pncounter", "orset"):
        importlib.import_module(f"py3crdt.{_sub}")


# ---------------------------------------------------------------------------------------------------------- timing


@contextmanager
def gc_paused() -> Iterator[None]:
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def best_of(repeats: int, run: Callable[[], float]) -> float:
    """`run` does its own untimed setup and returns the seconds of its timed part; keep the fastest."""
    return min(run() for _ in range(repeats))


def timed(fn: Callable[[], object]) -> float:
    with gc_paused():
        start = time.perf_counter()
        fn()
        return time.perf_counter() - start


# ---------------------------------------------------------------------------------------------------------- adapters
# One small adapter per library gives the law probes a common vocabulary: new replica, mutate, merge, value, copy.
# `group` is per-trial shared setup (crdts replicas must share a clock uuid; python3-crdt counters must be told
# every replica id up front; python3-crdt sets need caller-made unique tags).


class Adapter:
    """Duck-typed: subclasses define `new` and the mutators of their kind (inc, dec, add, remove); merge, value
    and copy default to the rumor-style API."""

    name = ""
    kind = ""  # "counter" | "pncounter" | "set"

    def merge(self, into: Any, other: Any) -> None:
        into.merge(other)

    def value(self, s: Any) -> Any:
        return s.value()

    def copy(self, s: Any) -> Any:
        return s.copy() if type(s).__module__.startswith("rumor.crdt.") else copy.deepcopy(s)


class OursCounter(Adapter):
    def __init__(self, kind: str) -> None:
        self.kind, self.name = kind, f"rumor.{'GCounter' if kind == 'counter' else 'PNCounter'}"
        self.cls = crdt.GCounter if kind == "counter" else crdt.PNCounter

    def new(self, replica: str, group: dict[str, Any]) -> Any:
        return self.cls()

    def inc(self, s: Any, replica: str, amount: int, group: dict[str, Any]) -> None:
        s.merge(s.increment(replica, amount))

    def dec(self, s: Any, replica: str, amount: int, group: dict[str, Any]) -> None:
        s.merge(s.decrement(replica, amount))


class OursSet(Adapter):
    name, kind = "rumor.ORSet", "set"

    def new(self, replica: str, group: dict[str, Any]) -> Any:
        return crdt.ORSet()

    def add(self, s: Any, replica: str, x: int, group: dict[str, Any]) -> None:
        s.merge(s.add(replica, x))

    def remove(self, s: Any, replica: str, x: int, group: dict[str, Any]) -> None:
        s.merge(s.remove(x))


class CrdtsBase(Adapter):
    """crdts is op-based over a shared Lamport clock; its documented resync is replaying `history()`."""

    cls_name = ""

    def new(self, replica: str, group: dict[str, Any]) -> Any:
        uuid = group.setdefault("crdts_uuid", crdts.ScalarClock().uuid)
        return getattr(crdts, self.cls_name)(clock=crdts.ScalarClock(uuid=uuid))

    def merge(self, into: Any, other: Any) -> None:
        for update in other.history():
            into.update(update)

    def value(self, s: Any) -> Any:
        v = s.read()
        return frozenset(v) if isinstance(v, set) else v


class CrdtsCounter(CrdtsBase):
    """crdts.Counter (grow-only) or crdts.PNCounter: neither keeps per-replica state."""

    def __init__(self, kind: str) -> None:
        self.kind, self.cls_name = kind, "Counter" if kind == "counter" else "PNCounter"
        self.name = f"crdts.{self.cls_name}"

    def inc(self, s: Any, replica: str, amount: int, group: dict[str, Any]) -> None:
        s.increase(amount)

    def dec(self, s: Any, replica: str, amount: int, group: dict[str, Any]) -> None:
        s.decrease(amount)


class CrdtsSet(CrdtsBase):
    name, kind, cls_name = "crdts.ORSet", "set", "ORSet"

    def add(self, s: Any, replica: str, x: int, group: dict[str, Any]) -> None:
        s.observe(x)

    def remove(self, s: Any, replica: str, x: int, group: dict[str, Any]) -> None:
        s.remove(x)


class Py3Counter(Adapter):
    """python3-crdt counters only count for replica ids registered with `add_new_node` before use."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.name = f"python3-crdt.{'GCounter' if kind == 'counter' else 'PNCounter'}"
        self.cls = py3crdt.gcounter.GCounter if kind == "counter" else py3crdt.pncounter.PNCounter

    def new(self, replica: str, group: dict[str, Any]) -> Any:
        s = self.cls(replica)
        for r in group["replicas"]:
            s.add_new_node(r)
        return s

    def inc(self, s: Any, replica: str, amount: int, group: dict[str, Any]) -> None:
        for _ in range(amount):
            s.inc(replica)

    def dec(self, s: Any, replica: str, amount: int, group: dict[str, Any]) -> None:
        for _ in range(amount):
            s.dec(replica)

    def value(self, s: Any) -> Any:
        return s.query()


class Py3Set(Adapter):
    name, kind = "python3-crdt.ORSet", "set"

    def new(self, replica: str, group: dict[str, Any]) -> Any:
        return py3crdt.orset.ORSet(replica)

    def add(self, s: Any, replica: str, x: int, group: dict[str, Any]) -> None:
        group["tag"] = group.get("tag", 0) + 1
        s.add(x, f"{replica}:{group['tag']}")

    def remove(self, s: Any, replica: str, x: int, group: dict[str, Any]) -> None:
        s.remove(x)

    def value(self, s: Any) -> Any:
        return frozenset(item["elem"] for item in s.A if s.query(item["elem"]))


# ---------------------------------------------------------------------------------------------------------- law probes
# Each probe runs the library for real on a seeded scenario and returns True when the law held.

REPLICAS = ("A", "B", "C")


def random_history(ad: Adapter, rng: random.Random, group: dict[str, Any], ops: int = 14) -> tuple[list[Any], int]:
    """Three replicas, random mutations and occasional merges; returns the states and the counters' true total."""
    states = [ad.new(r, group) for r in REPLICAS]
    total = 0
    for _ in range(ops):
        i = rng.randrange(3)
        roll = rng.random()
        if roll < 0.25:
            ad.merge(states[i], ad.copy(states[rng.randrange(3)]))
        elif ad.kind == "set":
            (ad.add if roll < 0.7 else ad.remove)(states[i], REPLICAS[i], rng.randrange(4), group)
        elif ad.kind == "pncounter" and roll > 0.7:
            n = rng.randint(1, 3)
            ad.dec(states[i], REPLICAS[i], n, group)
            total -= n
        else:
            n = rng.randint(1, 3)
            ad.inc(states[i], REPLICAS[i], n, group)
            total += n
    return states, total


def merged(ad: Adapter, *states: Any) -> Any:
    acc = ad.copy(states[0])
    for s in states[1:]:
        ad.merge(acc, ad.copy(s))
    return acc


def exchange(ad: Adapter, states: list[Any]) -> None:
    """Full-state anti-entropy until quiescent: two all-pairs rounds."""
    for _ in range(2):
        for i, a in enumerate(states):
            for j, b in enumerate(states):
                if i != j:
                    ad.merge(a, ad.copy(b))


def law_commutative(ad: Adapter, rng: random.Random, group: dict[str, Any]) -> bool:
    (a, b, _), _ = random_history(ad, rng, group)
    return ad.value(merged(ad, a, b)) == ad.value(merged(ad, b, a))


def law_associative(ad: Adapter, rng: random.Random, group: dict[str, Any]) -> bool:
    (a, b, c), _ = random_history(ad, rng, group)
    return ad.value(merged(ad, merged(ad, a, b), c)) == ad.value(merged(ad, a, merged(ad, b, c)))


def law_idempotent(ad: Adapter, rng: random.Random, group: dict[str, Any]) -> bool:
    (a, b, _), _ = random_history(ad, rng, group)
    ab = merged(ad, a, b)
    return ad.value(merged(ad, a, a)) == ad.value(a) and ad.value(merged(ad, ab, b)) == ad.value(ab)


def law_converges(ad: Adapter, rng: random.Random, group: dict[str, Any]) -> bool:
    states, total = random_history(ad, rng, group)
    exchange(ad, states)
    values = [ad.value(s) for s in states]
    return all(v == values[0] for v in values) and (ad.kind == "set" or values[0] == total)


def law_concurrent_increments_kept(ad: Adapter, rng: random.Random, group: dict[str, Any]) -> bool:
    a, b = ad.new("A", group), ad.new("B", group)
    n, m = rng.randint(1, 5), rng.randint(1, 5)
    ad.inc(a, "A", n, group)
    ad.inc(b, "B", m, group)
    exchange(ad, [a, b])
    return ad.value(a) == ad.value(b) == n + m


def law_late_replica_counted(ad: Adapter, rng: random.Random, group: dict[str, Any]) -> bool:
    """A replica that joins after the others were created (knows them; they don't know it) must still count."""
    group["replicas"] = ["A", "B"]
    a, b = ad.new("A", group), ad.new("B", group)
    group["replicas"] = ["A", "B", "C"]
    c = ad.new("C", group)
    ad.inc(a, "A", 1, group)
    n = rng.randint(1, 5)
    ad.inc(c, "C", n, group)
    exchange(ad, [a, b, c])
    return all(ad.value(s) == 1 + n for s in (a, b, c))


def law_remove_then_concurrent_add_kept(ad: Adapter, rng: random.Random, group: dict[str, Any]) -> bool:
    """Add-wins: A removes x while B concurrently re-adds it; x must survive whatever each replica did meanwhile."""
    a, b = ad.new("A", group), ad.new("B", group)
    for _ in range(rng.randint(0, 4)):
        ad.add(a, "A", 100 + rng.randrange(50), group)
    for _ in range(rng.randint(0, 4)):
        ad.add(b, "B", 200 + rng.randrange(50), group)
    ad.add(a, "A", 1, group)
    exchange(ad, [a, b])
    for _ in range(rng.randint(0, 3)):  # unrelated local work in between moves each replica's clock
        ad.add(a, "A", 300 + rng.randrange(50), group)
    for _ in range(rng.randint(0, 3)):
        ad.add(b, "B", 400 + rng.randrange(50), group)
    ad.remove(a, "A", 1, group)
    ad.add(b, "B", 1, group)
    exchange(ad, [a, b])
    return 1 in ad.value(a) and 1 in ad.value(b)


def law_unobserved_remove_is_noop(ad: Adapter, rng: random.Random, group: dict[str, Any]) -> bool:
    """Observed-remove: B removes x without having seen A's add of x; the add must survive."""
    a, b = ad.new("A", group), ad.new("B", group)
    for _ in range(rng.randint(0, 4)):
        ad.add(b, "B", 200 + rng.randrange(50), group)
    ad.add(a, "A", 1, group)
    ad.remove(b, "B", 1, group)
    exchange(ad, [a, b])
    return 1 in ad.value(a) and 1 in ad.value(b)


def law_merge_isolates_replicas(ad: Adapter, rng: random.Random, group: dict[str, Any]) -> bool:
    """After a.merge(b), mutating a must not change b (no shared mutable state between replicas)."""
    a, b = ad.new("A", group), ad.new("B", group)
    x = rng.randrange(4)
    ad.add(b, "B", x, group)
    ad.remove(b, "B", x, group)
    before = ad.value(b)
    ad.merge(a, b)
    ad.add(a, "A", x, group)
    return ad.value(b) == before


COMMON_LAWS = {
    "merge_not_commutative": law_commutative,
    "merge_not_associative": law_associative,
    "merge_not_idempotent": law_idempotent,
    "replicas_diverge_or_wrong_total_after_exchange": law_converges,
}
LAWS: dict[str, dict[str, Callable[[Adapter, random.Random, dict[str, Any]], bool]]] = {
    "counter": {**COMMON_LAWS, "concurrent_increments_lost": law_concurrent_increments_kept,
                "late_joining_replica_lost": law_late_replica_counted},
    "set": {**COMMON_LAWS, "remove_then_concurrent_add_lost": law_remove_then_concurrent_add_kept,
            "unobserved_remove_deletes_add": law_unobserved_remove_is_noop,
            "merge_shares_state_between_replicas": law_merge_isolates_replicas},
}
LAWS["pncounter"] = LAWS["counter"]


def probe(ad: Adapter, trials: int) -> dict[str, Any]:
    """Run every law of the adapter's kind on `trials` seeds; a crash counts as a violation (first one recorded)."""
    broken: dict[str, int] = {}
    errors: dict[str, str] = {}
    for law, check in LAWS[ad.kind].items():
        for seed in range(trials):
            try:
                ok = check(ad, random.Random(seed), {"replicas": list(REPLICAS)})
            except Exception as exc:
                ok = False
                errors.setdefault(law, f"{type(exc).__name__}: {str(exc)[:80]}")
            except BaseException as exc:  # packify.UsageError derives from BaseException
                if isinstance(exc, KeyboardInterrupt | SystemExit):
                    raise
                ok = False
                errors.setdefault(law, f"{type(exc).__name__}: {str(exc)[:80]}")
            if not ok:
                broken[law] = broken.get(law, 0) + 1
    return {"trials": trials, "violations": broken, "total": sum(broken.values()), "errors": errors}


def adapters() -> dict[str, list[Adapter]]:
    out: dict[str, list[Adapter]] = {"rumor": [OursCounter("counter"), OursCounter("pncounter"), OursSet()]}
    if crdts is not None:
        out["crdts"] = [CrdtsCounter("counter"), CrdtsCounter("pncounter"), CrdtsSet()]
    if py3crdt is not None:
        out["python3-crdt"] = [Py3Counter("counter"), Py3Counter("pncounter"), Py3Set()]
    return out


# ---------------------------------------------------------------------------------------------------------- speed


def ours_add_rate(n: int, repeats: int) -> float:
    def run() -> float:
        s = crdt.ORSet()

        def loop() -> None:
            for i in range(n):
                d = s.add("A", i)
                s.merge(d)

        return timed(loop)

    return n / best_of(repeats, run)


def crdts_build(n: int, start: int = 0, base: Any = None) -> tuple[Any, float]:
    """Add n distinct members to a crdts ORSet (a copy of `base` if given); returns it and the seconds taken."""
    s = copy.deepcopy(base) if base is not None else crdts.ORSet()
    return s, timed(lambda: [s.observe(i) for i in range(start, start + n)])


def py3_build(n: int, replica: str, start: int = 0, base: Any = None) -> tuple[Any, float]:
    s = copy.deepcopy(base) if base is not None else py3crdt.orset.ORSet(replica)
    return s, timed(lambda: [s.add(i, f"{replica}:{i}") for i in range(start, start + n)])


def ours_pair(n: int) -> tuple[Any, Any]:
    """Two sets of n elements sharing 90%: the shared part is added on C and replicated to A and B, then A and B
    each add their own 10% (distinct elements). Built with add_all deltas to keep setup short."""
    shared, own = n * 9 // 10, n - n * 9 // 10
    c = crdt.ORSet()
    for lo in range(0, shared, 10_000):
        c.merge(c.add_all("C", range(lo, min(lo + 10_000, shared))))
    a, b = c.copy(), c.copy()
    a.merge(a.add_all("A", range(shared, shared + own)))
    b.merge(b.add_all("B", range(n, n + own)))
    return a, b


def ours_merge_ms(n: int, repeats: int) -> float:
    a, b = ours_pair(n)

    def run() -> float:
        target = a.copy()
        return timed(lambda: target.merge(b))

    return best_of(repeats, run) * 1e3


def crdts_merge_ms(n: int) -> tuple[float, float]:
    """Same shape as ours_pair for crdts (its 'merge' is replaying the other replica's history). Returns
    (merge ms, add rate measured while building: the first n adds went into one growing set)."""
    shared, own = n * 9 // 10, n - n * 9 // 10
    c, t_shared = crdts_build(shared)
    a, t_own = crdts_build(own, shared, c)
    b, _ = crdts_build(own, n, c)
    add_rate = n / (t_shared + t_own)

    def replay() -> None:
        for u in b.history():
            a.update(u)

    return timed(replay) * 1e3, add_rate


def py3_merge_ms(n: int) -> float:
    shared, own = n * 9 // 10, n - n * 9 // 10
    c, _ = py3_build(shared, "C")
    a, _ = py3_build(own, "A", shared, c)
    b, _ = py3_build(own, "B", n, c)
    return timed(lambda: a.merge(b)) * 1e3


def add_cost_runner(base_size: int, adds: int, repeats: int) -> Callable[[], float]:
    """A run: seconds per add into a set that already has base_size elements (replica A adds new ones)."""
    s = crdt.ORSet()
    for lo in range(0, base_size, 50_000):
        s.merge(s.add_all("Z", range(lo, min(lo + 50_000, base_size))))
    fresh = iter(range(base_size, base_size + adds * repeats))

    def run() -> float:
        items = [next(fresh) for _ in range(adds)]

        def loop() -> None:
            for x in items:
                d = s.add("A", x)
                s.merge(d)

        return timed(loop) / adds

    return run


def delta_merge_runner(base_size: int, deltas: int, delta_size: int, repeats: int) -> Callable[[], float]:
    """A run: seconds per remote delta (delta_size fresh adds from replica B) merged into a set of base_size."""
    s, _ = ours_pair(base_size)
    b = crdt.ORSet()
    batches = []
    for _ in range(repeats):
        batch = []
        for _ in range(deltas):
            acc = crdt.ORSet()
            for _ in range(delta_size):
                d = b.add("B", -1 - len(b))
                b.merge(d)
                acc.merge(d)
            batch.append(acc)
        batches.append(batch)
    pending = iter(batches)

    def run() -> float:
        batch = next(pending)
        return timed(lambda: [s.merge(d) for d in batch]) / deltas

    return run


def interleaved_best(repeats: int, *runs: Callable[[], float]) -> list[float]:
    """Best of `repeats` for each run, alternating between them so machine noise hits all sizes alike."""
    best = [float("inf")] * len(runs)
    for _ in range(repeats):
        for i, run in enumerate(runs):
            best[i] = min(best[i], run())
    return best


def pncounter_merge_us(replicas: int, repeats: int) -> float:
    rng = random.Random(7)
    a, b = crdt.PNCounter(), crdt.PNCounter()
    for r in range(replicas):
        for s in (a, b):
            s.merge(s.increment(f"r{r}", rng.randint(1, 10**6)))
            s.merge(s.decrement(f"r{r}", rng.randint(1, 10**6)))
    copies = [a.copy() for _ in range(repeats)]
    return min(timed(lambda c=c: c.merge(b)) for c in copies) * 1e6


def py3_gcounter_merge_us(replicas: int, repeats: int) -> float:
    rng = random.Random(7)
    a, b = py3crdt.gcounter.GCounter("a"), py3crdt.gcounter.GCounter("b")
    for s in (a, b):
        for r in range(replicas):
            s.add_new_node(f"r{r}")
            s.payload[f"r{r}"] = rng.randint(1, 10**6)  # setup shortcut; its inc() is +1 per call
    copies = [copy.deepcopy(a) for _ in range(repeats)]
    return min(timed(lambda c=c: c.merge(b)) for c in copies) * 1e6


def codec_rates(n: int, repeats: int) -> dict[str, float]:
    a, _ = ours_pair(n)
    blob = crdt.encode(a)
    mb = len(blob) / 1e6
    enc = best_of(repeats, lambda: timed(lambda: crdt.encode(a)))
    dec = best_of(repeats, lambda: timed(lambda: crdt.decode(blob)))
    return {"encode_mb_per_s": mb / enc, "decode_mb_per_s": mb / dec, "encoded_bytes": len(blob),
            "encode_elements_per_s": n / enc, "decode_elements_per_s": n / dec}


def crdts_codec_rates(n: int) -> dict[str, float]:
    s, _ = crdts_build(n)
    blob = s.pack()
    enc = timed(s.pack)
    dec = timed(lambda: crdts.ORSet.unpack(blob))
    return {"crdts_pack_elements_per_s": n / enc, "crdts_unpack_elements_per_s": n / dec,
            "crdts_packed_bytes": len(blob)}


# ---------------------------------------------------------------------------------------------------------- main


def run(quick: bool) -> dict[str, Any]:
    scale = 10 if quick else 1
    n = 100_000 // scale
    n_py3 = 2_000 // scale  # python3-crdt adds and merges scan lists: quadratic, so a small n
    started = time.perf_counter()
    out: dict[str, Any] = {
        "bench": "crdt", "quick": quick, "python": platform.python_version(),
        "peers": {"crdts": CRDTS_VERSION, "python3-crdt": PY3CRDT_VERSION},
        "n": {"orset_add": n, "orset_merge": n, "python3_crdt": n_py3, "codec": n},
    }

    out["orset_add_ops_per_s"] = ours_add_rate(n, 3)
    out["orset_merge_ms"] = ours_merge_ms(n, 3)
    if crdts is not None:
        # One crdts build serves both figures: timing it twice would add ~25 s for no information.
        merge_ms, add_rate = crdts_merge_ms(n)
        out["crdts_orset_add_ops_per_s"] = add_rate
        out["crdts_orset_merge_ms"] = merge_ms
        out["orset_add_vs_crdts"] = out["orset_add_ops_per_s"] / add_rate
        out["orset_merge_vs_crdts"] = merge_ms / out["orset_merge_ms"]
    if py3crdt is not None:
        out["python3_crdt_orset_add_ops_per_s"] = n_py3 / py3_build(n_py3, "A")[1]
        out["python3_crdt_orset_merge_ms"] = py3_merge_ms(n_py3)
        out["orset_merge_ms_at_python3_crdt_n"] = ours_merge_ms(n_py3, 3)
        out["orset_add_vs_python3_crdt"] = out["orset_add_ops_per_s"] / out["python3_crdt_orset_add_ops_per_s"]
        out["orset_merge_vs_python3_crdt_same_n"] = (
            out["python3_crdt_orset_merge_ms"] / out["orset_merge_ms_at_python3_crdt_n"])

    big = 1_000_000 // scale
    out["n"]["orset_add_cost_big"] = big
    cost_big, cost_small = interleaved_best(
        5, add_cost_runner(big, 2_000, 5), add_cost_runner(1_000, 2_000, 5))
    out["orset_add_us_into_1m"] = cost_big * 1e6
    out["orset_add_us_into_1k"] = cost_small * 1e6
    out["orset_add_cost_1m_over_1k"] = cost_big / cost_small

    dm_big, dm_small = interleaved_best(
        5, delta_merge_runner(n, 1_000, 10, 5), delta_merge_runner(1_000, 1_000, 10, 5))
    out["orset_delta_merge_us_into_100k"] = dm_big * 1e6
    out["orset_delta_merge_us_into_1k"] = dm_small * 1e6
    out["orset_delta_merge_cost_100k_over_1k"] = dm_big / dm_small

    out["pncounter_merge_100_replicas_us"] = pncounter_merge_us(100, 50)
    if py3crdt is not None:
        out["python3_crdt_gcounter_merge_100_replicas_us"] = py3_gcounter_merge_us(100, 50)

    out.update(codec_rates(n, 3))
    if crdts is not None:
        out.update(crdts_codec_rates(n // 10))

    trials = 10 if quick else 40
    out["peer_law_violations"] = {
        lib: {ad.name: probe(ad, trials) for ad in ads} for lib, ads in adapters().items()
    }
    out.update(rust_peers.run(quick))  # issue 13: loro and pycrdt, keys in bench/rust_peers.py
    out["targets"] = {**targets(out), **out.pop("rust_peers_targets")}
    out["seconds"] = time.perf_counter() - started
    return out


def targets(out: dict[str, Any]) -> dict[str, dict[str, Any]]:
    def target(key: str, op: str, bound: float) -> dict[str, Any]:
        v = out.get(key)
        met = None if v is None else (v >= bound if op == ">=" else v <= bound)
        return {"key": key, "want": f"{op} {bound}", "value": v, "met": met}

    return {
        "adds_vs_crdts": target("orset_add_vs_crdts", ">=", 20),
        "merge_vs_crdts": target("orset_merge_vs_crdts", ">=", 50),
        "add_cost_1m_over_1k": target("orset_add_cost_1m_over_1k", "<=", 1.5),
        "delta_merge_proportional_to_delta": target("orset_delta_merge_cost_100k_over_1k", "<=", 1.5),
    }


def fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:,.3f}" if abs(v) < 100 else f"{v:,.0f}"
    return str(v)


def print_table(out: dict[str, Any]) -> None:
    print(f"crdt bench  python {out['python']}  peers {out['peers']}  sizes {out['n']}"
          f"{'  (QUICK: sizes / 10)' if out['quick'] else ''}")
    print()
    print(f"{'metric':<48} {'value':>16}")
    print("-" * 65)
    for key, v in out.items():
        if isinstance(v, int | float) and not isinstance(v, bool) and key != "seconds":
            print(f"{key:<48} {fmt(v):>16}")
    print()
    print("targets")
    for name, t in out["targets"].items():
        state = {True: "MET", False: "MISSED", None: "n/a"}[t["met"]]
        print(f"  {name:<36} {t['key']:<40} {fmt(t['value']):>10} want {t['want']:<8} {state}")
    print()
    print(f"law probes ({'violating trials / trials per law'})")
    for per_type in out["peer_law_violations"].values():
        for type_name, res in per_type.items():
            broken = ", ".join(f"{law}={n}" for law, n in sorted(res["violations"].items())) or "none"
            print(f"  {type_name:<26} {res['trials']:>3} trials  broken: {broken}")
            by_error: dict[str, list[str]] = {}
            for law, err in sorted(res["errors"].items()):
                by_error.setdefault(err, []).append(law)
            for err, laws in by_error.items():
                print(f"  {'':<26}   crashed in {', '.join(laws)}: {err}")
    print()
    print(f"total {out['seconds']:.1f} s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    parser.add_argument("--quick", action="store_true", help="sizes / 10 for a smoke run")
    args = parser.parse_args(argv)
    out = run(args.quick)
    if args.json:
        print(json.dumps(out, sort_keys=True))
    else:
        print_table(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
