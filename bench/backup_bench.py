"""Backup and restore figures: export and import rates for a 100k-key node, and what an export costs the node's reads.

Two `rumor serve` processes on loopback, each with its own data directory (durable: SQLite WAL, synchronous=FULL):

1. the source node is loaded with `keys` keys through `POST /v1/batch` (1,000 updates a request, a mix of counters,
   sets, registers and maps), then restarted (a graceful stop folds every key into a checkpoint: what a node that has
   been running a while looks like, without its checkpointer busy while we measure), and left to rehash its keys'
   digests (what a node does in bounded batches after a start);
2. `get_p99_ms_idle`: --get-samples GETs of random keys, one at a time on one kept-alive connection, the node idle;
3. the export (`GET /v1/export`, read to the end by a second connection in a thread) while the same GET loop runs
   until it ends: `export_keys_per_s` (keys over the export's wall time) and `get_p99_ms_during_export`, the same
   GETs' p99 as in step 2, the baseline from the same run;
4. `import_keys_per_s`: the file posted to a fresh node (`POST /v1/import`: staged, checked to its last byte, joined,
   durable when it answers), with the GET loop running against that node meanwhile (`get_p99_ms_during_import`,
   keys it has not received yet answer 404, which is as cheap as a hit).

Every step is bounded (socket timeouts, --max-seconds for the whole run); only 127.0.0.1 is used.

    .venv/bin/python bench/backup_bench.py [--keys 100000] [--get-samples 2000] [--json]

`measure(keys=...)` returns the figures as a dict (for `bench/ops_bench.py`).
"""

from __future__ import annotations

import argparse
import http.client
import json
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from rumor.server.backup_format import MEDIA_TYPE  # noqa: E402

BATCH = 1000
SOCKET_TIMEOUT_S = 120.0


class NodeProcess:
    """One `rumor serve` child on 127.0.0.1 (any free ports), stopped with SIGTERM (a graceful stop)."""

    def __init__(self, name: str, data_dir: Path) -> None:
        self.name, self.data_dir = name, data_dir
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, deadline: float) -> None:
        http = f"127.0.0.1:{self.port}" if self.port else "127.0.0.1:0"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "rumor.server.cli", "serve", "--node-id", self.name, "--http-addr", http,
             "--gossip-addr", "127.0.0.1:0", "--data-dir", str(self.data_dir), "--log-level", "warning"],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().decode()  # "rumor: node n listening on http://127.0.0.1:PORT gossip ..."
        if "listening on http://" not in line:
            raise SystemExit(f"node {self.name} did not start: {line!r}")
        self.port = int(line.split("listening on http://", 1)[1].split()[0].rsplit(":", 1)[1])
        if time.monotonic() > deadline:
            raise SystemExit("out of time")

    def stop(self, timeout_s: float = 120.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def connection(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=SOCKET_TIMEOUT_S)


def request(conn: http.client.HTTPConnection, method: str, path: str, body: Any = None,
            headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    conn.request(method, path, body=body, headers=headers or {})
    response = conn.getresponse()
    return response.status, response.read()


def load(node: NodeProcess, keys: int) -> float:
    """Writes `keys` keys through `POST /v1/batch`; returns the seconds it took."""
    kinds = [
        lambda i: {"type": "counter", "increment": i % 97 + 1},
        lambda i: {"type": "set", "add": [f"tag-{i % 13}", i]},
        lambda i: {"type": "register", "value": {"n": i, "s": "value"}},
        lambda i: {"type": "map", "set": {"a": i, "b": "text"}},
    ]
    conn = node.connection()
    started = time.perf_counter()
    for first in range(0, keys, BATCH):
        updates = [{"key": f"key-{i:07}"} | kinds[i % len(kinds)](i) for i in range(first, min(first + BATCH, keys))]
        status, body = request(conn, "POST", "/v1/batch", json.dumps({"updates": updates}),
                               {"Content-Type": "application/json"})
        if status != 200 or json.loads(body)["errors"]:
            raise SystemExit(f"loading failed: {status} {body[:200]!r}")
    conn.close()
    return time.perf_counter() - started


def settle(node: NodeProcess, deadline: float) -> None:
    """Waits (bounded) until the node has rehashed every key's digest for anti-entropy: a node that just started, or
    just took many writes, does that in bounded batches for a while, and that is not what an export costs."""
    conn = node.connection()
    while time.monotonic() < deadline:
        status, body = request(conn, "GET", "/v1/cluster")
        if status == 200 and json.loads(body)["anti_entropy"]["dirty_digests"] == 0:
            conn.close()
            return
        time.sleep(0.2)
    raise SystemExit(f"node {node.name} did not settle in time")


def get_latencies(node: NodeProcess, keys: int, *, count: int | None = None,
                  until: threading.Event | None = None, limit_s: float = 60.0) -> list[float]:
    """GETs of random keys one at a time (ms each): `count` of them, or until `until` is set."""
    rng = random.Random(7)
    conn = node.connection()
    samples: list[float] = []
    stop_at = time.monotonic() + limit_s
    while (count is None or len(samples) < count) and (until is None or not until.is_set()) \
            and time.monotonic() < stop_at:
        started = time.perf_counter()
        status, _ = request(conn, "GET", f"/v1/kv/key-{rng.randrange(keys):07}")
        samples.append((time.perf_counter() - started) * 1000)
        if status not in (200, 404):
            raise SystemExit(f"GET answered {status}")
    conn.close()
    return samples


def p99(samples: list[float]) -> float:
    return round(statistics.quantiles(samples, n=100)[98], 2) if len(samples) >= 2 else float("nan")


def in_child(mode: str, node: NodeProcess, path: Path) -> tuple[subprocess.Popen[bytes], threading.Event]:
    """Runs this script's `--child MODE` in a process of its own (a reader thread here would take the GIL from the
    GET loop for up to 5 ms at a time, and the figure would be ours, not the node's); the event is set when it
    exits."""
    child = subprocess.Popen([sys.executable, __file__, "--child", mode, str(node.port), str(path)], cwd=ROOT,
                             stdout=subprocess.PIPE)
    done = threading.Event()
    threading.Thread(target=lambda: (child.wait(), done.set()), daemon=True).start()
    return child, done


def child_result(child: subprocess.Popen[bytes], what: str) -> dict[str, Any]:
    out, _ = child.communicate(timeout=SOCKET_TIMEOUT_S)
    if child.returncode != 0:
        raise SystemExit(f"{what} failed (status {child.returncode})")
    return json.loads(out)  # type: ignore[no-any-return]


def export_to(port: int, path: Path) -> dict[str, Any]:
    """The child's export: reads `GET /v1/export` to the end into `path`."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=SOCKET_TIMEOUT_S)
    started = time.perf_counter()
    conn.request("GET", "/v1/export")
    response = conn.getresponse()
    if response.status != 200:
        raise SystemExit(f"export answered {response.status}")
    size = 0
    with path.open("wb") as sink:
        while chunk := response.read(256 * 1024):
            sink.write(chunk)
            size += len(chunk)
    return {"seconds": time.perf_counter() - started, "bytes": size}


def import_from(port: int, path: Path) -> dict[str, Any]:
    """The child's import: posts `path` to `POST /v1/import` and waits for the answer."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=SOCKET_TIMEOUT_S)
    started = time.perf_counter()
    with path.open("rb") as source:
        status, body = request(conn, "POST", "/v1/import", source,
                               {"Content-Type": MEDIA_TYPE, "Content-Length": str(path.stat().st_size)})
    if status != 200:
        raise SystemExit(f"import answered {status}: {body[:300]!r}")
    return {"seconds": time.perf_counter() - started, "result": json.loads(body)}


def measure(keys: int = 100_000, *, get_samples: int = 2000, max_seconds: float = 600.0) -> dict[str, Any]:
    """The figures (module docstring) for a node of `keys` keys."""
    deadline = time.monotonic() + max_seconds
    with tempfile.TemporaryDirectory(prefix="rumor-backup-bench-") as tmp:
        base = Path(tmp)
        source, target = NodeProcess("source", base / "source"), NodeProcess("target", base / "target")
        try:
            source.start(deadline)
            load_s = load(source, keys)
            source.stop()
            source.start(deadline)
            settle(source, deadline)
            idle = get_latencies(source, keys, count=get_samples)

            file = base / "backup.rumor-export"
            child, done = in_child("export", source, file)
            during_export = get_latencies(source, keys, until=done, limit_s=max(1.0, deadline - time.monotonic()))
            exported = child_result(child, "export")
            export_s, size = exported["seconds"], exported["bytes"]

            target.start(deadline)
            child, done = in_child("import", target, file)
            during_import = get_latencies(target, keys, until=done, limit_s=max(1.0, deadline - time.monotonic()))
            imported = child_result(child, "import")
            import_s, result = imported["seconds"], imported["result"]
            if result["records"] != keys or result["merged"] != keys:
                raise SystemExit(f"the import did not join every key: {result}")
        finally:
            source.stop()
            target.stop()
    return {
        "keys": keys,
        "export_keys_per_s": round(keys / export_s),
        "import_keys_per_s": round(keys / import_s),
        "get_p99_ms_idle": p99(idle),
        "get_p99_ms_during_export": p99(during_export),
        "get_p99_ms_during_import": p99(during_import),
        "get_p50_ms_idle": round(statistics.median(idle), 2),
        "get_p50_ms_during_export": round(statistics.median(during_export), 2),
        "gets_during_export": len(during_export),
        "export_s": round(export_s, 2), "import_s": round(import_s, 2),
        "export_bytes": size, "export_bytes_per_key": round(size / keys, 1),
        "load_keys_per_s": round(keys / load_s),
        "durable": True,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=100_000)
    parser.add_argument("--get-samples", type=int, default=2000, help="GETs for the idle baseline")
    parser.add_argument("--max-seconds", type=float, default=600.0, help="bound on the whole run")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    parser.add_argument("--child", nargs=3, metavar=("MODE", "PORT", "FILE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        mode, port, path = args.child
        print(json.dumps((export_to if mode == "export" else import_from)(int(port), Path(path))))
        return
    out = measure(args.keys, get_samples=args.get_samples, max_seconds=args.max_seconds)
    if args.json:
        print(json.dumps(out))
        return
    for key, value in out.items():
        print(f"{key:28} {value}")


if __name__ == "__main__":
    main()
