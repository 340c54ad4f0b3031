"""Where a catch-up's CPU goes, in process: an empty replica catching up with one holding N small mixed keys, by the
bulk walk and (the baseline, same run) by the descent alone, with no network, so each figure is the protocol's and
the store's own cost per key, on one core.

    .venv/bin/python bench/catch_up_probe.py --keys 100000          # a table
    .venv/bin/python bench/catch_up_probe.py --keys 100000 --json   # one JSON object

Per mode: keys per second of the whole session (both sides on one thread, as a ceiling for a pair of processes),
round trips, bytes, and the microseconds per key spent in the serving side's answers, in the validating check of
states installed unmerged, in installing them (keyspace, digests), and in merging (decode and join). The cluster
figures (network, storage, the serving node's GETs, loop lag) are bench/scale_bench.py --catch-up-only's.
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from scale_probe import update_for

from rumor.server.hlc_source import HLCSource
from rumor.server.keyspace import Keyspace
from rumor.server.replication import KeyspaceStore, ReplicaCore, ReplicationConfig
from rumor.server.replication.replica import sync_pair
from rumor.server.updates import parse_update


def _replica(name: str, seed: int) -> ReplicaCore:
    config = ReplicationConfig(sync_interval_s=1e9, sync_max_rounds=100_000)
    keyspace = Keyspace(name, HLCSource())
    core = ReplicaCore(name, KeyspaceStore(keyspace), config, random.Random(seed), 0.0, epoch=1)
    keyspace.subscribe(core.on_local)
    return core


def _source(keys: int) -> ReplicaCore:
    core = _replica("source", 1)
    keyspace = core.store.keyspace  # type: ignore[attr-defined]
    for i in range(keys):
        body = update_for(i)
        keyspace.apply_local(body["key"], parse_update(body, envelope=frozenset({"key"})))
    core.digests.flush(10**9)
    return core


class _Timer:
    """Wraps a callable, adding its time to a total."""

    def __init__(self) -> None:
        self.seconds = 0.0

    def wrap(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any) -> Any:
            started = time.perf_counter()
            try:
                return fn(*args)
            finally:
                self.seconds += time.perf_counter() - started
        return timed


def catch_up(source: ReplicaCore, bulk: bool) -> dict[str, Any]:
    empty = _replica("empty", 2)
    answer, check, install, merge = _Timer(), _Timer(), _Timer(), _Timer()
    handle = source.handle_request
    source.handle_request = answer.wrap(handle)  # type: ignore[method-assign]
    empty.check_blob = check.wrap(empty.check_blob)  # type: ignore[method-assign]
    empty.install_blobs = install.wrap(empty.install_blobs)  # type: ignore[method-assign]
    empty.merge_blob = merge.wrap(empty.merge_blob)  # type: ignore[method-assign]
    rounds = sessions = wire = 0
    started = time.perf_counter()
    try:
        while sessions < 1000:
            session = sync_pair(empty, source, float(sessions), bulk=bulk)
            sessions += 1
            outcome = session.outcome
            assert outcome is not None
            rounds += outcome.rounds
            wire += outcome.bytes_sent + outcome.bytes_received
            if outcome.complete:
                break
    finally:
        source.handle_request = handle  # type: ignore[method-assign]
    seconds = time.perf_counter() - started
    keys = len(source.digests.tree)
    assert empty.digests.tree.root() == source.digests.tree.root(), "not converged"

    def per_key(timer: _Timer) -> float:
        return round(1e6 * timer.seconds / keys, 1)

    return {"keys_per_s": round(keys / seconds), "seconds": round(seconds, 2), "sessions": sessions,
            "round_trips": rounds, "wire_bytes": wire, "installed": empty.stats.states_installed,
            "us_per_key": {"serving_answers": per_key(answer), "check_before_install": per_key(check),
                           "install": per_key(install), "merge": per_key(merge),
                           "rest": round(1e6 * (seconds - answer.seconds - check.seconds - install.seconds
                                                - merge.seconds) / keys, 1)}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keys", type=int, default=100_000)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    source = _source(args.keys)
    gc.freeze()  # as a serving node does once recovered (`serve.tune_collector`)
    out = {"keys": args.keys, "bulk_walk": catch_up(source, bulk=True),
           "descent_only_baseline": catch_up(source, bulk=False)}
    out["speedup"] = round(out["bulk_walk"]["keys_per_s"] / out["descent_only_baseline"]["keys_per_s"], 1)
    if args.json:
        print(json.dumps(out))
        return
    for mode in ("bulk_walk", "descent_only_baseline"):
        row = out[mode]
        print(f"{mode:<24} {row['keys_per_s']:>8} keys/s  {row['round_trips']:>6} round trips  "
              f"{row['wire_bytes'] / 1e6:7.1f} MB  us/key {row['us_per_key']}")
    print(f"speedup {out['speedup']}x")


if __name__ == "__main__":
    main()
