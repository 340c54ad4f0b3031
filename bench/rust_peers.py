"""Issue 13: rumor's map state, codec, counters and sync next to the Rust-backed loro (Loro) and pycrdt (Yrs).

Every figure is measured in one process, libraries interleaved within each repeat, median of the repeats, so a slow
spell of this VM hits all three alike; memory per entry is the exception (one subprocess per library, so one heap
does not pollute another's). Timed sections pause the garbage collector for every library; setup is never timed.
Each figure ``KEY`` comes with ``loro_KEY``, ``pycrdt_KEY`` and the ratios ``KEY_vs_loro``, ``KEY_vs_pycrdt``,
oriented so that above 1 means rumor is better (the peer's time or bytes over ours; our rate over the peer's).
A peer that is not importable, or has no equivalent (Yrs has no counter), gets nulls and a reason in
``rust_peers.missing``.

    .venv-bench/bin/python bench/rust_peers.py --json [--quick]    # alone; crdt_bench.py includes it

``--quick`` divides every size by 10. See bench/README.md for what each key times and the caveats.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import importlib.metadata
import json
import os
import platform
import statistics
import subprocess
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

from rumor.crdt import HLCTimestamp, HybridLogicalClock, LWWMap, PNCounter, decode, decode_context, encode, encode_context  # noqa: E402

PEERS = ("loro", "pycrdt")
LIBS = ("rumor", *PEERS)
PHYS_MS = 1_700_000_000_000  # HLC physical time handed in; constant, so logical counters advance (deterministic)
BATCH = 10_000  # setup writes per commit / set_all delta, for every library alike
REPEATS = 3


def load(name: str) -> tuple[ModuleType | None, str]:
    try:
        return importlib.import_module(name), importlib.metadata.version(name)
    except ImportError as exc:
        return None, f"not installed ({exc}); pip install -e '.[bench]'"


loro, LORO_VERSION = load("loro")
pycrdt, PYCRDT_VERSION = load("pycrdt")
AVAILABLE = {"rumor": True, "loro": loro is not None, "pycrdt": pycrdt is not None}


# ---------------------------------------------------------------------------------------------------------- timing


@contextmanager
def gc_paused() -> Iterator[None]:
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def timed_ms(fn: Callable[[], object]) -> float:
    with gc_paused():
        start = time.perf_counter()
        fn()
        return (time.perf_counter() - start) * 1e3


def rate(chunk: Callable[[int, int], None], max_ops: int, max_s: float) -> float:
    """Ops per second of ``chunk(lo, hi)`` (ops lo..hi-1, an inline loop), bounded by ``max_ops`` and ``max_s``."""
    with gc_paused():
        start = time.perf_counter()
        deadline, done = start + max_s, 0
        while done < max_ops:
            hi = min(done + 500, max_ops)
            chunk(done, hi)
            done = hi
            if time.perf_counter() > deadline:
                break
        return done / (time.perf_counter() - start)


def interleaved(repeats: int, runs: dict[str, Callable[[], Any]]) -> dict[str, list[Any]]:
    """Each available library's run, ``repeats`` times, alternating libraries within a repeat."""
    out: dict[str, list[Any]] = {lib: [] for lib in runs}
    for _ in range(repeats):
        for lib, run in runs.items():
            out[lib].append(run())
    return out


def median(xs: list[float]) -> float:
    return float(statistics.median(xs))


# ---------------------------------------------------------------------------------------------------------- builders
# Short string keys to short string values: "k<i>" -> "v<i>", written BATCH to a commit.


def rumor_map(lo: int, hi: int, replica: str, base: LWWMap | None = None) -> LWWMap:
    m = base.copy() if base is not None else LWWMap()
    clock = HybridLogicalClock()
    for b in range(lo, hi, BATCH):
        rows = ((f"k{i}", f"v{i}") for i in range(b, min(b + BATCH, hi)))
        m.merge(m.set_all(replica, rows, clock.now(PHYS_MS)))
    return m


def loro_fill(doc: Any, lo: int, hi: int) -> Any:
    m = doc.get_map("m")
    for b in range(lo, hi, BATCH):
        for i in range(b, min(b + BATCH, hi)):
            m.insert(f"k{i}", f"v{i}")
        doc.commit()
    return doc


def loro_history(doc: Any) -> bytes:
    return bytes(doc.export(loro.ExportMode.Updates(loro.VersionVector())))


def loro_replica(history: bytes) -> Any:
    """A new replica (new peer id) holding ``history``. Imported as updates, not forked from a snapshot: a snapshot
    import (and ``fork``) loads the oplog lazily, and the first import into it then pays ~0.3 s for 100k entries,
    which a long-running replica never does."""
    d = loro.LoroDoc()
    d.import_(history)
    return d


def pycrdt_fill(doc: Any, lo: int, hi: int) -> Any:
    if "m" not in doc:
        doc["m"] = pycrdt.Map()
    m = doc.get("m", type=pycrdt.Map)
    for b in range(lo, hi, BATCH):
        with doc.transaction():
            for i in range(b, min(b + BATCH, hi)):
                m[f"k{i}"] = f"v{i}"
    return doc


def pycrdt_copy(update: bytes) -> Any:
    d = pycrdt.Doc()
    d.apply_update(update)
    return d


# ---------------------------------------------------------------------------------------------------------- figures


def codec(n: int, repeats: int) -> dict[str, dict[str, float]]:
    """Encode and decode of an n-entry map: rumor encode/decode (decode validates and re-encodes: hostile input);
    loro snapshot export/import plus one read, which forces the lazily imported state to load; pycrdt full update
    and apply_update. Each timed encode follows one fresh write, as a live replica's would: loro caches its last
    export (a second export of an unchanged doc costs ~1% of the first)."""
    runs: dict[str, Callable[[], tuple[float, float, int]]] = {}
    m = rumor_map(0, n, "A")
    fresh = iter(range(10**9))

    def rumor_run() -> tuple[float, float, int]:
        m.merge(m.set("A", "k1", f"x{next(fresh)}", HLCTimestamp(PHYS_MS + 1, next(fresh))))
        enc = timed_ms(lambda: encode(m))
        blob = encode(m)
        return enc, timed_ms(lambda: decode(blob)), len(blob)

    runs["rumor"] = rumor_run
    if loro is not None:
        ldoc = loro_fill(loro.LoroDoc(), 0, n)
        snapshot = loro.ExportMode.Snapshot()

        def loro_run() -> tuple[float, float, int]:
            ldoc.get_map("m").insert("k1", f"x{next(fresh)}")
            ldoc.commit()
            enc = timed_ms(lambda: ldoc.export(snapshot))
            blob = ldoc.export(snapshot)

            def dec() -> None:
                d = loro.LoroDoc()
                d.import_(blob)
                d.get_map("m").get("k0")

            return enc, timed_ms(dec), len(blob)

        runs["loro"] = loro_run
    if pycrdt is not None:
        ydoc = pycrdt_fill(pycrdt.Doc(), 0, n)

        def pycrdt_run() -> tuple[float, float, int]:
            with ydoc.transaction():
                ydoc.get("m", type=pycrdt.Map)["k1"] = f"x{next(fresh)}"
            enc = timed_ms(ydoc.get_update)
            blob = ydoc.get_update()
            return enc, timed_ms(lambda: pycrdt_copy(blob).get("m", type=pycrdt.Map)), len(blob)

        runs["pycrdt"] = pycrdt_run
    res = interleaved(repeats, runs)
    return {
        "map_encode_ms_100k": {lib: median([r[0] for r in rs]) for lib, rs in res.items()},
        "map_decode_ms_100k": {lib: median([r[1] for r in rs]) for lib, rs in res.items()},
        "map_encoded_bytes_100k": {lib: float(rs[0][2]) for lib, rs in res.items()},
    }


def rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:  # not Linux: peak RSS is the best stand-in
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def memory_child(lib: str, n: int) -> dict[str, float]:
    """Runs in its own process: RSS growth per entry of an n-entry map (keys and values owned by the map)."""
    gc.collect()
    before = rss_bytes()
    if lib == "rumor":
        keep: Any = rumor_map(0, n, "A")
    elif lib == "loro":
        keep = loro_fill(loro.LoroDoc(), 0, n)
    else:
        keep = pycrdt_fill(pycrdt.Doc(), 0, n)
    gc.collect()
    grown = rss_bytes() - before
    assert keep is not None
    return {"bytes_per_entry": grown / n, "rss_growth_bytes": float(grown)}


def memory(n: int) -> dict[str, dict[str, float]]:
    out: dict[str, float] = {}
    for lib in LIBS:
        if not AVAILABLE[lib]:
            continue
        proc = subprocess.run(
            [sys.executable, __file__, "--memory-child", lib, str(n)],
            capture_output=True, text=True, timeout=300, check=True,
        )
        out[lib] = json.loads(proc.stdout)["bytes_per_entry"]
    return {"map_bytes_per_entry_memory_1m": out}


def counter(max_ops: int, max_s: float, repeats: int) -> dict[str, dict[str, float]]:
    """One increment a commit, applied to the state. Yrs has no counter type: pycrdt is left out."""
    def rumor_run() -> float:
        c = PNCounter()

        def chunk(lo: int, hi: int) -> None:
            for _ in range(lo, hi):
                c.merge(c.increment("a", 1))

        return rate(chunk, max_ops, max_s)

    runs: dict[str, Callable[[], float]] = {"rumor": rumor_run}
    if loro is not None:
        def loro_run() -> float:
            doc = loro.LoroDoc()
            ctr = doc.get_counter("c")

            def chunk(lo: int, hi: int) -> None:
                for _ in range(lo, hi):
                    ctr.increment(1)
                    doc.commit()

            return rate(chunk, max_ops, max_s)

        runs["loro"] = loro_run
    res = interleaved(repeats, runs)
    return {"counter_incr_ops_per_s": {lib: median(rs) for lib, rs in res.items()}}


def overwrite(max_ops: int, max_s: float, repeats: int, fields: int = 1_000) -> dict[str, dict[str, float]]:
    """Overwrites of ``fields`` existing fields, round-robin, one commit each."""
    names = [f"k{i}" for i in range(fields)]
    values = [f"w{i}" for i in range(fields + 1)]  # one more than fields: each round writes new values

    def rumor_run() -> float:
        m = rumor_map(0, fields, "A")
        clock = HybridLogicalClock(HLCTimestamp(PHYS_MS, 1))
        now = clock.now

        def chunk(lo: int, hi: int) -> None:
            for j in range(lo, hi):
                m.merge(m.set("A", names[j % fields], values[j % (fields + 1)], now(PHYS_MS)))

        return rate(chunk, max_ops, max_s)

    runs: dict[str, Callable[[], float]] = {"rumor": rumor_run}
    if loro is not None:
        def loro_run() -> float:
            doc = loro_fill(loro.LoroDoc(), 0, fields)
            m = doc.get_map("m")

            def chunk(lo: int, hi: int) -> None:
                for j in range(lo, hi):
                    m.insert(names[j % fields], values[j % (fields + 1)])
                    doc.commit()

            return rate(chunk, max_ops, max_s)

        runs["loro"] = loro_run
    if pycrdt is not None:
        def pycrdt_run() -> float:
            doc = pycrdt_fill(pycrdt.Doc(), 0, fields)
            m = doc.get("m", type=pycrdt.Map)

            def chunk(lo: int, hi: int) -> None:
                for j in range(lo, hi):
                    with doc.transaction():
                        m[names[j % fields]] = values[j % (fields + 1)]

            return rate(chunk, max_ops, max_s)

        runs["pycrdt"] = pycrdt_run
    res = interleaved(repeats, runs)
    return {"map_overwrite_ops_per_s": {lib: median(rs) for lib, rs in res.items()}}


def sync(n: int, repeats: int) -> tuple[dict[str, dict[str, float]], dict[str, bool]]:
    """Two n-entry replicas sharing 90% (written on a third replica and replicated), each with 10% of its own:
    time and bytes (both directions, version vectors included) until both hold the same state.
    rumor: each sends its encoded context, and each answers with ``delta_since`` the other's (the whole state
    both ways where the type has no ``delta_since``)."""
    shared, own = n * 9 // 10, n - n * 9 // 10
    converged: dict[str, bool] = {}
    runs: dict[str, Callable[[], tuple[float, int]]] = {}
    base = rumor_map(0, shared, "C")

    def rumor_run() -> tuple[float, int]:
        a, b = rumor_map(shared, n, "A", base), rumor_map(n, n + own, "B", base)
        sizes: list[int] = []

        def exchange() -> None:
            if not hasattr(a, "delta_since"):
                ba, bb = encode(a), encode(b)
                a.merge(decode(bb))
                b.merge(decode(ba))
                sizes.extend((len(ba), len(bb)))
                return
            ca, cb = encode_context(a.context()), encode_context(b.context())
            da, db = encode(a.delta_since(decode_context(cb))), encode(b.delta_since(decode_context(ca)))
            a.merge(decode(db))
            b.merge(decode(da))
            sizes.extend((len(ca), len(cb), len(da), len(db)))

        ms = timed_ms(exchange)
        converged.setdefault("rumor", a == b and len(a) == n + own)
        return ms, sum(sizes)

    runs["rumor"] = rumor_run
    if loro is not None:
        lbase = loro_history(loro_fill(loro.LoroDoc(), 0, shared))

        def loro_run() -> tuple[float, int]:
            a, b = loro_fill(loro_replica(lbase), shared, n), loro_fill(loro_replica(lbase), n, n + own)
            sizes: list[int] = []

            def exchange() -> None:
                va, vb = a.oplog_vv, b.oplog_vv
                ua = a.export(loro.ExportMode.Updates(vb))
                ub = b.export(loro.ExportMode.Updates(va))
                b.import_(ua)
                a.import_(ub)
                sizes.extend((len(va.encode()), len(vb.encode()), len(ua), len(ub)))

            ms = timed_ms(exchange)
            if "loro" not in converged:
                va, vb = a.get_deep_value()["m"], b.get_deep_value()["m"]
                converged["loro"] = va == vb and len(va) == n + own
            return ms, sum(sizes)

        runs["loro"] = loro_run
    if pycrdt is not None:
        ybase = pycrdt_fill(pycrdt.Doc(), 0, shared).get_update()

        def pycrdt_run() -> tuple[float, int]:
            a = pycrdt_fill(pycrdt_copy(ybase), shared, n)
            b = pycrdt_fill(pycrdt_copy(ybase), n, n + own)
            sizes: list[int] = []

            def exchange() -> None:
                sa, sb = a.get_state(), b.get_state()
                ua, ub = a.get_update(sb), b.get_update(sa)
                b.apply_update(ua)
                a.apply_update(ub)
                sizes.extend((len(sa), len(sb), len(ua), len(ub)))

            ms = timed_ms(exchange)
            if "pycrdt" not in converged:
                va, vb = a.get("m", type=pycrdt.Map).to_py(), b.get("m", type=pycrdt.Map).to_py()
                converged["pycrdt"] = va == vb and len(va or {}) == n + own
            return ms, sum(sizes)

        runs["pycrdt"] = pycrdt_run
    res = interleaved(repeats, runs)
    return {
        "sync_90pct_ms": {lib: median([r[0] for r in rs]) for lib, rs in res.items()},
        "sync_90pct_bytes": {lib: median([float(r[1]) for r in rs]) for lib, rs in res.items()},
    }, converged


def catch_up(n: int, repeats: int) -> tuple[dict[str, dict[str, float]], str, dict[str, bool]]:
    """Replica b missed exactly one write to an n-entry map: the bytes shipped to b and the time from b's version
    to b holding the write (b's version read, the diff made and encoded, decoded and applied). The request that
    carries b's version (rumor's encoded context, loro's vv, pycrdt's state vector) is counted apart."""
    base = rumor_map(0, n, "A")
    method = "delta_since" if hasattr(base, "delta_since") else "full_state"
    if method == "delta_since":
        try:
            probe = base.copy()
            probe.merge(decode(encode(base.delta_since(base.context()))))
        except Exception as exc:  # another engineer is changing delta_since: fall back, say why
            method = f"full_state (delta_since failed: {type(exc).__name__})"
    converged: dict[str, bool] = {}
    stamp = HLCTimestamp(PHYS_MS + 1, 0)

    def rumor_run() -> tuple[float, int, int]:
        a, b = base.copy(), base.copy()
        a.merge(a.set("A", "k7", "changed", stamp))
        sizes: list[int] = []

        def delta() -> None:
            blob = encode(a.delta_since(b.context()))
            b.merge(decode(blob))
            sizes.append(len(blob))

        def full() -> None:
            blob = encode(a)
            b.merge(decode(blob))
            sizes.append(len(blob))

        ms = timed_ms(delta if method == "delta_since" else full)
        converged.setdefault("rumor", a == b)
        request = len(encode_context(b.context())) if method == "delta_since" else 0
        return ms, sizes[0], request

    runs: dict[str, Callable[[], tuple[float, int, int]]] = {"rumor": rumor_run}
    if loro is not None:
        lbase = loro_history(loro_fill(loro.LoroDoc(), 0, n))

        def loro_run() -> tuple[float, int, int]:
            a, b = loro_replica(lbase), loro_replica(lbase)
            a.get_map("m").insert("k7", "changed")
            a.commit()
            sizes: list[int] = []

            def step() -> None:
                vv = b.oplog_vv
                blob = a.export(loro.ExportMode.Updates(vv))
                b.import_(blob)
                sizes.extend((len(blob), len(vv.encode())))

            ms = timed_ms(step)
            got = b.get_map("m").get("k7")
            converged.setdefault("loro", got is not None and got.value == "changed")
            return ms, sizes[0], sizes[1]

        runs["loro"] = loro_run
    if pycrdt is not None:
        ybase = pycrdt_fill(pycrdt.Doc(), 0, n).get_update()

        def pycrdt_run() -> tuple[float, int, int]:
            a, b = pycrdt_copy(ybase), pycrdt_copy(ybase)
            with a.transaction():
                a.get("m", type=pycrdt.Map)["k7"] = "changed"
            sizes: list[int] = []

            def step() -> None:
                sv = b.get_state()
                blob = a.get_update(sv)
                b.apply_update(blob)
                sizes.extend((len(blob), len(sv)))

            ms = timed_ms(step)
            converged.setdefault("pycrdt", b.get("m", type=pycrdt.Map)["k7"] == "changed")
            return ms, sizes[0], sizes[1]

        runs["pycrdt"] = pycrdt_run
    res = interleaved(repeats, runs)
    return {
        "catch_up_one_change_ms": {lib: median([r[0] for r in rs]) for lib, rs in res.items()},
        "catch_up_one_change_bytes": {lib: median([float(r[1]) for r in rs]) for lib, rs in res.items()},
        "catch_up_one_change_request_bytes": {lib: median([float(r[2]) for r in rs]) for lib, rs in res.items()},
    }, method, converged


# ---------------------------------------------------------------------------------------------------------- output

HIGHER_IS_BETTER = frozenset({"counter_incr_ops_per_s", "map_overwrite_ops_per_s"})


def flatten(figures: dict[str, dict[str, float]]) -> dict[str, float | None]:
    """``KEY`` (ours), ``loro_KEY``, ``pycrdt_KEY`` and ``KEY_vs_<peer>`` (> 1: rumor better); null if missing."""
    out: dict[str, float | None] = {}
    for key, by_lib in figures.items():
        ours = by_lib.get("rumor")
        out[key] = ours
        for peer in PEERS:
            theirs = by_lib.get(peer)
            out[f"{peer}_{key}"] = theirs
            ratio = None
            if ours and theirs:
                ratio = ours / theirs if key in HIGHER_IS_BETTER else theirs / ours
            out[f"{key}_vs_{peer}"] = ratio
    return out


def targets(out: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Issue 13's targets; ``value`` is the ratio (or our figure), ``ours``/``peer`` the figures it came from."""
    ops = {">=": lambda v, b: v >= b, ">": lambda v, b: v > b, "<": lambda v, b: v < b}

    def target(key: str, op: str, bound: float, peer: str | None = None) -> dict[str, Any]:
        v = out.get(f"{key}_vs_{peer}" if peer else key)
        t = {"key": f"{key}_vs_{peer}" if peer else key, "want": f"{op} {bound:g}", "value": v,
             "met": None if v is None else ops[op](v, bound), "ours": out.get(key)}
        if peer:
            t["peer"] = out.get(f"{peer}_{key}")
        return t

    return {
        "decode_vs_pycrdt_decode": target("map_decode_ms_100k", ">=", 1, "pycrdt"),
        "encode_vs_loro_snapshot": target("map_encode_ms_100k", ">=", 1, "loro"),
        "encoded_size_vs_pycrdt": target("map_encoded_bytes_100k", ">=", 1, "pycrdt"),
        "memory_vs_pycrdt": target("map_bytes_per_entry_memory_1m", ">=", 1, "pycrdt"),
        "memory_within_1.5x_loro": target("map_bytes_per_entry_memory_1m", ">=", round(1 / 1.5, 4), "loro"),
        "counter_incr_vs_loro": target("counter_incr_ops_per_s", ">=", 0.6, "loro"),
        "map_overwrite_vs_loro": target("map_overwrite_ops_per_s", ">=", 0.6, "loro"),
        "sync_90pct_bytes_vs_loro": target("sync_90pct_bytes", ">", 1, "loro"),
        "sync_90pct_time_vs_loro": target("sync_90pct_ms", ">", 1, "loro"),
        "catch_up_bytes": target("catch_up_one_change_bytes", "<", 200),
        "catch_up_ms": target("catch_up_one_change_ms", "<", 1),
    }


def run(quick: bool) -> dict[str, Any]:
    """The issue-13 figures as flat keys, plus ``rust_peers`` (sizes, versions, what is missing, convergence)
    and ``rust_peers_targets``; crdt_bench.py merges both into its own output."""
    scale = 10 if quick else 1
    n, big, ops, max_s = 100_000 // scale, 1_000_000 // scale, 100_000 // scale, 3.0
    started = time.perf_counter()
    figures: dict[str, dict[str, float]] = {}
    figures.update(codec(n, REPEATS))
    figures.update(memory(big))
    figures.update(counter(ops, max_s, REPEATS))
    figures.update(overwrite(ops, max_s, REPEATS))
    sync_figures, sync_ok = sync(n, REPEATS)
    figures.update(sync_figures)
    catch_figures, method, catch_ok = catch_up(n, REPEATS)
    figures.update(catch_figures)

    missing = {lib: reason for lib, reason in (("loro", LORO_VERSION), ("pycrdt", PYCRDT_VERSION))
               if not AVAILABLE[lib]}
    if pycrdt is not None:
        missing["pycrdt.counter_incr_ops_per_s"] = "Yrs has no counter type"
    out: dict[str, Any] = flatten(figures)
    out["catch_up_method"] = method
    out["rust_peers"] = {
        "quick": quick, "versions": {lib: v for lib, v in (("loro", LORO_VERSION), ("pycrdt", PYCRDT_VERSION))
                                     if AVAILABLE[lib]},
        "missing": missing,
        "n": {"map": n, "memory": big, "max_ops": ops, "max_seconds_per_rate_loop": max_s, "repeats": REPEATS},
        "converged": {"sync_90pct": sync_ok, "catch_up_one_change": catch_ok},
        "seconds": time.perf_counter() - started,
    }
    out["rust_peers_targets"] = targets(out)
    return out


def fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:,.3f}" if abs(v) < 100 else f"{v:,.0f}"
    return str(v)


def print_table(out: dict[str, Any]) -> None:
    info = out["rust_peers"]
    print(f"rust peers  python {platform.python_version()}  {info['versions']}  sizes {info['n']}"
          f"{'  (QUICK: sizes / 10)' if info['quick'] else ''}")
    print(f"{'metric':<36} {'rumor':>12} {'loro':>12} {'pycrdt':>12} {'vs loro':>9} {'vs pycrdt':>9}")
    for key in ("map_encode_ms_100k", "map_decode_ms_100k", "map_encoded_bytes_100k",
                "map_bytes_per_entry_memory_1m", "counter_incr_ops_per_s", "map_overwrite_ops_per_s",
                "sync_90pct_ms", "sync_90pct_bytes", "catch_up_one_change_ms", "catch_up_one_change_bytes",
                "catch_up_one_change_request_bytes"):
        print(f"{key:<36} {fmt(out[key]):>12} {fmt(out['loro_' + key]):>12} {fmt(out['pycrdt_' + key]):>12}"
              f" {fmt(out[key + '_vs_loro']):>9} {fmt(out[key + '_vs_pycrdt']):>9}")
    print(f"catch_up_method: {out['catch_up_method']}   converged: {info['converged']}")
    for what, reason in info["missing"].items():
        print(f"missing {what}: {reason}")
    print("targets (value: ratio > 1 = rumor better, or our figure)")
    for name, t in out["rust_peers_targets"].items():
        state = {True: "MET", False: "MISSED", None: "n/a"}[t["met"]]
        print(f"  {name:<28} {t['key']:<46} {fmt(t['value']):>10} want {t['want']:<8} {state}")
    print(f"total {info['seconds']:.1f} s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    parser.add_argument("--quick", action="store_true", help="sizes / 10 for a smoke run")
    parser.add_argument("--memory-child", nargs=2, metavar=("LIB", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.memory_child:
        print(json.dumps(memory_child(args.memory_child[0], int(args.memory_child[1]))))
        return 0
    out = run(args.quick)
    if args.json:
        print(json.dumps(out, sort_keys=True))
    else:
        print_table(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
