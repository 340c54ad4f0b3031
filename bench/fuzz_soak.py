"""The HTTP fuzzer of tests/server/test_http_fuzz.py, run long: N generated requests against in-process nodes.

    .venv/bin/python bench/fuzz_soak.py                                # 20,000 requests, seed 0, a table
    .venv/bin/python bench/fuzz_soak.py --requests 100000 --seed 7 --json
    .venv/bin/python bench/fuzz_soak.py --durable --requests 5000      # on disk, a restart checked after each session

Requests come in sessions: a fresh node (in memory, or durable with --durable), `--steps` generated requests each
judged by the same oracle as the tests (no 5xx, errors shaped `{"error": {"code", "message"}}`, a rejected request
changes no key, and the contract's answer where the generator knows it), then /health, the background tasks, the
ERROR log and, durable, a restart. Hypothesis generates the requests from `--seed` (generation only: nothing is
shrunk; the first violation of each kind is printed with its request, the minimal forms are pinned in the tests).
The run stops at `--requests` or soon after `--max-seconds` (checked every 10 sessions).

There is no baseline to compare with: the targets are absolute, zero 5xx and zero state changes on a rejected
request (MET / NOT MET), and the exit status is 1 when either is missed. Keys: requests, sessions, status_2xx,
status_4xx, status_5xx, changed_on_reject, violations (count by kind), violations_total, first_violations (kind ->
message), requests_per_s, wall_s, seed, stopped_by ("requests" or "time").
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "server"))  # the fuzzer and its oracle live with the tests

from fuzz_oracle import fuzz_session  # noqa: E402
from hypothesis import HealthCheck, Phase, given, seed, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

#: sessions per hypothesis run: the time bound is checked between runs (hypothesis has no clean way out of a run)
SESSIONS_PER_RUN = 10


def soak(requests: int, seed_value: int, steps: int, max_seconds: float, durable: bool) -> dict[str, Any]:
    started = time.monotonic()
    statuses: Counter[str] = Counter()
    kinds: Counter[str] = Counter()
    first: dict[str, str] = {}
    totals = {"requests": 0, "sessions": 0}
    scratch = tempfile.TemporaryDirectory(prefix="fuzz-soak-") if durable else None

    def one_run(run_seed: int, sessions: int) -> None:
        @seed(run_seed)
        @settings(max_examples=sessions, phases=[Phase.generate], database=None, deadline=None, derandomize=False,
                  suppress_health_check=list(HealthCheck))
        @given(st.data())
        def session(data: st.DataObject) -> None:
            size = min(steps, requests - totals["requests"])
            if size <= 0:
                return
            data_dir = Path(scratch.name) / f"s{totals['sessions']}" if scratch is not None else None
            oracle = asyncio.run(fuzz_session(data.draw, size, data_dir=data_dir, strict=False))
            totals["requests"] += size
            totals["sessions"] += 1
            statuses.update(oracle.statuses)
            for found in oracle.violations:
                kinds[found.kind] += 1
                first.setdefault(found.kind, str(found))

        session()

    try:
        run = 0
        while totals["requests"] < requests and time.monotonic() - started < max_seconds:
            left = -(-(requests - totals["requests"]) // steps)
            one_run(seed_value * 1_000_003 + run, min(SESSIONS_PER_RUN, left))
            run += 1
    finally:
        if scratch is not None:
            scratch.cleanup()
    wall = time.monotonic() - started
    return {
        "requests": totals["requests"], "sessions": totals["sessions"], "seed": seed_value,
        "stopped_by": "requests" if totals["requests"] >= requests else "time",
        **{f"status_{c}": statuses.get(c, 0) for c in ("2xx", "3xx", "4xx", "5xx")},
        "changed_on_reject": kinds.get("changed_on_reject", 0),
        "violations": dict(sorted(kinds.items())), "violations_total": sum(kinds.values()),
        "first_violations": dict(sorted(first.items())),
        "wall_s": round(wall, 2), "requests_per_s": round(totals["requests"] / wall, 1) if wall else 0.0,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20_000, help="requests to send in all (default 20000)")
    parser.add_argument("--seed", type=int, default=0, help="hypothesis seed: same seed, same requests")
    parser.add_argument("--steps", type=int, default=50, help="requests per session (fresh node), default 50")
    parser.add_argument("--max-seconds", type=float, default=600.0, help="stop after this long (default 600)")
    parser.add_argument("--durable", action="store_true", help="durable nodes, each restarted after its session")
    parser.add_argument("--json", action="store_true", help="one JSON object instead of the table")
    args = parser.parse_args()
    out = soak(args.requests, args.seed, args.steps, args.max_seconds, args.durable)
    targets = {"no 5xx": out["status_5xx"] == 0, "no state change on a rejected request": out["changed_on_reject"] == 0}
    if args.json:
        print(json.dumps(out | {"targets_met": all(targets.values())}, sort_keys=True, ensure_ascii=True))
    else:
        for key, value in out.items():
            if key not in ("violations", "first_violations"):
                print(f"{key:<20} {value}")
        for kind, n in out["violations"].items():
            print(f"violation {kind:<40} {n}")
        for kind, message in out["first_violations"].items():
            print(f"\nfirst {kind}:\n{message}")
        print()
        for name, ok in targets.items():
            print(f"{'MET    ' if ok else 'NOT MET'}  {name}")
    return 0 if all(targets.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
