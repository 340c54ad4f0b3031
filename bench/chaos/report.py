"""Runs every checker over a history and reports: one JSON object (the figures `bench/chaos.py --json` prints), a
text summary, and a timeline plot (throughput, errors and fault windows; skipped with a note without matplotlib).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from bench.chaos.checkers import Verdict, check_counters, check_registers, check_sets
from bench.chaos.cluster_checkers import (
    check_availability,
    check_consistency_levels,
    check_convergence,
    check_membership,
    check_restarts,
    stale_after_heal,
)
from bench.chaos.history import History


def run_checkers(history: History, min_availability: float = 0.9) -> list[Verdict]:
    counter, op_id = check_counters(history)
    return [check_convergence(history), check_sets(history), counter, op_id, check_registers(history),
            check_consistency_levels(history), check_membership(history),
            check_availability(history, min_availability), check_restarts(history)]


def summarize(history: History, verdicts: list[Verdict], history_path: Path, plot: str | None) -> dict[str, Any]:
    by_name = {v.name: v for v in verdicts}
    ops = history.run_ops()
    statuses = Counter(op["status"] for op in ops)
    faults = Counter(e["nemesis"] for e in history.nemesis if e["nemesis"] not in ("heal", "start_failed"))
    return {
        "ops": len(ops),
        "acked": statuses["ok"],
        "failed": statuses["fail"],
        "unknown": statuses["unknown"],
        "lost_acked": by_name["set"].counts["lost"] + by_name["counter"].counts["lost_keys"]
        + by_name["register"].counts["lost"],
        "phantoms": by_name["set"].counts["phantom"] + by_name["counter"].counts["phantom_keys"]
        + by_name["register"].counts["phantom"],
        "resurrected": by_name["set"].counts["resurrected"],
        "double_applied": by_name["op_id"].counts["double_applied"],
        "stale_reads_after_heal": stale_after_heal(history) + by_name["register"].counts["stale"],
        "convergence_s": by_name["convergence"].counts["convergence_s"],
        "members_alive_s": by_name["membership"].counts["members_alive_s"],
        "availability": by_name["availability"].counts["availability"],
        "faults_injected": dict(sorted(faults.items())),
        "partition_mode": history.meta.get("partition_mode"),
        "seed": history.meta.get("seed"),
        "nodes": len(history.nodes),
        "duration_s": history.meta.get("duration_s"),
        "history": str(history_path),
        "plot": plot,
        "passed": all(v.ok for v in verdicts),
        "checkers": {v.name: v.to_json() for v in verdicts},
    }


def text_summary(summary: dict[str, Any]) -> str:
    lines = [
        f"chaos run: {summary['nodes']} nodes, {summary['duration_s']:.0f}s, seed {summary['seed']}, "
        f"partitions by {summary['partition_mode']}",
        f"  ops {summary['ops']}  acked {summary['acked']}  failed {summary['failed']}  unknown {summary['unknown']}",
        f"  lost acked {summary['lost_acked']}  phantoms {summary['phantoms']}  resurrected {summary['resurrected']}"
        f"  double-applied {summary['double_applied']}  stale after heal {summary['stale_reads_after_heal']}",
        f"  converged {summary['convergence_s']}s after the heal; members all alive after {summary['members_alive_s']}s;"
        f" availability {summary['availability']:.2%}",
        "  faults: " + ", ".join(f"{k} x{v}" for k, v in summary["faults_injected"].items()),
        "",
    ]
    for name, result in summary["checkers"].items():
        counts = ", ".join(f"{k} {v}" for k, v in result.items() if k not in ("pass", "problems"))
        lines.append(f"  {'PASS' if result['pass'] else 'FAIL'}  {name:<19} {counts}")
        lines += [f"          - {p}" for p in result["problems"]]
    lines += ["", f"history: {summary['history']}", f"plot: {summary['plot'] or 'none'}",
              "verdict: " + ("every checker passed" if summary["passed"] else "FAILED")]
    return "\n".join(lines)


def plot_timeline(history: History, path: Path, bucket_s: float = 1.0) -> str | None:
    """Throughput (acked ops/s), errors (failed and unknown per second) and a band per fault; None without
    matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    ops = history.run_ops()
    if not ops:
        return None
    end = max(op["complete_s"] for op in ops)
    buckets = int(end / bucket_s) + 1
    series = {status: [0] * buckets for status in ("ok", "fail", "unknown")}
    for op in ops:
        series[op["status"]][int(op["complete_s"] / bucket_s)] += 1
    xs = [i * bucket_s for i in range(buckets)]
    fig, (ax, lanes) = plt.subplots(2, 1, figsize=(12, 6), sharex=True, gridspec_kw={"height_ratios": [3, 2]})
    ax.plot(xs, [v / bucket_s for v in series["ok"]], label="acked ops/s", color="tab:green")
    ax.plot(xs, [v / bucket_s for v in series["fail"]], label="failed/s", color="tab:red")
    ax.plot(xs, [v / bucket_s for v in series["unknown"]], label="unknown/s", color="tab:orange")
    ax.set_ylabel("requests per second")
    ax.legend(loc="upper right")
    colors = {"kill": "tab:red", "pause": "tab:purple", "partition": "tab:blue", "crash-all": "black",
              "clock-skew": "tab:olive", "heal": "tab:gray"}
    nodes = history.nodes
    for event in history.nemesis:
        color = colors.get(event["nemesis"], "tab:gray")
        ax.axvspan(event["start_s"], event["end_s"], color=color, alpha=0.12)
        ax.text(event["start_s"], ax.get_ylim()[1] * 0.95, event["nemesis"], fontsize=7, rotation=90, va="top")
        for w in event.get("windows", []):
            lanes.barh(nodes.index(w["node"]), min(w.get("ready_s", w["start_s"]), end) - w["stop_s"], left=w["stop_s"],
                       color=color, alpha=0.7)
        if event["nemesis"] == "partition":
            cut = {n for pair in event.get("drops", []) for n in pair}
            for n in cut:
                lanes.barh(nodes.index(n), event["end_s"] - event["start_s"], left=event["start_s"], color=color,
                           alpha=0.3)
    lanes.set_yticks(range(len(nodes)), nodes)
    lanes.set_xlabel("seconds since start")
    lanes.set_title("per node: down/paused (solid), partitioned (light)", fontsize=9)
    fig.suptitle(f"rumor chaos run, seed {history.meta.get('seed')} ({history.meta.get('partition_mode')})")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return str(path)
