"""The multi-node phases of bench/scale_bench.py: a big set's sync between two `rumor serve` processes, a fresh node
catching up with a 3-node cluster, and a write load on that cluster; plus the in-process repair-bytes figure.

Clusters run the `lan` preset (the production timers: probe every 1 s, 0.5 s probe timeout) on loopback, so a
stall long enough to miss probes shows as a false suspicion, as it would in production.
"""

from __future__ import annotations

import asyncio
import itertools
import shutil
import sqlite3
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))
from replication_bench import core, keyspace_of, sync_bytes
from scale_probe import Phase, key_name, p99, parse_metrics, update_for, write_rate

from rumor.crdt import ORSet, encode
from rumor.server.client import RumorClient
from rumor.server.disk_index import stored_digest_columns
from rumor.server.hlc_source import HLCSource
from rumor.server.local_cluster import LocalCluster, NodeProcess
from rumor.server.replication import ReplicationConfig
from rumor.server.storage import _SCHEMA, DB_FILE, StateRow, write_states
from rumor.server.updates import SetChange, make_delta, new_state, parse_update

PRESET = "lan"
#: after a heal, how long a probe sent during the partition may still fail (lan: probe interval plus timeout)
PROBE_SETTLE_S = 2.0
#: a quiet pause before a phase's first reading: every node's loop-lag monitor (50 ms ticks) has recorded what came
#: before it
LAG_SETTLE_S = 0.5
SET_CHUNK = 20_000  # elements a request while loading the big set: ~200 KB of JSON, under the 1 MiB body limit


async def _converged(node: NodeProcess) -> bool:
    """Whether its report says converged; a node too busy to answer within the client's timeout has not."""
    try:
        return (await node.api().convergence())["verdict"] == "converged"
    except (TimeoutError, OSError):
        return False


async def big_set_sync(base: Path, elements: int, bound_s: float, startup_s: float) -> dict[str, Any]:
    """n1 and n2, partitioned; n1's set `big` gets `elements` elements and n2's 10 of its own; then the heal, and
    the anti-entropy sync until both convergence reports say converged. The phase (lag, suspicions) starts at the
    heal: the partition's own suspicions are real ones."""
    base.mkdir(parents=True, exist_ok=True)
    async with LocalCluster(2, base, preset=PRESET, startup_timeout_s=startup_s) as cluster:
        await cluster.wait_members(timeout_s=60)
        await cluster.partition(["n1"], ["n2"])
        started = time.monotonic()
        slowest = 0.0
        async with RumorClient(cluster["n1"].http_url, timeout_s=bound_s) as loader:  # a stalled n1 is a figure
            for first in range(0, elements, SET_CHUNK):
                sent = time.monotonic()
                await loader.update("big", {"type": "set", "add": list(range(first, min(first + SET_CHUNK, elements)))})
                slowest = max(slowest, time.monotonic() - sent)
        await cluster["n2"].api().update("big", {"type": "set", "add": [f"n2-{i}" for i in range(10)]})
        load_s = time.monotonic() - started
        # the last add's stall (a write to a big set holds n1's loop ~150 ms) is recorded by n1's next lag tick,
        # which may run after the phase's first reading: let it land first, so the phase measures the sync only
        await asyncio.sleep(LAG_SETTLE_S)
        phase = Phase("big_set_sync")
        await phase.begin(cluster.nodes)
        await cluster.heal()
        healed = time.monotonic()
        # the partition's suspicions are real, and some land just after the heal (a probe sent before it timing
        # out, a dead timeout running out): false ones are those once both see each other alive again and a probe
        # sent before the heal has timed out (lan: 1 s interval + 0.5 s timeout)
        heal_wall = time.time()
        rejoined_s = await cluster.wait_members(timeout_s=bound_s)
        phase.count_suspicions_from(max(time.time(), heal_wall + PROBE_SETTLE_S))
        synced_s: float | None = None
        while time.monotonic() - healed < bound_s:
            if await _converged(cluster["n1"]) and await _converged(cluster["n2"]):
                synced_s = time.monotonic() - healed
                break
            await asyncio.sleep(0.5)
        figures = await phase.end()
    return {"elements": elements, "load_s": round(load_s, 1), "slowest_add_request_s": round(slowest, 2),
            "sync_s": None if synced_s is None else round(synced_s, 2), "rejoined_s": round(rejoined_s, 2),
            "bound_s": bound_s, **figures}


def build_source_db(db: Path, n_keys: int) -> None:
    """A data directory's database holding `n_keys` checkpointed small mixed keys (phase 1's generator, written by
    one replica), made in process and written straight to SQLite with their digest columns and leaf hashes, as a
    node's checkpoints write them: the catch-up phase alone (`--catch-up-only`) needs the data, not the minutes of
    loading it through HTTP (nor the serving nodes' digest backfill of every row, which a node's own rows never need)."""
    db.parent.mkdir(parents=True, exist_ok=True)
    hlc = HLCSource()
    with sqlite3.connect(db) as conn:
        conn.executescript(_SCHEMA)
        rows: dict[str, StateRow] = {}
        for i in range(n_keys):
            body = update_for(i)
            update = parse_update(body, envelope=frozenset({"key"}))
            state = new_state(body["type"])
            state.merge(make_delta(state, update, "seed", hlc))
            blob = encode(state)
            columns = stored_digest_columns(body["key"], body["type"], blob)
            rows[body["key"]] = StateRow(body["type"], blob, False, columns.digest, columns.size, columns.leaf)
            if len(rows) == 50_000 or i == n_keys - 1:
                write_states(conn, rows)
                rows.clear()


def seed_data_dir(source_db: Path, target_dir: Path) -> None:
    """A copy of a stopped node's database for another node: the same keys and states, none of its identity (node
    id, known members, feed epoch: the whole meta table goes)."""
    target_dir.mkdir(parents=True)
    shutil.copyfile(source_db, target_dir / DB_FILE)
    with sqlite3.connect(target_dir / DB_FILE) as conn:
        conn.execute("DELETE FROM meta")
        conn.execute("DELETE FROM op_results")


async def _keys_held(node: NodeProcess, last: int) -> int:
    """The node's `rumor_keys`; `last` when it is too busy to answer within the client's timeout."""
    try:
        return int(parse_metrics(await node.api().metrics())["rumor_keys"][""])
    except (TimeoutError, OSError):
        return last


async def catch_up_and_write(base: Path, source_db: Path, n_keys: int, bound_s: float, write_s: float,
                             startup_s: float) -> dict[str, Any]:
    """Three nodes start from copies of `source_db` (n_keys keys each, identical); a fourth, empty, joins through
    n1 and is polled (its `rumor_keys`, every 0.5 s) until it holds n_keys or `bound_s` passed, while n1 answers
    GETs of random keys (one every 10 ms, sequential). Then a write load of `write_s` through n1 (none when 0)."""
    for name in ("n1", "n2", "n3"):
        seed_data_dir(source_db, base / name)
    async with LocalCluster(3, base, preset=PRESET, fault_injection=False, startup_timeout_s=startup_s) as cluster:
        await cluster.wait_members(timeout_s=120)
        fresh = NodeProcess("n4", base / "n4", base / "n4.log", (), startup_timeout_s=startup_s)
        try:
            catch = await _catch_up(cluster, fresh, n_keys, bound_s)
            if write_s > 0:
                writes = Phase("write_load")
                await writes.begin([*cluster.nodes, fresh])
                rate = await write_rate(cluster["n1"].api(), n_keys, write_s, seed=7)
                catch["write_load_cluster"] = {**rate, "keys": n_keys, **await writes.end()}
        finally:
            await fresh.terminate(timeout_s=120)
            await fresh.close_client()
    return catch


async def _serving_latencies_ms(client: RumorClient, keys: list[str], deadline: float, stop: asyncio.Event,
                                pause_s: float, timeouts: list[str]) -> list[float]:
    """One GET after another (with `pause_s` between) until `stop` or the deadline. A GET that times out (the
    client's 5 s) or fails is a figure, not the end of the phase: its time counts as a latency and it is listed in
    `timeouts` (a stalled node shows as such instead of failing the bench)."""
    latencies: list[float] = []
    for key in itertools.cycle(keys):
        if time.monotonic() >= deadline or stop.is_set():
            break
        started = time.perf_counter()
        try:
            if await client.get(key) is None:
                raise RuntimeError(f"GET {key}: not found")
        except (TimeoutError, OSError, aiohttp.ClientError) as exc:
            timeouts.append(f"{key}: {type(exc).__name__}")
        latencies.append(1000 * (time.perf_counter() - started))
        await asyncio.sleep(pause_s)
    return latencies


async def _digests_built(cluster: LocalCluster, bound_s: float) -> float:
    """Seconds until every node's anti-entropy digests are all built (`dirty_digests` 0 in /v1/cluster), polled
    every 0.5 s, bounded. A node started on a copied database rehashes every key first, in bounded batches a tick;
    a joiner meanwhile would sync against half-built trees, which is that restart's cost, not the catch-up's."""
    started = time.monotonic()
    for node in cluster.nodes:
        while time.monotonic() - started < bound_s:
            try:
                info = (await node.api().request("GET", "/v1/cluster"))[1]
                if info["anti_entropy"]["dirty_digests"] == 0:
                    break
            except (TimeoutError, OSError, aiohttp.ClientError):
                pass
            await asyncio.sleep(0.5)
    return round(time.monotonic() - started, 1)


async def _catch_up(cluster: LocalCluster, fresh: NodeProcess, n_keys: int, bound_s: float) -> dict[str, Any]:
    digests_s = await _digests_built(cluster, bound_s)
    phase = Phase("catch_up")
    await phase.begin(cluster.nodes)
    started = time.monotonic()
    await fresh.start((cluster["n1"].gossip_addr,), PRESET, False)
    await phase.add(fresh)
    stop = asyncio.Event()
    keys = [key_name(i) for i in range(0, n_keys, max(1, n_keys // 100_000))]
    order = [keys[(i * 7919) % len(keys)] for i in range(len(keys))]  # spread over the keyspace, deterministic
    # every node that may serve the walk (the joiner picks its peer at random) answers GETs meanwhile
    failed_gets: list[str] = []
    reads = {node.name: asyncio.create_task(_serving_latencies_ms(node.api(), order, started + bound_s, stop, 0.01,
                                                                  failed_gets)) for node in cluster.nodes}
    held, progress = 0, []
    try:
        while time.monotonic() - started < bound_s:
            held = await _keys_held(fresh, held)
            progress.append((round(time.monotonic() - started, 1), held))
            if held >= n_keys:
                break
            await asyncio.sleep(0.5)
    finally:
        elapsed = time.monotonic() - started
        stop.set()
        by_node = {name: await task for name, task in reads.items()}
    latencies = [ms for node_latencies in by_node.values() for ms in node_latencies]
    figures = await phase.end()
    return {"keys": n_keys, "keys_caught_up": held, "complete": held >= n_keys, "seconds": round(elapsed, 1),
            "serving_digests_built_s": digests_s,
            "keys_per_s": round(held / elapsed), "bound_s": bound_s,
            "serving_get_p99_ms": max((p99(v) or 0.0 for v in by_node.values()), default=None),
            "serving_get_p99_ms_by_node": {name: p99(v) for name, v in by_node.items()}, "serving_gets": len(latencies),
            "serving_get_max_ms": round(max(latencies, default=0.0), 2), "serving_get_failures": len(failed_gets),
            "serving_get_failure_examples": failed_gets[:5],
            "progress": progress[:: max(1, len(progress) // 20)], **figures}


def repair_bytes(elements: int, diff: int = 10) -> dict[str, Any]:
    """Two in-process replicas (the anti-entropy core of replication_bench.py, messages counted both ways) of one
    `elements`-element set; replica a adds `diff` new elements (one delta), then a session repairs b, once with
    each side initiating. The figure is the worse session's bytes over the encoded delta of those adds."""
    config = ReplicationConfig(sync_interval_s=1e9)
    a, b = core("a", config, 1), core("b", config, 2)
    big = ORSet()
    big.merge(big.add_all("seed", range(elements)))
    for replica in (a, b):
        keyspace_of(replica).merge_remote("big", "set", big.copy())
        replica.on_changed("big")
        replica.digests.flush(10**9)
    out: dict[str, Any] = {"elements": elements, "diff_elements": diff}
    for now, (initiator, responder), case in ((1.0, (b, a), "responder_newer"), (2.0, (a, b), "initiator_newer")):
        _, _, blob = keyspace_of(a).apply_local("big", SetChange(add=tuple(f"{case}-{i}" for i in range(diff))))
        assert blob is not None
        a.digests.flush(10**9)
        started = time.perf_counter()
        total, largest, complete = sync_bytes(initiator, responder, now)
        equal = encode(keyspace_of(a).entry("big").state) == encode(keyspace_of(b).entry("big").state)  # type: ignore[union-attr]
        out[case] = {"repair_bytes": total, "delta_bytes": len(blob), "ratio": round(total / len(blob), 2),
                     "largest_message": largest, "complete": complete, "converged": equal,
                     "seconds": round(time.perf_counter() - started, 2)}
    worst = max(out["responder_newer"]["ratio"], out["initiator_newer"]["ratio"])
    out["bytes_over_diff"] = worst
    return out


async def catch_up_only(base: Path, n_keys: int, bound_s: float, startup_s: float) -> dict[str, Any]:
    """The catch-up phase alone, from a database built in process (`build_source_db`): three nodes hold `n_keys`
    keys, a fourth joins empty (see `catch_up_and_write`)."""
    source = base / "source" / DB_FILE
    built = time.monotonic()
    build_source_db(source, n_keys)
    build_s = time.monotonic() - built
    catch = await catch_up_and_write(base, source, n_keys, bound_s, 0.0, startup_s)
    return {**catch, "source_build_s": round(build_s, 1)}


__all__ = ["big_set_sync", "build_source_db", "catch_up_and_write", "catch_up_only", "repair_bytes",
           "seed_data_dir"]
