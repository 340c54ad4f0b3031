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
import concurrent.futures
import json
import math
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
        # Only the probe interval and timeout are aligned with ours; everything else keeps swim-protocol's defaults
        # unless the bench was told otherwise (--swim-suspect-timeout).
        extra = {} if args.suspect_timeout is None else {"suspect_timeout": args.suspect_timeout}
        config = UdpConfig(local_name=args.swim_node, peers=args.peer, secret="bench",
                           ping_interval=args.probe_interval, ping_timeout=args.probe_timeout, **extra)
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
                argv = [sys.executable, "-m", "rumor.gossip", "--bind", name, "--preset", "lan",
                        "--probe-interval", str(settings["probe_interval"]),
                        "--probe-timeout", str(settings["probe_timeout"]),
                        "--stats-interval", "1", "--run-for", "300"]
                if i > 0:
                    argv += ["--join", self.names[0]]
            else:
                argv = [str(BENCH_PYTHON), __file__, "--swim-node", name, "--stats-interval", "1",
                        "--probe-interval", str(settings["probe_interval"]),
                        "--probe-timeout", str(settings["probe_timeout"])]
                if settings.get("swim_suspect_timeout"):
                    argv += ["--suspect-timeout", str(settings["swim_suspect_timeout"])]
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


def run_real(trials: int, idle_window_s: float, swim_suspect_timeout: float | None) -> dict[str, Any]:
    from rumor.gossip.config import Config, suspicion_timeout_s

    config = Config.lan()
    settings: dict[str, Any] = {
        "probe_interval": config.probe_interval_s,
        "probe_timeout": config.probe_timeout_s,
        "our_min_suspicion_s": suspicion_timeout_s(config, CLUSTER_SIZE),
        # swim-protocol's own default (5.0 s in 0.6.3) unless overridden; its suspicion timeout is fixed.
        "swim_suspect_timeout": swim_suspect_timeout,
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
    parser.add_argument("--swim-suspect-timeout", type=float, default=None,
                        help="give swim-protocol this fixed suspicion timeout (default: its own default)")
    parser.add_argument("--skip-sim", action="store_true")
    parser.add_argument("--skip-real", action="store_true")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--sim-trials", type=int, default=20,
                        help="crashes and updates per simulated cluster (20 keeps the suspicion median stable)")
    node = parser.add_argument_group("internal: one swim-protocol member")
    node.add_argument("--swim-node", metavar="HOST:PORT")
    node.add_argument("--peer", action="append", default=[])
    node.add_argument("--probe-interval", type=float, default=1.0)
    node.add_argument("--probe-timeout", type=float, default=0.5)
    node.add_argument("--suspect-timeout", type=float, default=None)
    node.add_argument("--stats-interval", type=float, default=1.0)
    args = parser.parse_args(argv)
    if args.swim_node:
        swim_node(args)
        return 0
    sys.path.insert(0, str(ROOT))
    started = time.monotonic()
    results: dict[str, Any] = {}
    # The simulator is CPU-bound and the real clusters mostly wait on timers: run them side by side in two processes.
    with concurrent.futures.ProcessPoolExecutor(max_workers=1) as pool:
        sim = None if args.skip_sim else pool.submit(run_sim, args.seed, args.sim_trials)
        if not args.skip_real:
            results.update(run_real(max(1, args.trials), args.idle_window, args.swim_suspect_timeout))
        if sim is not None:
            results.update(sim.result())
    results["bench_runtime_s"] = round(time.monotonic() - started, 1)
    results = {k: round(v, 3) if isinstance(v, float) else v for k, v in results.items()}
    if args.json:
        print(json.dumps(results, sort_keys=True))
    else:
        print_table(results)
    return 0


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (with few samples p99 is the maximum, which is the honest reading)."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def sim_figures(n: int, seed: int, trials: int, loss_window_s: float) -> dict[str, Any]:
    """SWIM figures for one cluster size, from bootstrapped simulated clusters (virtual time, seeded)."""
    from rumor.gossip.config import Config
    from rumor.gossip.member import MemberStatus
    from rumor.gossip.simulation import Simulation

    config = Config.lan()
    sim = Simulation(n, config, seed)
    sim.bootstrap()
    sim.run_for(5.0)
    idle_window = 30.0
    before = sim.network.stats.bytes_sent
    sim.run_for(idle_window)
    idle = (sim.network.stats.bytes_sent - before) / n / idle_window

    rounds: list[float] = []
    for k in range(trials):
        node = sim.nodes[(7 * k + 3) % n]
        start = sim.clock.now()
        node.membership.update_meta(b"v%d" % k, start)
        sim.wake(node)
        wanted = node.membership.local_member.incarnation
        reached = sim.run_until_true(
            lambda node=node, wanted=wanted: all(
                (m := o.membership.member(node.id)) is not None and m.incarnation >= wanted for o in sim.up_nodes()),
            60.0, check_every_s=config.gossip_interval_s / 4)
        if reached:
            rounds.append((sim.clock.now() - start) / config.gossip_interval_s)
        sim.run_for(2.0)

    first_suspect: list[float] = []
    dead_everywhere: list[float] = []
    victims = []
    for k in range(trials):
        victim = sim.nodes[n - 1 - k]
        victims.append(victim)
        sim.run_for(3.0)
        crashed_at = sim.clock.now()
        sim.crash(victim)
        if sim.run_until_true(lambda victim=victim: sim.all_see(victim, {MemberStatus.DEAD}), 120.0):
            dead_everywhere.append(sim.clock.now() - crashed_at)
        suspected = [e.time for e in sim.events
                     if e.subject == victim.id and e.time >= crashed_at and e.status is MemberStatus.SUSPECT]
        if suspected:
            first_suspect.append((min(suspected) - crashed_at) / config.probe_interval_s)
    false_deaths_crashes = len(sim.false_deaths(exempt=victims))

    lossy = Simulation(n, config, seed + 1)
    lossy.bootstrap()
    lossy.faults.drop_rate = 0.05
    lossy.run_for(loss_window_s)

    stalled = Simulation(n, config, seed + 2)
    stalled.bootstrap()
    stalled.run_for(5.0)
    stall_s = 0.6 * (config.suspicion_mult * max(1.0, math.log10(n)) * config.probe_interval_s)
    for k in range(5):  # five members freeze in turn, each for 60% of the minimum suspicion timeout
        stalled.pause(stalled.nodes[(11 * k + 1) % n], stall_s)
        stalled.run_for(stall_s + 3.0)
    stalled.run_for(10.0)

    return {
        "first_suspect_periods_median": statistics.median(first_suspect) if first_suspect else None,
        "dead_everywhere_s_p50": statistics.median(dead_everywhere) if dead_everywhere else None,
        "dead_everywhere_s_p99": percentile(dead_everywhere, 99),
        "false_deaths_loss5": len(lossy.false_deaths()),
        "false_deaths_stalled": len(stalled.false_deaths()),
        "false_deaths_during_crashes": false_deaths_crashes,
        "rounds_to_all_p99": percentile(rounds, 99),
        "rounds_unit": "gossip intervals: elapsed time / gossip_interval_s (node ticks are staggered, so one "
                       "interval can carry several hops)",
        "bytes_per_member_per_s": idle,
        "sim_trials": trials,
        "loss5_window_s": loss_window_s,
        "stall_s": round(stall_s, 2),
    }


def run_sim(seed: int, trials: int) -> dict[str, Any]:
    """N=50 (loss run: 10 simulated minutes) and N=200 (same figures, shorter loss window to bound runtime)."""
    from rumor.gossip.config import Config
    from rumor.gossip.simulation import run_scenario

    out = sim_figures(50, seed, trials, loss_window_s=600.0)
    out.update({f"{k}_n200": v for k, v in sim_figures(200, seed, trials, loss_window_s=120.0).items()})
    # Cross-check with the protocol core's own end-to-end scenario (formation by real joins included).
    scenario = run_scenario(50, Config.lan(), seed=seed, idle_s=10.0)
    out["scenario_n50_first_suspect_periods"] = scenario.crash_to_first_suspicion_periods
    out["scenario_n50_dead_everywhere_s"] = scenario.crash_to_dead_everywhere_s
    out["scenario_n50_formation_s"] = scenario.formation_s
    return out


if __name__ == "__main__":
    sys.exit(main())
