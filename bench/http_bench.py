"""HTTP throughput of one rumor node vs a bare aiohttp key-value server, measured in the same run with wrk.

The baseline is the least a node could be: an aiohttp app with a dict, the same JSON library (stdlib json) and no
access log. rumor adds routing through the middleware (auth check, metrics, error mapping), CRDT mutation, delta
encoding and, for PUT, a durable group commit (SQLite WAL, synchronous=FULL) before answering.

Server and load generator are pinned to separate cores (taskset) when there are at least two; every run is bounded
by --duration. Requires `wrk` (Debian package `wrk`).

    .venv/bin/python bench/http_bench.py [--duration 5] [--connections 32] [--json]

Both servers run side by side and their wrk runs alternate for --rounds rounds; every figure is the median over
rounds (this VM's speed drifts by 30% from minute to minute; alternating makes a slow spell hit both sides).

Keys printed with --json: get_rps, put_rps, get_vs_bare, put_vs_bare (targets >= 0.8 and >= 0.6 durable),
get_p99_ms, put_p99_ms, bare_get_rps, bare_put_rps, and the server's CPU time per request (all threads, from
/proc): get/put_cpu_us_per_request and bare_get/put_cpu_us_per_request. CPU per request is the steadier figure
on a shared machine and says where a gap comes from.

Replication visibility (a 3-node cluster of `rumor serve` processes on loopback, `--preset local`): a register write
through one node (rotating) until both others return it, polled in a tight HTTP loop, --replication-samples times
(each bounded at 5 s). Keys: replicated_visible_ms_p50/_p99, and as the baseline from the same run
local_write_ms_p50/_p99 (the same write acknowledged by its own node: what visibility costs on top of it).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from rumor.server.client import RumorClient
from rumor.server.local_cluster import LocalCluster

ROOT = Path(__file__).resolve().parent.parent
KEYS = 1000

PUT_LUA = """
counter = 0
request = function()
  counter = counter + 1
  local path = "/v1/kv/bench-" .. (counter % %KEYS%)
  return wrk.format("PUT", path, {["Content-Type"] = "application/json"}, '{"n": ' .. counter .. ', "s": "value"}')
end
"""


def bare_server(port: int) -> None:
    """The baseline: a dict behind aiohttp, same response shape and JSON library as rumor."""
    from aiohttp import web

    store: dict[str, object] = {}

    def dumps(value: object) -> bytes:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()

    async def get(request: web.Request) -> web.Response:
        key = request.match_info["key"]
        if key not in store:
            return web.Response(status=404, body=dumps({"error": {"code": "not_found", "message": key}}),
                                content_type="application/json")
        return web.Response(body=dumps({"key": key, "type": "register", "value": store[key]}),
                            content_type="application/json")

    async def put(request: web.Request) -> web.Response:
        key = request.match_info["key"]
        store[key] = json.loads(await request.read())
        return web.Response(body=dumps({"key": key, "type": "register", "value": store[key]}),
                            content_type="application/json")

    app = web.Application()
    app.router.add_get("/v1/kv/{key:.+}", get)
    app.router.add_put("/v1/kv/{key:.+}", put)
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=lambda *_: None)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def pinned(cpu: int | None, argv: list[str]) -> list[str]:
    return ["taskset", "-c", str(cpu), *argv] if cpu is not None and shutil.which("taskset") else argv


def wait_until_up(url: str, timeout_s: float = 20) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url, timeout=1).close()
            return
        except urllib.error.HTTPError:  # answering at all (even 404) means it is up
            return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"server at {url} did not come up")


def put(url: str, value: object) -> None:
    request = urllib.request.Request(url, data=json.dumps(value).encode(), method="PUT",
                                     headers={"Content-Type": "application/json"})
    urllib.request.urlopen(request, timeout=5).close()


def _ms(text: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text).groups()  # type: ignore[union-attr]
    return float(number) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}[unit]


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process, all threads (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_wrk(url: str, args: argparse.Namespace, script: Path | None, server_pid: int) -> dict[str, float]:
    """One bounded wrk run: requests per second, p99 latency (ms) and the server's CPU per request (us)."""
    argv = ["wrk", "-t1", f"-c{args.connections}", f"-d{args.duration}s", "--latency", "--timeout", "5s"]
    if script is not None:
        argv += ["-s", str(script)]
    cpu_before = cpu_seconds(server_pid)
    out = subprocess.run(pinned(args.wrk_cpu, [*argv, url]), capture_output=True, text=True, check=True,
                         timeout=args.duration + 30).stdout
    cpu = cpu_seconds(server_pid) - cpu_before
    if "Non-2xx" in out:
        raise SystemExit(f"wrk saw error responses:\n{out}")
    try:
        rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
        p99 = _ms(re.search(r"99%\s+(\S+)", out).group(1))  # type: ignore[union-attr]
        requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    except (AttributeError, KeyError) as exc:  # say what wrk printed rather than a bare parse error
        raise SystemExit(f"unexpected wrk output ({exc!r}):\n{out}") from None
    return {"rps": rps, "p99_ms": p99, "cpu_us": cpu / max(requests, 1) * 1e6}


class Server:
    """A server process pinned to the server core, preloaded with the keys GET reads and PUT overwrites."""

    def __init__(self, name: str, argv: list[str], base: str, args: argparse.Namespace) -> None:
        self.name, self.base = name, base
        self.proc = subprocess.Popen(pinned(args.server_cpu, argv), cwd=ROOT, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        wait_until_up(base + "/v1/kv/warm" if name == "bare" else base + "/health")
        for i in range(KEYS):
            put(f"{base}/v1/kv/bench-{i}", {"n": i, "s": "value"})

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def throughput(args: argparse.Namespace) -> dict[str, object]:
    """Both servers run side by side; their wrk runs alternate (bare, rumor, bare, rumor, ...) for --rounds rounds
    and each figure is the median over rounds, so a slow spell of the machine hits both sides alike."""
    if shutil.which("wrk") is None:
        raise SystemExit("wrk not found: apt-get install wrk (or pass --skip-throughput)")
    two_cores = (os.cpu_count() or 1) >= 2
    args.server_cpu, args.wrk_cpu = (0, 1) if two_cores else (None, None)
    runs: dict[tuple[str, str], list[dict[str, float]]] = {}
    with tempfile.TemporaryDirectory(prefix="rumor-bench-") as tmp:
        script = Path(tmp) / "put.lua"
        script.write_text(PUT_LUA.replace("%KEYS%", str(KEYS)))
        bare_port, rumor_port = free_port(), free_port()
        rumor_argv = [sys.executable, "-m", "rumor.server.cli", "serve", "--http-addr", f"127.0.0.1:{rumor_port}",
                      "--gossip-addr", "127.0.0.1:0", "--data-dir", str(Path(tmp) / "data"), "--node-id", "bench"]
        if args.in_memory:
            rumor_argv.append("--in-memory")
        servers: list[Server] = []
        try:
            servers.append(Server("bare", [sys.executable, __file__, "--bare-server", str(bare_port)],
                                  f"http://127.0.0.1:{bare_port}", args))
            servers.append(Server("rumor", rumor_argv, f"http://127.0.0.1:{rumor_port}", args))
            for _ in range(args.rounds):
                for op, path, lua in (("get", "/v1/kv/bench-7", None), ("put", "/", script)):
                    for server in servers:
                        runs.setdefault((server.name, op), []).append(
                            run_wrk(server.base + path, args, lua, server.proc.pid))
        finally:
            for server in servers:
                server.stop()

    def median(name: str, op: str, figure: str) -> float:
        return statistics.median(run[figure] for run in runs[(name, op)])

    result: dict[str, object] = {}
    for op in ("get", "put"):
        ours, bare = median("rumor", op, "rps"), median("bare", op, "rps")
        result |= {f"{op}_rps": round(ours), f"{op}_vs_bare": round(ours / bare, 3),
                   f"{op}_p99_ms": round(median("rumor", op, "p99_ms"), 2), f"bare_{op}_rps": round(bare),
                   f"{op}_cpu_us_per_request": round(median("rumor", op, "cpu_us"), 1),
                   f"bare_{op}_cpu_us_per_request": round(median("bare", op, "cpu_us"), 1)}
    return result | {"durable": not args.in_memory, "connections": args.connections, "duration_s": args.duration,
                     "rounds": args.rounds, "pinned": two_cores}


async def replication_visibility(samples: int, timeout_s: float = 5.0) -> dict[str, object]:
    """Write through one node, poll the other two until both return the value; also the write's own latency."""
    visible: list[float] = []
    local: list[float] = []
    timeouts = 0
    with tempfile.TemporaryDirectory(prefix="rumor-bench-cluster-") as tmp:
        async with LocalCluster(3, Path(tmp), preset="local", fault_injection=False) as cluster:
            await cluster.wait_members(timeout_s=20)
            apis = [node.api() for node in cluster.nodes]
            for i in range(samples):
                writer, others = apis[i % 3], [a for j, a in enumerate(apis) if j != i % 3]
                key, value = f"visible/{i}", f"v{i}"
                started = time.perf_counter()
                await writer.put(key, value)
                local.append(time.perf_counter() - started)
                deadline = started + timeout_s

                async def until_visible(api: RumorClient, key: str = key, value: str = value,
                                        deadline: float = deadline) -> bool:
                    while time.perf_counter() < deadline:
                        item = await api.get(key)
                        if item is not None and item["value"] == value:
                            return True
                    return False

                seen = await asyncio.gather(*(until_visible(api) for api in others))
                if all(seen):
                    visible.append(time.perf_counter() - started)
                else:
                    timeouts += 1
    return {
        "replicated_visible_ms_p50": round(_percentile(visible, 50) * 1000, 2),
        "replicated_visible_ms_p99": round(_percentile(visible, 99) * 1000, 2),
        "local_write_ms_p50": round(_percentile(local, 50) * 1000, 2),
        "local_write_ms_p99": round(_percentile(local, 99) * 1000, 2),
        "replication_samples": len(visible),
        "replication_timeouts": timeouts,
    }


def _percentile(values: list[float], pct: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(pct / 100 * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=int, default=5, help="seconds per wrk run (4 runs a round)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating bare/rumor rounds; figures are medians")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--in-memory", action="store_true", help="run rumor without durability")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--replication-samples", type=int, default=200,
                        help="writes timed until visible on all 3 nodes of a local cluster (0: skip)")
    parser.add_argument("--skip-throughput", action="store_true", help="skip the wrk runs (no wrk needed)")
    parser.add_argument("--bare-server", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.bare_server is not None:
        bare_server(args.bare_server)
        return
    result: dict[str, object] = {}
    if not args.skip_throughput:
        result |= throughput(args)
    if args.replication_samples > 0:
        result |= asyncio.run(replication_visibility(args.replication_samples))
    if args.json:
        print(json.dumps(result))
        return
    if "get_rps" in result:
        print(f"{'':10} {'rumor rps':>10} {'bare rps':>10} {'ratio':>7} {'p99 ms':>8} {'CPU us/req':>11} "
              f"{'bare CPU':>9}")
        for op in ("get", "put"):
            print(f"{op.upper():10} {result[f'{op}_rps']:>10} {result[f'bare_{op}_rps']:>10} "
                  f"{result[f'{op}_vs_bare']:>7} {result[f'{op}_p99_ms']:>8} {result[f'{op}_cpu_us_per_request']:>11} "
                  f"{result[f'bare_{op}_cpu_us_per_request']:>9}")
        print(f"(rumor {'in memory' if args.in_memory else 'durable: SQLite WAL, synchronous=FULL, group commit'}; "
              f"{args.connections} connections, {args.duration}s per run, median of {args.rounds} alternating rounds, "
              f"pinned={result['pinned']})")
    if "replicated_visible_ms_p50" in result:
        print(f"\n{'3-node cluster (local preset)':34} {'p50 ms':>8} {'p99 ms':>8}")
        print(f"{'write acknowledged by its node':34} {result['local_write_ms_p50']:>8} {result['local_write_ms_p99']:>8}")
        print(f"{'write visible on all three':34} {result['replicated_visible_ms_p50']:>8} "
              f"{result['replicated_visible_ms_p99']:>8}")
        print(f"({result['replication_samples']} samples, {result['replication_timeouts']} timeouts)")

if __name__ == "__main__":
    main()
