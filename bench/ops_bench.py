"""Operator figures, section by section; today: how fast, and how truthfully, the convergence report follows the data.

    python bench/ops_bench.py            # human table
    python bench/ops_bench.py --json     # one JSON object: {section: {figure: value}}
    python bench/ops_bench.py --rounds 3 --sections convergence

**convergence** (a cluster of three `rumor serve` processes on loopback, `--preset local`): each round partitions
n3 from n1 and n2, writes 40 counter increments on each side (20 keys written on both), heals, and from the heal
polls every node about every 20 ms: first `GET /v1/cluster/convergence` on all three, then every key on every node
(`POST /v1/batch/get`). Figures:

- ``convergence_detect_s``: heal -> all three reports say ``converged`` (per round, and the median and max);
- ``data_converged_s``: heal -> the first poll that read equal values for every key on every node;
- ``status_lag_s``: detect minus data, per round (target: at most 1 s); the poll period (~20 ms plus the reads)
  bounds how finely either is seen;
- ``convergence_reported_early``: polls in which every report said ``converged`` but the reads that followed it
  still found a difference (must be 0). The reads come *after* the reports, and nothing is written after the heal, so
  a difference seen then existed when the reports were made.

Other sections plug in by name (`SECTIONS`): a module in `bench/` with ``measure(quick: bool) -> dict`` (sync or
async), e.g. ``bench/backup_bench.py`` (export/import) and ``bench/rolling_bench.py`` (rolling restart); a section
whose module does not exist yet is listed under ``skipped``. Bounded: rounds, keys and every wait are capped.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import importlib.util
import inspect
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rumor.server.local_cluster import LocalCluster

NAMES = ("n1", "n2", "n3")
KEYS_PER_SIDE = 40
SHARED_KEYS = 20
POLL_S = 0.02
ROUND_DEADLINE_S = 30.0
STATUS_LAG_TARGET_S = 1.0


async def _verdicts(cluster: LocalCluster) -> list[str]:
    reports = await asyncio.gather(*(cluster[n].api().convergence() for n in NAMES))
    return [r["verdict"] for r in reports]


async def _data_equal(cluster: LocalCluster, keys: list[str]) -> bool:
    answers = await asyncio.gather(*(cluster[n].api().get_many(keys) for n in NAMES))
    views = [[(r["key"], r["status"], r.get("item", {}).get("value")) for r in a["results"]] for a in answers]
    return all(view == views[0] for view in views)


async def _round(cluster: LocalCluster, index: int) -> dict[str, Any]:
    shared = [f"ops/{index}/shared/{i}" for i in range(SHARED_KEYS)]
    keys = shared + [f"ops/{index}/{side}/{i}" for side in ("a", "b") for i in range(KEYS_PER_SIDE - SHARED_KEYS)]
    await cluster.partition(["n1", "n2"], ["n3"])
    try:
        for name, side, amount in (("n1", "a", 1), ("n3", "b", 10)):
            own = [f"ops/{index}/{side}/{i}" for i in range(KEYS_PER_SIDE - SHARED_KEYS)]
            await cluster[name].api().batch([{"key": k, "type": "counter", "increment": amount} for k in shared + own])
        await cluster.wait_for("n1 not converged", lambda: _not_converged(cluster, "n1"), 10.0)
    finally:
        await cluster.heal()
    healed = time.monotonic()
    detect = data = None
    early = polls = 0
    while (detect is None or data is None) and time.monotonic() - healed < ROUND_DEADLINE_S:
        polls += 1
        verdicts = await _verdicts(cluster)
        said_converged = all(v == "converged" for v in verdicts)
        equal = await _data_equal(cluster, keys)
        now = time.monotonic() - healed
        if said_converged and not equal:
            early += 1
        if said_converged and detect is None:
            detect = now
        if equal and data is None:
            data = now
        await asyncio.sleep(POLL_S)
    return {"detect_s": detect, "data_s": data, "early": early, "polls": polls}


async def _not_converged(cluster: LocalCluster, name: str) -> bool:
    return (await cluster[name].api().convergence())["verdict"] != "converged"


async def measure_convergence(rounds: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="rumor-ops-bench-") as base:
        async with LocalCluster(3, Path(base), preset="local") as cluster:
            await cluster.wait_members(timeout_s=30)
            results = []
            for index in range(rounds):
                results.append(await _round(cluster, index))
                await cluster.wait_members(timeout_s=30)  # n3 alive again everywhere before the next partition
    detects = [r["detect_s"] for r in results if r["detect_s"] is not None]
    datas = [r["data_s"] for r in results if r["data_s"] is not None]
    lags = [r["detect_s"] - r["data_s"] for r in results if r["detect_s"] is not None and r["data_s"] is not None]
    return {
        "rounds": rounds,
        "convergence_detect_s": [round(d, 3) for d in detects],
        "convergence_detect_s_median": round(statistics.median(detects), 3) if detects else None,
        "convergence_detect_s_max": round(max(detects), 3) if detects else None,
        "data_converged_s": [round(d, 3) for d in datas],
        "data_converged_s_median": round(statistics.median(datas), 3) if datas else None,
        "status_lag_s": [round(lag, 3) for lag in lags],
        "status_lag_s_max": round(max(lags), 3) if lags else None,
        "status_lag_target_s": STATUS_LAG_TARGET_S,
        "convergence_reported_early": sum(r["early"] for r in results),
        "rounds_not_detected": sum(1 for r in results if r["detect_s"] is None),
        "polls": sum(r["polls"] for r in results),
    }


Measure = Callable[[argparse.Namespace], Awaitable[dict[str, Any]]]


async def _convergence_section(args: argparse.Namespace) -> dict[str, Any]:
    return await measure_convergence(args.rounds)


SECTIONS: dict[str, Measure | str] = {
    "convergence": _convergence_section,
    "backup": "backup_bench",    # export/import (another branch): bench/backup_bench.py measure(quick) -> dict
    "rolling": "rolling_bench",  # rolling restart (another branch): bench/rolling_bench.py measure(quick) -> dict
}


async def run_section(name: str, args: argparse.Namespace) -> dict[str, Any] | None:
    """The section's figures, or None when its module is not there (yet)."""
    section = SECTIONS[name]
    if not isinstance(section, str):
        return await section(args)
    if importlib.util.find_spec(section) is None:
        return None
    result = importlib.import_module(section).measure(args.quick)
    return await result if inspect.isawaitable(result) else result


def table(figures: dict[str, Any]) -> str:
    lines = []
    for section, values in figures.items():
        if section == "skipped":
            lines.append(f"skipped (module not present): {', '.join(values) or '-'}")
            continue
        lines.append(f"[{section}]")
        lines += [f"  {name:<32} {value}" for name, value in values.items()]
    return "\n".join(lines)


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    figures: dict[str, Any] = {}
    skipped = []
    for name in args.sections:
        result = await run_section(name, args)
        if result is None:
            skipped.append(name)
        else:
            figures[name] = result
    figures["skipped"] = skipped
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--rounds", type=int, default=5, help="partition/heal rounds (1..20)")
    parser.add_argument("--quick", action="store_true", help="smaller runs, for a smoke test (2 rounds)")
    parser.add_argument("--sections", nargs="+", default=list(SECTIONS), choices=list(SECTIONS))
    args = parser.parse_args()
    args.rounds = 2 if args.quick else max(1, min(args.rounds, 20))
    sys.path.insert(0, str(Path(__file__).resolve().parent))  # sections are modules of bench/
    figures = asyncio.run(main_async(args))
    print(json.dumps(figures, indent=2) if args.json else table(figures))


if __name__ == "__main__":
    main()
