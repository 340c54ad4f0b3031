"""What one PUT costs inside the node, without HTTP: a steady figure for tuning the write path on a noisy machine.

The loop is a PUT handler's work minus aiohttp: decode the JSON body, build the `RegisterWrite`, `Node.update` (apply,
encode, log, await the group commit) and build the response, 32 requests at a time like `wrk -c32`, over 1,000 keys.
Three variants run in the same process, in the same run:

- `floor`: decode the body and answer it as JSON (what the bare server of http_bench.py does besides HTTP);
- `in_memory`: a node without storage;
- `durable`: a node with its SQLite log (WAL, synchronous=FULL), the default.

    .venv/bin/python bench/write_path_cost.py [--requests 20000] [--json]
    .venv/bin/python bench/write_path_cost.py --instructions [--json]   # needs valgrind; about 6 minutes

Default figures are CPU microseconds a request (all threads, best of 3 passes); they drift with the machine's
speed like every timing here. `--instructions` counts machine instructions a request instead, under valgrind's
callgrind: each variant runs twice, 500 and 2,500 requests, and the difference removes start-up. The count
repeats to about 0.1% from run to run whatever else the machine does, so a change of 1% is visible, which no
timing on this VM shows. Keys: floor_*, in_memory_*, durable_* (`_cpu_us` or `_instructions`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from rumor.server import http_api  # noqa: E402
from rumor.server.config import ServerConfig  # noqa: E402
from rumor.server.negotiation import JSON, decode_body, encode_body  # noqa: E402
from rumor.server.node import Node  # noqa: E402
from rumor.server.updates import RegisterWrite  # noqa: E402
from rumor.server.values import check_key  # noqa: E402

VARIANTS = ("floor", "in_memory", "durable")
KEYS = 1000
CONCURRENCY = 32
#: Keys checkpointed per burst of CONCURRENCY requests. The node's checkpointer runs on a timer (64 keys every
#: 0.25 s), so under callgrind, 50 times slower, it would fold every key several times per write and inflate the
#: count: here it is off and the loop checkpoints at the rate a real node under this load does (about 256 keys a
#: second at 2,600 PUTs a second, a tenth of the requests), the same however fast the loop runs.
CHECKPOINTS_PER_BURST = 3


class _JsonRequest:
    """The two attributes of an aiohttp request that building a response reads."""

    headers = {"Content-Type": "application/json"}
    query_string = ""


async def run(variant: str, requests: int, passes: int) -> float:
    """CPU microseconds a request (best pass), after a warm-up pass over every key."""
    with tempfile.TemporaryDirectory(prefix="rumor-write-path-") as tmp:
        node = Node(ServerConfig(node_id="bench", data_dir=Path(tmp), in_memory=variant != "durable",
                                 checkpoint_interval_s=3600))
        await node.start()
        request = _JsonRequest()

        async def put(i: int) -> object:
            body = b'{"n": %d, "s": "value"}' % i
            if variant == "floor":
                return encode_body({"key": f"bench-{i % KEYS}", "value": decode_body(body, JSON)}, JSON)
            update = RegisterWrite(value=decode_body(body, JSON))
            result = await node.update(check_key(f"bench-{i % KEYS}"), update,
                                       consistency=http_api._DEFAULT_CONSISTENCY)
            return http_api._write_response(request, result)  # type: ignore[arg-type]

        async def burst(count: int) -> None:
            for i in range(0, count, CONCURRENCY):
                await asyncio.gather(*(put(j) for j in range(i, i + CONCURRENCY)))
                if node.storage.durable:
                    node.checkpoint(CHECKPOINTS_PER_BURST)

        try:
            await burst(KEYS)  # the same warm-up whatever the length: it cancels out of the callgrind difference
            best = float("inf")
            for _ in range(passes):
                started = time.process_time()
                await burst(requests)
                best = min(best, (time.process_time() - started) / requests * 1e6)
            return best
        finally:
            await node.stop()


def instructions(variant: str) -> int:
    """Instructions a request under callgrind: (count at 2,500 requests - count at 500) / 2,000."""
    counts = []
    for requests in (500, 2500):
        out = subprocess.run(
            ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", sys.executable, __file__,
             "--variant", variant, "--requests", str(requests), "--passes", "1"],
            capture_output=True, text=True, check=True, timeout=900).stderr
        counts.append(int(re.search(r"refs:\s+([\d,]+)", out).group(1).replace(",", "")))  # type: ignore[union-attr]
    return (counts[1] - counts[0]) // 2000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--passes", type=int, default=3)
    parser.add_argument("--instructions", action="store_true", help="count instructions under valgrind instead")
    parser.add_argument("--variant", choices=VARIANTS, help=argparse.SUPPRESS)  # one variant (callgrind's child)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.variant is not None:
        asyncio.run(run(args.variant, args.requests, args.passes))
        return
    if args.instructions:
        result: dict[str, float] = {f"{v}_instructions": instructions(v) for v in VARIANTS}
    else:
        result = {f"{v}_cpu_us": round(asyncio.run(run(v, args.requests, args.passes)), 1) for v in VARIANTS}
    if args.json:
        print(json.dumps(result))
        return
    for name, value in result.items():
        print(f"{name:28} {value:>12,}")


if __name__ == "__main__":
    main()
