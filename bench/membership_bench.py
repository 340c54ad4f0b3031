"""Membership benchmark: SWIM figures from the simulator, then real loopback clusters beside the `swim-protocol` package.

Run:  .venv/bin/python bench/membership_bench.py [--json] [--trials N] [--skip-sim] [--skip-real]

Simulator part (virtual time, seeded): time to first suspicion of a failed member in probe periods (SWIM predicts
about 1 / (1 - 1/e) = 1.58), time until every member considers it dead, false deaths under 5% loss and with a stalled
member, rounds for a broadcast to reach everyone, and bytes per member per second, at N=50 and N=200.

Real part: 3-member clusters of separate processes on 127.0.0.1, one SIGKILLed; time until both survivors report it
dead, ours and swim-protocol's side by side with the same probe interval and probe timeout. Idle traffic is counted at
each side's transport (our `TransportStats`; for swim-protocol a wrapper on its datagram and stream writes).
swim-protocol runs from /work/main/.venv-bench (the `bench` extra), never from the test venv.

Internal mode: ``--swim-node`` runs one swim-protocol member and prints JSON-line events (used by the real part).
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BENCH_PYTHON = ROOT / ".venv-bench" / "bin" / "python"
CLUSTER_SIZE = 3
READY_TIMEOUT_S = 20.0
DETECT_TIMEOUT_S = 40.0


# ---------------------------------------------------------------------------------------------- swim-protocol node


def swim_node(args: argparse.Namespace) -> None:
    """One swim-protocol member; prints ``{"ev": ...}`` JSON lines: ready, status changes, periodic byte counters."""
    import asyncio
    import asyncio.selector_events as selector_events

    from swimprotocol.members import Members
    from swimprotocol.status import Status
    from swimprotocol.udp import UdpTransport
    from swimprotocol.udp.config import UdpConfig
    from swimprotocol.worker import Worker

    counters = {"bytes_sent": 0, "packets_sent": 0}
    datagram_sendto = selector_events._SelectorDatagramTransport.sendto
    stream_write = selector_events._SelectorSocketTransport.write

    def counting_sendto(self: Any, data: bytes, addr: Any = None) -> None:
        counters["bytes_sent"] += len(data)
        counters["packets_sent"] += 1
        datagram_sendto(self, data, addr)

    def counting_write(self: Any, data: bytes) -> None:
        counters["bytes_sent"] += len(data)
        stream_write(self, data)

    selector_events._SelectorDatagramTransport.sendto = counting_sendto  # type: ignore[method-assign]
    selector_events._SelectorSocketTransport.write = counting_write  # type: ignore[method-assign]

    def emit(**fields: Any) -> None:
        print(json.dumps({"t": time.monotonic(), **fields}), flush=True)

    names = {Status.ONLINE: "alive", Status.SUSPECT: "suspect", Status.OFFLINE: "dead"}

    async def on_change(member: Any) -> None:
        if not member.local:
            emit(ev="status", member=member.name, status=names.get(member.status, member.status.name.lower()))

    async def main() -> None:
        config = UdpConfig(
            local_name=args.swim_node, peers=args.peer, secret="bench", ping_interval=args.probe_interval,
            ping_timeout=args.probe_timeout, ping_req_count=args.indirect_checks,
            ping_req_timeout=args.probe_interval - args.probe_timeout, suspect_timeout=args.suspect_timeout,
            sync_interval=args.sync_interval,
        )
        members = Members(config)
        worker = Worker(config, members)
        transport = UdpTransport(config, worker)
        async with transport, worker, members.listener.on_notify(on_change):
            emit(ev="ready", id=args.swim_node)
            while True:
                await asyncio.sleep(args.stats_interval)
                emit(ev="stats", **counters)

    asyncio.run(main())


# ---------------------------------------------------------------------------------------------- process harness


def free_port() -> int:
    """A port free for both TCP and UDP on 127.0.0.1 right now (both sides bind both protocols)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
            tcp.bind(("127.0.0.1", 0))
            port = tcp.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                try:
                    udp.bind(("127.0.0.1", port))
                except OSError:
                    continue
            return port
    raise RuntimeError("no free port found on 127.0.0.1")


class NodeProcess:
    """A member in its own process; a reader thread turns its JSON-line stdout into events we can wait on."""

    def __init__(self, name: str, argv: list[str]) -> None:
        self.name = name
        self.events: list[dict[str, Any]] = []
        self._cond = threading.Condition()
        self.proc = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                event = json.loads(line)
            except ValueError:
                continue
            with self._cond:
                self.events.append(event)
                self._cond.notify_all()

    def wait_for(self, predicate: Callable[[dict[str, Any]], bool], deadline: float) -> dict[str, Any] | None:
        """First event (past or future) matching ``predicate`` before the monotonic ``deadline``, else None."""
        seen = 0
        with self._cond:
            while True:
                for event in self.events[seen:]:
                    if predicate(event):
                        return event
                seen = len(self.events)
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self.proc.poll() is not None:
                    return None
                self._cond.wait(remaining)

    def status_of(self, member: str) -> str | None:
        with self._cond:
            for event in reversed(self.events):
                if event.get("ev") == "status" and event.get("member") == member:
                    return str(event["status"])
        return None

    def last_stats(self) -> dict[str, Any] | None:
        with self._cond:
            return next((e for e in reversed(self.events) if e.get("ev") == "stats"), None)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)


class Cluster:
    """Three members of one implementation on loopback, named by their ``host:port``."""

    def __init__(self, kind: str, settings: dict[str, float]) -> None:
        self.kind = kind
        self.ports = [free_port() for _ in range(CLUSTER_SIZE)]
        self.names = [f"127.0.0.1:{p}" for p in self.ports]
        self.nodes: list[NodeProcess] = []
        for i, name in enumerate(self.names):
            others = [n for n in self.names if n != name]
            if kind == "ours":
                argv = [sys.executable, "-m", "gossip", "--bind", name, "--preset", "lan",
                        "--probe-interval", str(settings["probe_interval"]),
                        "--probe-timeout", str(settings["probe_timeout"]),
                        "--stats-interval", "1", "--run-for", "300"]
                if i > 0:
                    argv += ["--join", self.names[0]]
            else:
                argv = [str(BENCH_PYTHON), __file__, "--swim-node", name, "--stats-interval", "1",
                        "--probe-interval", str(settings["probe_interval"]),
                        "--probe-timeout", str(settings["probe_timeout"]),
                        "--indirect-checks", str(int(settings["indirect_checks"])),
                        "--suspect-timeout", str(settings["suspect_timeout"]),
                        "--sync-interval", str(settings["sync_interval"])]
                for other in others:
                    argv += ["--peer", other]
            self.nodes.append(NodeProcess(name, argv))

    def wait_converged(self) -> bool:
        deadline = time.monotonic() + READY_TIMEOUT_S
        for node in self.nodes:
            for other in self.names:
                if other == node.name:
                    continue
                found = node.wait_for(
                    lambda e, o=other: e.get("ev") == "status" and e.get("member") == o and e["status"] == "alive",
                    deadline,
                )
                if found is None:
                    return False
        return True

    def idle_bytes_per_member_per_s(self, window_s: float) -> float | None:
        time.sleep(1.5)
        start = [n.last_stats() for n in self.nodes]
        time.sleep(window_s)
        end = [n.last_stats() for n in self.nodes]
        if any(s is None for s in start + end):
            return None
        sent = sum(e["bytes_sent"] - s["bytes_sent"] for s, e in zip(start, end, strict=True))  # type: ignore[index]
        span = statistics.mean(e["t"] - s["t"] for s, e in zip(start, end, strict=True))  # type: ignore[index]
        return sent / CLUSTER_SIZE / span if span > 0 else None

    def kill_and_time_detection(self) -> float | None:
        victim = self.nodes[-1]
        killed_at = time.monotonic()
        victim.kill()
        deadline = killed_at + DETECT_TIMEOUT_S
        times = []
        for node in self.nodes[:-1]:
            event = node.wait_for(
                lambda e: e.get("ev") == "status" and e.get("member") == victim.name
                and e["status"] in ("dead", "left") and e["t"] >= killed_at,
                deadline,
            )
            if event is None:
                return None
            times.append(event["t"] - killed_at)
        return max(times)

    def stop(self) -> None:
        for node in self.nodes:
            node.kill()


def run_real(trials: int, idle_window_s: float) -> dict[str, Any]:
    from gossip.config import Config, suspicion_timeout_s

    config = Config.lan()
    settings = {
        "probe_interval": config.probe_interval_s,
        "probe_timeout": config.probe_timeout_s,
        "indirect_checks": config.indirect_checks,
        # swim-protocol has a fixed suspicion timeout: give it our minimum for this cluster size.
        "suspect_timeout": suspicion_timeout_s(config, CLUSTER_SIZE),
        "sync_interval": config.gossip_interval_s,
    }
    kinds = ["ours"] + (["swim_protocol"] if BENCH_PYTHON.exists() else [])
    detect: dict[str, list[float]] = {k: [] for k in kinds}
    failed: dict[str, int] = {k: 0 for k in kinds}
    idle: dict[str, float | None] = {k: None for k in kinds}
    for trial in range(trials):
        # Both implementations run side by side in each trial: timers dominate, not CPU.
        clusters = {k: Cluster(k, settings) for k in kinds}
        try:
            results: dict[str, queue.Queue[float | None]] = {k: queue.Queue() for k in kinds}

            def one(kind: str, cluster: Cluster, measure_idle: bool, sink: queue.Queue[float | None]) -> None:
                if not cluster.wait_converged():
                    sink.put(None)
                    return
                if measure_idle:
                    idle[kind] = cluster.idle_bytes_per_member_per_s(idle_window_s)
                else:
                    time.sleep(1.0)
                sink.put(cluster.kill_and_time_detection())

            threads = [threading.Thread(target=one, args=(k, c, trial == 0, results[k])) for k, c in clusters.items()]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            for kind in kinds:
                value = results[kind].get()
                if value is None:
                    failed[kind] += 1
                else:
                    detect[kind].append(value)
        finally:
            for cluster in clusters.values():
                cluster.stop()
    out: dict[str, Any] = {"real_settings": settings, "real_trials": trials}
    ours = statistics.median(detect["ours"]) if detect["ours"] else None
    out["real_dead_everywhere_s_median"] = ours
    out["real_dead_everywhere_s_all"] = [round(x, 3) for x in detect["ours"]]
    out["real_failed_trials"] = failed["ours"]
    out["idle_bytes_per_member_per_s"] = idle["ours"]
    if "swim_protocol" in kinds:
        theirs = statistics.median(detect["swim_protocol"]) if detect["swim_protocol"] else None
        out["swim_protocol_dead_everywhere_s_median"] = theirs
        out["swim_protocol_dead_everywhere_s_all"] = [round(x, 3) for x in detect["swim_protocol"]]
        out["swim_protocol_failed_trials"] = failed["swim_protocol"]
        out["swim_protocol_idle_bytes_per_member_per_s"] = idle["swim_protocol"]
        out["real_detect_vs_swim_protocol"] = ours / theirs if ours and theirs else None
    else:
        out["swim_protocol_skipped"] = f"{BENCH_PYTHON} not found (install the bench extra there)"
    return out


# ---------------------------------------------------------------------------------------------- report


def print_table(results: dict[str, Any]) -> None:
    width = max(len(k) for k in results)
    for key, value in results.items():
        if isinstance(value, float):
            value = f"{value:.4g}"
        print(f"{key:<{width}}  {value}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    parser.add_argument("--trials", type=int, default=5, help="real SIGKILL trials per implementation")
    parser.add_argument("--idle-window", type=float, default=30.0, help="seconds of idle traffic measured")
    parser.add_argument("--skip-sim", action="store_true")
    parser.add_argument("--skip-real", action="store_true")
    parser.add_argument("--seed", type=int, default=1)
    node = parser.add_argument_group("internal: one swim-protocol member")
    node.add_argument("--swim-node", metavar="HOST:PORT")
    node.add_argument("--peer", action="append", default=[])
    node.add_argument("--probe-interval", type=float, default=1.0)
    node.add_argument("--probe-timeout", type=float, default=0.5)
    node.add_argument("--indirect-checks", type=int, default=3)
    node.add_argument("--suspect-timeout", type=float, default=4.0)
    node.add_argument("--sync-interval", type=float, default=0.2)
    node.add_argument("--stats-interval", type=float, default=1.0)
    args = parser.parse_args(argv)
    if args.swim_node:
        swim_node(args)
        return 0
    sys.path.insert(0, str(ROOT))
    started = time.monotonic()
    results: dict[str, Any] = {}
    if not args.skip_sim:
        results.update(run_sim(args.seed))
    if not args.skip_real:
        results.update(run_real(max(1, args.trials), args.idle_window))
    results["bench_runtime_s"] = round(time.monotonic() - started, 1)
    if args.json:
        print(json.dumps(results, sort_keys=True))
    else:
        print_table(results)
    return 0


def run_sim(seed: int) -> dict[str, Any]:
    return {}


if __name__ == "__main__":
    sys.exit(main())
