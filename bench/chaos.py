"""Chaos run against a real rumor cluster: proves (or disproves) strong eventual consistency and zero loss of
acknowledged updates under real faults, Jepsen-style (issue 11).

    sudo .venv/bin/python bench/chaos.py                        # 60 s, 5 nodes, every fault kind, a table
    sudo .venv/bin/python bench/chaos.py --duration 600 --json  # one JSON object
    .venv/bin/python bench/chaos.py --check /tmp/rumor-chaos-.../history.jsonl   # re-check a kept history

Each node runs in its own network namespace on a private bridge (root needed; otherwise loopback plus each node's
fault-injection hook, reported as ``partition_mode: "hook"``). Output keys: ``ops``, ``acked``, ``lost_acked``,
``phantoms``, ``double_applied``, ``stale_reads_after_heal``, ``convergence_s``, ``availability``,
``faults_injected`` (by kind), ``partition_mode``, ``seed``, ``history``, ``plot``, ``checkers`` (name -> pass and
counts). The exit status is 1 when any checker fails, 2 when the run itself could not be made.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.chaos.history import load  # noqa: E402
from bench.chaos.nemesis import KINDS  # noqa: E402
from bench.chaos.report import plot_timeline, run_checkers, summarize, text_summary  # noqa: E402
from bench.chaos.runner import RunConfig, run  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of workload and faults")
    parser.add_argument("--nodes", type=int, default=5)
    parser.add_argument("--seed", type=int, default=None, help="nemesis and workload seed (default: random)")
    parser.add_argument("--faults", default=",".join(KINDS), help=f"comma list of: {', '.join(KINDS)}")
    parser.add_argument("--clients-per-node", type=int, default=2)
    parser.add_argument("--quiet", type=float, default=5.0, help="seconds between the heal and the final reads")
    parser.add_argument("--converge-timeout", type=float, default=60.0)
    parser.add_argument("--members-timeout", type=float, default=30.0)
    parser.add_argument("--min-availability", type=float, default=0.9)
    parser.add_argument("--network", choices=("auto", "netns", "hook"), default="auto")
    parser.add_argument("--out", type=Path, default=None, help="directory for history, node logs and data")
    parser.add_argument("--check", type=Path, default=None, help="only check this history file")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    unknown = set(args.faults.split(",")) - set(KINDS) - {""}
    if unknown:
        parser.error(f"unknown fault kinds {sorted(unknown)}; choose from {', '.join(KINDS)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.check is not None:
        history_path = args.check
        plot_path = history_path.with_suffix(".png")
    else:
        seed = args.seed if args.seed is not None else random.randrange(1, 1 << 31)
        out = args.out or Path(tempfile.gettempdir()) / f"rumor-chaos-{time.strftime('%Y%m%d-%H%M%S')}-{seed}"
        config = RunConfig(out_dir=out, seed=seed, nodes=args.nodes, duration_s=args.duration,
                           faults=[k for k in args.faults.split(",") if k], clients_per_node=args.clients_per_node,
                           quiet_s=args.quiet, converge_timeout_s=args.converge_timeout,
                           members_timeout_s=args.members_timeout, network=args.network)
        if not args.json:
            print(f"chaos: seed {seed}, {args.nodes} nodes, {args.duration:.0f}s, output in {out}", flush=True)
        try:
            result = asyncio.run(run(config))
        except (KeyboardInterrupt, asyncio.CancelledError):  # Ctrl-C, or SIGTERM (which cancels the run)
            print(f"chaos: interrupted; cleaned up; partial history in {out / 'history.jsonl'}", file=sys.stderr)
            return 130
        except Exception as exc:
            print(f"chaos: the run failed (seed {seed}, output in {out}): {type(exc).__name__}: {exc}",
                  file=sys.stderr)
            return 2
        history_path = result.history
        plot_path = out / "timeline.png"
    history = load(history_path)
    verdicts = run_checkers(history, args.min_availability)
    plot = plot_timeline(history, plot_path)
    summary = summarize(history, verdicts, history_path, plot)
    if plot is None:
        summary["plot_note"] = "matplotlib is not installed: pip install matplotlib for the timeline plot"
    print(json.dumps(summary) if args.json else text_summary(summary))
    return 0 if summary["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
