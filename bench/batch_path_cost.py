"""What one update of `POST /v1/batch` costs inside the node, without HTTP: a steady figure for tuning the batch path.

The loop is the batch handler's work minus aiohttp: decode the JSON body, `parse_updates`, `Node.update_batch` (apply,
encode, log, await the group commit), a result per update and the encoded answer; apps_bench.py's workload (100
counter increments and set adds a request over 1,000 keys of each type), 16 requests at a time like its wrk, on a
durable node. Replication's local half runs too (a `ReplicaCore` subscribed to the keyspace: each delta joins the
interval's batch, digests are marked), and its timers are driven by the loop at apps_bench's rates, so that
callgrind's slowdown does not change how much work each update carries: a push round (sealing the batch, flushing
settled digests) every 28 requests (0.2 s at about 14,000 updates a second) and a checkpoint of 2 keys a request
(the checkpointer's 64 keys every 0.25 s).

    .venv/bin/python bench/batch_path_cost.py                  # CPU us an update (all threads, best of 5 passes)
    .venv/bin/python bench/batch_path_cost.py --instructions   # instructions an update (valgrind), ~5 minutes

Instruction counts (callgrind, two run lengths subtracted) repeat to about 0.1% however busy the machine is; timings
on this shared VM move by 20%. Keys: `cpu_us_per_update` or `instructions_per_update`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from rumor.server.batch import answer, error_result, outcome_result, parse_updates  # noqa: E402
from rumor.server.config import ServerConfig  # noqa: E402
from rumor.server.consistency import Consistency  # noqa: E402
from rumor.server.errors import ServerError  # noqa: E402
from rumor.server.negotiation import JSON, decode_body, encode_body  # noqa: E402
from rumor.server.node import Node  # noqa: E402
from rumor.server.replication.config import ReplicationConfig  # noqa: E402
from rumor.server.replication.replica import KeyspaceStore, ReplicaCore  # noqa: E402

BATCH = 100
KEYS = 1000
CONCURRENCY = 16
REQUESTS_PER_PUSH = 28
CHECKPOINT_KEYS_PER_REQUEST = 2
BODIES = 64


def body(first: int) -> bytes:
    """apps_bench.py's BATCH_LUA body for updates first+1 .. first+BATCH."""
    updates = []
    for counter in range(first + 1, first + BATCH + 1):
        key = counter % KEYS
        updates.append(f'{{"key": "c-{key}", "type": "counter", "increment": 1}}' if counter % 2 == 0 else
                       f'{{"key": "s-{key}", "type": "set", "add": [{counter % 50}]}}')
    return ('{"updates": [' + ",".join(updates) + "]}").encode()


async def run(requests: int, passes: int) -> float:
    """CPU microseconds an update (best pass; all threads), after a warm-up over every body."""
    with tempfile.TemporaryDirectory(prefix="rumor-batch-path-") as tmp:
        node = Node(ServerConfig(node_id="bench", data_dir=Path(tmp), checkpoint_interval_s=3600))
        await node.start()
        config = ReplicationConfig()
        core = ReplicaCore("bench", KeyspaceStore(node.keyspace), config, random.Random(1), 0.0, epoch=1)
        node.keyspace.subscribe(core.on_local)
        bodies = [body(i * BATCH) for i in range(BODIES)]
        consistency = Consistency()
        clock = {"now": 0.0, "requests": 0}

        async def post(raw: bytes) -> bytes:
            entries = parse_updates(decode_body(raw, JSON))
            writes = [e for e in entries if len(e) == 3]
            done = iter(await node.update_batch(writes, consistency))  # type: ignore[arg-type]
            results = []
            for entry in entries:
                outcome = entry[1] if len(entry) == 2 else next(done)
                results.append(error_result(entry[0], outcome) if isinstance(outcome, ServerError)
                               else outcome_result(entry[0], outcome))
            return encode_body(answer(results), JSON)

        async def burst(count: int) -> None:
            for i in range(0, count, CONCURRENCY):
                await asyncio.gather(*(post(bodies[(i + j) % BODIES]) for j in range(CONCURRENCY)))
                node.checkpoint(CONCURRENCY * CHECKPOINT_KEYS_PER_REQUEST)
                clock["requests"] += CONCURRENCY
                if clock["requests"] >= REQUESTS_PER_PUSH:
                    clock["requests"] -= REQUESTS_PER_PUSH
                    clock["now"] += config.push_interval_s
                    core.tick(clock["now"], ["bench"])

        try:
            await burst(BODIES)
            best = float("inf")
            for _ in range(passes):
                started = time.process_time()
                await burst(requests)
                best = min(best, (time.process_time() - started) / (requests * BATCH) * 1e6)
            return best
        finally:
            await node.stop()


def instructions() -> int:
    """Instructions an update under callgrind: (count at 144 requests - count at 48) / 9,600 updates."""
    counts = []
    for requests in (48, 144):
        out = subprocess.run(
            ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", sys.executable, __file__,
             "--requests", str(requests), "--passes", "1", "--child"],
            capture_output=True, text=True, check=True, timeout=1800).stderr
        counts.append(int(re.search(r"refs:\s+([\d,]+)", out).group(1).replace(",", "")))  # type: ignore[union-attr]
    return (counts[1] - counts[0]) // (96 * BATCH)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=400, help="batch requests a pass")
    parser.add_argument("--passes", type=int, default=5)
    parser.add_argument("--instructions", action="store_true", help="count instructions under valgrind instead")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)  # one run (callgrind's child)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.child:
        asyncio.run(run(args.requests, args.passes))
        return
    result: dict[str, float] = {"instructions_per_update": instructions()} if args.instructions else \
        {"cpu_us_per_update": round(asyncio.run(run(args.requests, args.passes)), 1)}
    if args.json:
        print(json.dumps(result))
        return
    for name, value in result.items():
        print(f"{name:28} {value:>12,}")


if __name__ == "__main__":
    main()
