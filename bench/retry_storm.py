"""The cross-node retry storm of issue 15: `retry_double_applied` must be 0.

Runs `server.replication.retry_storm.run_retry_storm` in the replication simulator (virtual time, seeded): five
nodes, 20 counters, each request an increment of 1 with its own op_id, sent to one node and retried on one to three
others while random partitions split and heal the cluster; every node folds its op entries as a node does
(`server.op_folding`). After the heal every replica must count each request once. The control runs the same storm
with plain increments (no op_id): there every retry counts, which shows the storm can catch a double application.

    .venv/bin/python bench/retry_storm.py [--retries 10000] [--seed 1] [--json]
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from rumor.server.replication.retry_storm import run_retry_storm


def measure(retries: int = 10_000, seed: int = 1, control_retries: int = 1_000) -> dict[str, Any]:
    started = time.perf_counter()
    storm = run_retry_storm(retries, seed=seed, retention_s=60.0)
    elapsed = time.perf_counter() - started
    control = run_retry_storm(control_retries, seed=seed, op_ids=False)
    return {
        "retry_storm_requests": storm.requests,
        "retry_storm_retries": storm.retries,
        "retry_double_applied": storm.double_applied,
        "retry_lost": storm.lost,
        "retry_storm_converged": storm.converged,
        "retry_storm_virtual_s": round(storm.virtual_s, 1),
        "retry_storm_wall_s": round(elapsed, 1),
        "control_without_op_ids_retries": control.retries,
        "control_without_op_ids_double_applied": control.double_applied,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--retries", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    figures = measure(args.retries, args.seed)
    if args.json:
        print(json.dumps(figures))
        return
    for name, value in figures.items():
        print(f"{name:40} {value}")
    verdict = "MET" if figures["retry_double_applied"] == 0 and figures["retry_lost"] == 0 else "MISSED"
    print(f"target: retry_double_applied == 0 ({verdict})")


if __name__ == "__main__":
    main()
