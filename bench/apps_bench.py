"""What applications get from a node: batched writes against the bare aiohttp server's single PUT, in one run, with wrk.

`batch_ops_per_s`: updates applied per second through `POST /v1/batch`, --batch-size counter increments and set adds
a request over 1,000 keys, on a durable node (SQLite WAL, synchronous=FULL: each request is one group commit). Its
baseline, `bare_put_rps`, is http_bench.py's: a dict behind aiohttp, one PUT a request, nothing durable. The two
servers run side by side, pinned to one core with wrk on the other, and their runs alternate for --rounds rounds;
figures are medians over rounds. `batch_ops_per_s_vs_bare_put` (target >= 3) is their ratio.

    .venv/bin/python bench/apps_bench.py [--duration 5] [--rounds 3] [--batch-size 100] [--json]

Issue 15's other figures (watch latency and fan-out, the cross-node retry storm) need the change feed and
cluster-wide op_ids, which are not built yet: they are listed under `missing`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from http_bench import KEYS, PUT_LUA, Server, bare_server, free_port, run_wrk

BATCH_LUA = """
counter = 0
request = function()
  local updates = {}
  for i = 1, %BATCH% do
    counter = counter + 1
    local key = counter % %KEYS%
    if counter % 2 == 0 then
      updates[i] = '{"key": "c-' .. key .. '", "type": "counter", "increment": 1}'
    else
      updates[i] = '{"key": "s-' .. key .. '", "type": "set", "add": [' .. (counter % 50) .. ']}'
    end
  end
  local body = '{"updates": [' .. table.concat(updates, ",") .. ']}'
  return wrk.format("POST", "/v1/batch?items=false", {["Content-Type"] = "application/json"}, body)
end
"""

def measure(args: argparse.Namespace) -> dict[str, object]:
    if shutil.which("wrk") is None:
        raise SystemExit("wrk not found: apt-get install wrk")
    two_cores = (os.cpu_count() or 1) >= 2
    args.server_cpu, args.wrk_cpu = (0, 1) if two_cores else (None, None)
    runs: dict[str, list[dict[str, float]]] = {"bare_put": [], "batch": []}
    with tempfile.TemporaryDirectory(prefix="rumor-apps-bench-") as tmp:
        batch_lua, put_lua = Path(tmp) / "batch.lua", Path(tmp) / "put.lua"
        batch_lua.write_text(BATCH_LUA.replace("%BATCH%", str(args.batch_size)).replace("%KEYS%", str(KEYS)))
        put_lua.write_text(PUT_LUA.replace("%KEYS%", str(KEYS)))
        bare_port, rumor_port = free_port(), free_port()
        rumor_argv = [sys.executable, "-m", "rumor.server.cli", "serve", "--http-addr", f"127.0.0.1:{rumor_port}",
                      "--gossip-addr", "127.0.0.1:0", "--data-dir", str(Path(tmp) / "data"), "--node-id", "bench"]
        servers: list[Server] = []
        try:
            bare = Server("bare", [sys.executable, str(Path(__file__).parent / "apps_bench.py"), "--bare-server",
                                   str(bare_port)], f"http://127.0.0.1:{bare_port}", args)
            servers.append(bare)
            rumor = Server("rumor", rumor_argv, f"http://127.0.0.1:{rumor_port}", args)
            servers.append(rumor)
            for _ in range(args.rounds):
                runs["bare_put"].append(run_wrk(bare.base + "/", args, put_lua, bare.proc.pid))
                runs["batch"].append(run_wrk(rumor.base + "/", args, batch_lua, rumor.proc.pid))
        finally:
            for server in servers:
                server.stop()

    def median(name: str, figure: str) -> float:
        return statistics.median(run[figure] for run in runs[name])

    bare_rps, batch_rps = median("bare_put", "rps"), median("batch", "rps")
    ops = batch_rps * args.batch_size
    return {
        "batch_ops_per_s": round(ops), "bare_put_rps": round(bare_rps),
        "batch_ops_per_s_vs_bare_put": round(ops / bare_rps, 3), "batch_requests_per_s": round(batch_rps, 1),
        "batch_p99_ms": round(median("batch", "p99_ms"), 2), "batch_size": args.batch_size, "durable": True,
        # the server's CPU (all threads) per update and per bare PUT: steadier than rates on a shared machine
        "batch_cpu_us_per_update": round(median("batch", "cpu_us") / args.batch_size, 1),
        "bare_put_cpu_us_per_request": round(median("bare_put", "cpu_us"), 1),
        "rounds": args.rounds, "duration_s": args.duration, "connections": args.connections, "pinned": two_cores,
        "targets": {"batch_ops_per_s_vs_bare_put": {"want": ">= 3", "value": round(ops / bare_rps, 3),
                                                    "met": ops / bare_rps >= 3}},
        "missing": {"watch_latency_ms_p50": "no change feed yet (issue 15)",
                    "watch_events_per_s": "no change feed yet (issue 15)",
                    "retry_double_applied": "op_ids are deduplicated per node only (issue 15)"},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=5, help="seconds per wrk run (2 runs a round)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    parser.add_argument("--bare-server", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.bare_server is not None:
        bare_server(args.bare_server)
        return
    out = measure(args)
    if args.json:
        print(json.dumps(out))
        return
    for key, value in out.items():
        print(f"{key:32} {value}")


if __name__ == "__main__":
    main()
