"""Issue 14's figures ("SQLite as the store of record, memory as a cache"), measured on the node as built: first the
baseline before the design, now the design itself (bench/README.md has every run).

    .venv/bin/python bench/scale_bench.py --quick          # smoke run, ~3 minutes, small sizes (flagged)
    .venv/bin/python bench/scale_bench.py --json           # one JSON object; full sizes, bounded to ~30 minutes
    .venv/bin/python bench/scale_bench.py --catch-up-only --keys 1000000   # phase 3's catch-up alone (~5 minutes)
    .venv/bin/python bench/scale_bench.py --json --ten-million   # also rss_mib_10m_keys (bulk-loaded; ~15 min more)

Last full run (`--json --ten-million`, 2026-12-03 22:59-23:12, on 294569e; the 2-core VM in one of its fast
stretches, nothing else of ours running): RSS 364 MiB at 1M keys (324 B a key), 327 MiB at 10M (bulk-loaded; 344
MiB at 1M the same way); restart 0.54 s; cold read p99 1.7 ms; writes 23,100/s at 10k keys and 8,296/s at 1M
(2.78x); catch-up 24,566 keys/s (1M keys in 41 s), serving GET p99 10.8 ms; loop lag p99/max (worst node) 70/100 ms
in the big-set sync, 39/42 (the joiner) in the catch-up, 95/114 in the cluster write load, 18.8/19.6 and 43.6/50 in
the single node's writes at 10k and 1M; no false suspicion; repair bytes 2.88x the difference. Earlier full runs,
and what each session found, are in bench/README.md.

Phases, each bounded in count and time (`Scale`):
1. one `rumor serve` process, fresh data dir: keys loaded through `POST /v1/batch` (1000 small mixed updates a
   request, 2 in flight): RSS at each size of the trend; a write load (`/v1/batch`, 100 updates a request, 4 in
   flight, random existing keys) at 10k keys and again at the largest size, each once the checkpoints of the load
   before it are written (`rumor_checkpoint_backlog_keys` 0); a graceful stop, then a restart timed
   from process start to `/health` 200 and a GET answering; then 1000 never-read keys read one by one.
2. two nodes, partitioned: n1's set gets the big set's elements, n2's 10 others; the heal; anti-entropy until
   both convergence reports say converged.
3. three nodes started from copies of phase 1's database; a fourth, empty, joins and catches up while n1 serves
   GETs; then a write load through n1 (checkpoints run on every node).
4. in process: the bytes a repair exchanges between two copies of the big set that differ by 10 added elements.

Every figure sits next to `how` (what was loaded and measured) or, when the design cannot produce it within the
bound, is null with a reason in `why_null`. Loop lag and false suspicions come from every node's `/metrics`
(`rumor_event_loop_lag_seconds`, `server/loop_lag.py`) and membership events; see bench/scale_probe.py.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from scale_cluster import big_set_sync, catch_up_and_write, catch_up_only, repair_bytes
from scale_probe import Phase, get_latencies_ms, key_name, load_keys, p99, parse_metrics, rss_mib, write_rate

from rumor.server.client import RumorClient
from rumor.server.config import ServerConfig
from rumor.server.local_cluster import NodeProcess
from rumor.server.storage import DB_FILE

MIB = 1024 * 1024
TARGET_KEYS = 1_000_000
TEN_MILLION = 10_000_000
#: how long a write phase waits at most for the node's checkpoint backlog to drain before it starts
SETTLE_BOUND_S = 180.0


@dataclass(frozen=True)
class Scale:
    small_keys: int = 10_000
    trend: tuple[int, ...] = (100_000, 300_000, 1_000_000)
    load_bound_s: float = 420.0       # all loading of phase 1
    write_s: float = 15.0             # each write load
    startup_bound_s: float = 300.0    # one process start (recovery included)
    set_elements: int = 1_000_000
    sync_bound_s: float = 240.0
    catch_up_bound_s: float = 300.0
    cold_reads: int = 1000


QUICK = Scale(small_keys=2_000, trend=(10_000, 20_000, 40_000), load_bound_s=90, write_s=3, startup_bound_s=60,
              set_elements=50_000, sync_bound_s=60, catch_up_bound_s=60, cold_reads=200)


async def _serving(node: NodeProcess, key: str, bound_s: float) -> None:
    """Until /health answers 200 and a GET of `key` answers 200 (polled every 10 ms, bounded)."""
    deadline = time.monotonic() + bound_s
    client = node.api()
    while time.monotonic() < deadline:
        try:
            if (await client.request("GET", "/health"))[0] == 200 and await client.get(key) is not None:
                return
        except Exception:  # not listening yet, or 503 while starting: keep polling until the bound
            pass
        await asyncio.sleep(0.01)
    raise TimeoutError(f"{node.name} not serving within {bound_s} s")


async def single_node(base: Path, scale: Scale) -> dict[str, Any]:
    node = NodeProcess("single", base / "single", base / "single.log", (), startup_timeout_s=scale.startup_bound_s)
    await node.start((), "lan", False)
    assert node.proc is not None
    client = RumorClient(node.http_url, use_msgpack=True, timeout_s=120)
    out: dict[str, Any] = {"rss_mib_empty": rss_mib(node.proc.pid)}
    deadline = time.monotonic() + scale.load_bound_s
    try:
        started = time.monotonic()
        loaded = await load_keys(client, 0, scale.small_keys, deadline)
        out["write_small"] = await _write_phase(node, client, loaded, scale.write_s)
        rss: dict[int, float] = {}
        for size in scale.trend:
            loaded = await load_keys(client, loaded, size, deadline)
            if loaded < size:
                break
            rss[size] = rss_mib(node.proc.pid)
        out.update({"rss_mib_by_keys": rss, "loaded_keys": loaded,
                    "load_keys_per_s": round(loaded / (time.monotonic() - started))})
        out["write_large"] = await _write_phase(node, client, loaded, scale.write_s)
        stopping = time.monotonic()
        await node.terminate(timeout_s=scale.startup_bound_s)
        out["graceful_stop_s"] = round(time.monotonic() - stopping, 1)
        await node.close_client()
        started = time.monotonic()
        await node.start((), "lan", False)
        listening = time.monotonic() - started
        await _serving(node, key_name(loaded - 1), scale.startup_bound_s)
        out.update({"restart_listening_s": round(listening, 2),
                    "restart_to_serving_s": round(time.monotonic() - started, 2),
                    "rss_mib_after_restart": rss_mib(node.proc.pid)})
        cold = random.Random(5).sample(range(loaded), min(scale.cold_reads, loaded))
        latencies = await get_latencies_ms(node.api(), [key_name(i) for i in cold], time.monotonic() + 120)
        out.update({"cold_reads": len(latencies), "first_read_cold_key_ms_p99": p99(latencies)})
    finally:
        await client.close()
        await node.terminate(timeout_s=scale.startup_bound_s)
        await node.close_client()
    return out


async def _backlog(node: NodeProcess) -> int:
    return int(parse_metrics(await node.api().metrics())["rumor_checkpoint_backlog_keys"][""])


async def _write_phase(node: NodeProcess, client: RumorClient, keys: int, seconds: float) -> dict[str, Any]:
    """The write load on a settled node: first (bounded, polled every 0.5 s) until the checkpoints of what the
    load before it wrote are all written, so both sizes start alike; the backlog it leaves is reported."""
    waited = time.monotonic()
    while await _backlog(node) and time.monotonic() - waited < SETTLE_BOUND_S:
        await asyncio.sleep(0.5)
    settled_s = round(time.monotonic() - waited, 1)
    phase = Phase("write_load")
    await phase.begin([node])
    rate = await write_rate(client, keys, seconds)
    return {"keys": keys, "settled_before_s": settled_s, **rate, "checkpoint_backlog_after": await _backlog(node),
            **await phase.end()}


def trend_per_key(rss: dict[int, float], empty: float) -> float | None:
    """Least-squares slope of RSS over keys, in bytes a key (None with fewer than two points)."""
    points = [(k, v * MIB) for k, v in rss.items()]
    if len(points) < 2:
        return None
    mean_k = sum(k for k, _ in points) / len(points)
    mean_v = sum(v for _, v in points) / len(points)
    return sum((k - mean_k) * (v - mean_v) for k, v in points) / sum((k - mean_k) ** 2 for k, _ in points)


def figures(single: dict[str, Any], big: dict[str, Any], catch: dict[str, Any], repair: dict[str, Any],
            scale: Scale, quick: bool) -> dict[str, Any]:
    out: dict[str, Any] = {}
    how: dict[str, str] = {}
    why_null: dict[str, str] = {}
    rss = single["rss_mib_by_keys"]
    slope = trend_per_key(rss, single["rss_mib_empty"])
    largest = max(rss, default=0)
    out["rss_mib_1m_keys"] = rss.get(TARGET_KEYS)
    out["bytes_per_key_memory"] = round((rss[largest] - single["rss_mib_empty"]) * MIB / largest) if largest else None
    how["rss_mib_1m_keys"] = ("VmRSS of one rumor serve process right after 1M small keys were created through POST "
                              "/v1/batch (1000 updates a request; a third counters +1, sets of one short string, "
                              "registers of a short string)")
    how["bytes_per_key_memory"] = f"(RSS at {largest} keys - RSS empty) / {largest}"
    not_loaded = (f"only {single['loaded_keys']} keys loaded within {scale.load_bound_s} s" if TARGET_KEYS in scale.trend
                  else f"this run's sizes stop at {max(scale.trend)} keys (--quick)")
    for key in ("rss_mib_1m_keys", "restart_to_serving_s_1m_keys", "write_ops_per_s_1m_keys"):
        why_null[key] = not_loaded
    out["rss_mib_10m_keys"] = None
    out["rss_mib_10m_keys_extrapolated"] = None if slope is None else round(
        single["rss_mib_empty"] + slope * TEN_MILLION / MIB)
    why_null["rss_mib_10m_keys"] = (
        f"not measured here: loading 10M keys over HTTP takes ~{TEN_MILLION / single['load_keys_per_s'] / 60:.0f} "
        f"min at the measured {single['load_keys_per_s']} keys/s. The RSS trend is taken right after each load, when "
        "the keys not checkpointed yet are still in memory, so rss_mib_10m_keys_extrapolated (its least-squares line) "
        "overstates a settled node; bench/disk_keyspace_probe.py measures RSS against key counts with the states on "
        "disk")
    how["rss_mib_10m_keys_extrapolated"] = f"RSS trend {rss} (MiB by keys) extrapolated to 10M keys"
    out["restart_to_serving_s_1m_keys"] = single["restart_to_serving_s"] if largest == TARGET_KEYS else None
    out["restart_to_serving_s_at_largest"] = {"keys": single["loaded_keys"], "s": single["restart_to_serving_s"]}
    how["restart_to_serving_s_1m_keys"] = ("graceful stop (every key checkpointed), then process start until "
                                           "/health answers 200 and a GET of a loaded key answers 200")
    out["first_read_cold_key_ms_p99"] = single["first_read_cold_key_ms_p99"]
    how["first_read_cold_key_ms_p99"] = (f"after that restart, {single['cold_reads']} random never-read keys, one "
                                         "GET after another (after a restart every key is on disk: a first read is a point read and a decode)")
    out["write_ops_per_s_10k_keys"] = single["write_small"]["ops_per_s"]
    out["write_ops_per_s_1m_keys"] = single["write_large"]["ops_per_s"] if largest == TARGET_KEYS else None
    out["write_ops_per_s_at_largest"] = {"keys": single["write_large"]["keys"],
                                         "ops_per_s": single["write_large"]["ops_per_s"]}
    how["write_ops_per_s_1m_keys"] = (f"updates of random existing keys through POST /v1/batch (100 a request, 4 in "
                                      f"flight) for {scale.write_s} s, durable node, the same generator at "
                                      f"{single['write_small']['keys']} and {single['write_large']['keys']} keys, "
                                      "each started once the node's checkpoint backlog (rumor_checkpoint_backlog_keys)"
                                      " from the loading was written")
    n_catch = catch["keys"]
    out["catch_up_keys_per_s"] = catch["keys_per_s"]
    out["catch_up_keys"] = n_catch
    out["catch_up_complete"] = catch["complete"]
    out["serving_node_get_p99_ms_during_catch_up"] = catch["serving_get_p99_ms"]
    how["catch_up_keys_per_s"] = (f"a fresh rumor serve joins 3 (lan preset, loopback) holding the same {n_catch} "
                                  "keys (copies of phase 1's database): keys it holds / seconds since its process "
                                  f"started, polled every 0.5 s, bounded at {scale.catch_up_bound_s} s")
    how["serving_node_get_p99_ms_during_catch_up"] = ("worst of n1, n2, n3 (the joiner catches up from one of them, "
                                                      "at random): one GET every 10 ms each during the catch-up")
    phases = {"big_set_sync": big, "catch_up": catch, "write_load_cluster": catch["write_load_cluster"],
              "write_load_single_10k": single["write_small"], "write_load_single_largest": single["write_large"]}
    lag = {name: {"p99_ms": p["loop_lag_p99_ms"], "max_ms": p["loop_lag_max_ms"],
                  "false_suspicions": p["false_suspicions"]} for name, p in phases.items()}
    out["loop_lag_p99_ms"] = max((v["p99_ms"] for v in lag.values() if v["p99_ms"] is not None), default=None)
    out["loop_lag_max_ms"] = max((v["max_ms"] for v in lag.values() if v["max_ms"] is not None), default=None)
    out["false_suspicions"] = sum(v["false_suspicions"] or 0 for v in lag.values())
    out["loop_lag_by_phase"] = lag
    how["loop_lag_p99_ms"] = ("worst node of the worst phase; per phase per node from the rumor_event_loop_lag_seconds "
                              "buckets (p99 interpolated within its bucket) and the max gauge (see loop_lag_by_phase)")
    how["false_suspicions"] = ("membership events (suspect or dead) about a member that was running throughout, seen by "
                               "any node during the phases (the big set's from the heal on)")
    out["big_set_sync_s"] = big["sync_s"]
    how["big_set_sync_s"] = (f"{big['elements']}-element set on n1 vs 10 other elements on n2 (partitioned while "
                             "loading), heal -> both convergence reports say converged")
    out["big_value_repair_bytes_over_diff"] = repair["bytes_over_diff"]
    how["big_value_repair_bytes_over_diff"] = (f"in process: two copies of a {repair['elements']}-element set, one adds "
                                               "10 elements (one delta); anti-entropy bytes both ways / that delta's "
                                               "encoded bytes; worse of either side initiating")
    targets = {"rss_mib_1m_keys": ("<= 600", lambda v: v <= 600), "restart_to_serving_s_1m_keys": ("<= 3", lambda v: v <= 3),
               "catch_up_keys_per_s": (">= 50000", lambda v: v >= 50_000 and n_catch >= TARGET_KEYS),
               "loop_lag_p99_ms": ("<= 20", lambda v: v <= 20), "loop_lag_max_ms": ("<= 200", lambda v: v <= 200),
               "false_suspicions": ("== 0", lambda v: v == 0),
               "big_value_repair_bytes_over_diff": ("<= 3", lambda v: v <= 3)}
    met = {k: {"want": want, "value": out[k], "met": None if out[k] is None else bool(ok(out[k]))}
           for k, (want, ok) in targets.items()}
    w10k, w1m = out["write_ops_per_s_10k_keys"], out["write_ops_per_s_1m_keys"]
    met["write_ops_per_s_10k_over_1m"] = {"want": "<= 1.5", "value": None if not w1m else round(w10k / w1m, 2),
                                          "met": None if not w1m else w10k / w1m <= 1.5}
    return {"quick": quick, **out, "targets": met, "how": how,
            "why_null": {k: v for k, v in why_null.items() if out.get(k) is None}, "scale": asdict(scale),
            "details": {"single_node": single, "big_set_sync": big, "catch_up": catch, "repair": repair}}


#: what `figures` reads of a phase that failed: every figure null, and the error
_FAILED_PHASE = {"elements": None, "sync_s": None, "keys": 0, "keys_per_s": None, "complete": False,
                 "serving_get_p99_ms": None, "loop_lag_p99_ms": None, "loop_lag_max_ms": None,
                 "false_suspicions": None, "bytes_over_diff": None}


async def _phase(name: str, work: Awaitable[dict[str, Any]]) -> dict[str, Any]:
    """A multi-node phase's figures, or (when it fails) nulls and the error: one phase must not cost the others.
    Each phase's figures also go to stderr as they come."""
    print(f"{name}: running", file=sys.stderr)
    try:
        result = await work
    except Exception as exc:  # a bench reports what broke and goes on to the next phase
        result = {**_FAILED_PHASE, "write_load_cluster": dict(_FAILED_PHASE), "error": f"{type(exc).__name__}: {exc}"}
    print(f"{name}: {json.dumps(result)}", file=sys.stderr)
    return result


async def run(scale: Scale, quick: bool) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="rumor-scale-bench-") as tmp:
        base = Path(tmp)
        single = await single_node(base, scale)
        print(f"single node: {json.dumps(single)}", file=sys.stderr)
        big = await _phase("big set sync", big_set_sync(base / "bigset", scale.set_elements, scale.sync_bound_s,
                                                        scale.startup_bound_s))
        catch = await _phase("catch-up and cluster writes", catch_up_and_write(
            base / "cluster", base / "single" / DB_FILE, single["loaded_keys"], scale.catch_up_bound_s,
            scale.write_s, scale.startup_bound_s))
    print("repair bytes (in process)", file=sys.stderr)
    repair = repair_bytes(scale.set_elements)
    return figures(single, big, catch, repair, scale, quick)


def table(out: dict[str, Any]) -> str:
    lines = []
    for key, value in out.items():
        if key in ("how", "why_null", "details", "scale", "targets", "loop_lag_by_phase"):
            continue
        note = out["why_null"].get(key) if value is None else out["how"].get(key, "")
        lines.append(f"{key:<42} {value!s:<14} {note or ''}")
    lines.append("loop lag by phase (worst node): " + json.dumps(out["loop_lag_by_phase"]))
    for key, target in out["targets"].items():
        verdict = "n/a    " if target["met"] is None else "MET    " if target["met"] else "NOT MET"
        lines.append(f"{verdict} {key} {target['want']} (value {target['value']})")
    return "\n".join(lines)


async def run_catch_up(keys: int, bound_s: float, startup_s: float) -> dict[str, Any]:
    """Phase 3's catch-up alone, on a database built in process (no phase 1 needed): the figures the issue asks
    for, every node's loop lag during it, and the GETs the serving node answered meanwhile."""
    with tempfile.TemporaryDirectory(prefix="rumor-catch-up-bench-") as tmp:
        catch = await _phase("catch-up", catch_up_only(Path(tmp), keys, bound_s, startup_s))
    lag = {name: {"p99_ms": row["p99_ms"], "max_ms": row["max_ms"]}
           for name, row in catch.get("nodes", {}).items()}
    return {"catch_up_keys": keys, "catch_up_keys_per_s": catch["keys_per_s"], "catch_up_complete": catch["complete"],
            "catch_up_s": catch.get("seconds"),
            "serving_node_get_p99_ms_during_catch_up": catch["serving_get_p99_ms"],
            "serving_node_get_max_ms_during_catch_up": catch.get("serving_get_max_ms"),
            "serving_node_get_p99_ms_by_node": catch.get("serving_get_p99_ms_by_node"),
            "serving_node_get_failures": catch.get("serving_get_failures"),
            "loop_lag_p99_ms": catch["loop_lag_p99_ms"], "loop_lag_max_ms": catch["loop_lag_max_ms"],
            "false_suspicions": catch["false_suspicions"], "loop_lag_by_node": lag,
            "how": {"catch_up_keys_per_s": f"3 rumor serve nodes (lan preset, loopback) hold the same {keys} small "
                                           "mixed keys (a database built in process, copied); a 4th joins empty: "
                                           "keys it holds / seconds since its process started (polled every 0.5 s)",
                    "serving_node_get_p99_ms_during_catch_up": "worst of n1, n2, n3 (the joiner walks with one of "
                                                               "them, at random): one GET every 10 ms each",
                    "loop_lag_by_node": "rumor_event_loop_lag_seconds of every node over the catch-up"},
            "details": catch}


def ten_million(out: dict[str, Any]) -> None:
    """rss_mib_10m_keys (bench/disk_keyspace_probe.py, default cache), with 1M keys the same way as its baseline."""
    budget_mib = ServerConfig().state_cache_bytes // MIB
    probe = Path(__file__).resolve().parent / "disk_keyspace_probe.py"
    run = subprocess.run([sys.executable, str(probe), "--sizes", f"{TARGET_KEYS},{TEN_MILLION}", "--budget-mib",
                          str(budget_mib), "--reads", "200000", "--json"],
                         check=True, timeout=7200, capture_output=True, text=True)
    sizes = json.loads(run.stdout)["sizes"]
    one, ten = sizes[str(TARGET_KEYS)]["bounded"], sizes[str(TEN_MILLION)]["bounded"]
    out["rss_mib_10m_keys"] = ten["rss_mib_total_after_reads"]
    out["rss_mib_1m_keys_same_path"] = one["rss_mib_total_after_reads"]
    out["how"]["rss_mib_10m_keys"] = (
        "bench/disk_keyspace_probe.py with the default cache: 10M small mixed keys loaded through the bulk path (raw "
        "rows straight to the states table with their digests, 5,000 a batch), then a fresh node process started "
        "on them, the hash tree attached and 200,000 random keys read (the cache fills and evicts); the whole RSS of "
        "that process. rss_mib_1m_keys_same_path: the same at 1M keys")
    out["why_null"].pop("rss_mib_10m_keys", None)
    out["details"]["ten_million"] = sizes
    growth = ten["rss_mib_total_after_reads"] - one["rss_mib_total_after_reads"]
    out["targets"]["rss_mib_10m_keys"] = {
        "want": f"bounded by the cache ({budget_mib} MiB), not the keys: 9M more keys add under a tenth of it",
        "value": out["rss_mib_10m_keys"], "growth_over_1m_mib": round(growth, 1), "met": growth < budget_mib / 10}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--quick", action="store_true", help="small sizes, a smoke run (figures flagged quick)")
    parser.add_argument("--catch-up-only", action="store_true",
                        help="run only the catch-up phase, on a database of --keys keys built in process")
    parser.add_argument("--keys", type=int, default=100_000, help="keys for --catch-up-only (default 100000)")
    parser.add_argument("--bound-s", type=float, default=600.0, help="time bound of --catch-up-only's catch-up")
    parser.add_argument("--ten-million", action="store_true",
                        help="also measure rss_mib_10m_keys: 10M keys loaded through the bulk path (about 15 min)")
    args = parser.parse_args()
    if args.catch_up_only:
        out = asyncio.run(run_catch_up(args.keys, args.bound_s, startup_s=300.0))
        print(json.dumps(out) if args.json else "\n".join(
            f"{k:<44} {v}" for k, v in out.items() if k not in ("how", "details")))
        return
    scale = QUICK if args.quick else Scale()
    out = asyncio.run(run(scale, args.quick))
    if args.ten_million:
        ten_million(out)
    print(json.dumps(out) if args.json else table(out))


if __name__ == "__main__":
    main()
