"""The change feed's figures for apps_bench.py: how long a write takes to reach a watcher on another node, how many
events one node delivers to many subscribers, and what an idle subscriber costs in memory.

- `watch_latency_ms_p50/_p99`: a 3-process cluster of `rumor serve` on loopback (local preset, durable); a watcher
  streams `GET /v1/watch` (SSE) from n3; each of `samples` writes is a PUT on n1, timed from just before the PUT
  until the watcher has parsed the event for that key (one write at a time: the next starts once this one arrived).
  It spans the PUT's own durable commit, gossip to n3, n3's commit (an event is announced once on disk) and the SSE
  frame.
- `watch_events_per_s`: one durable `rumor serve` process pinned to one core, `subscribers` SSE subscribers of the
  same prefix on the other core (this process), and a writer (here too) putting `writes` new keys in batches of
  100; it counts `event: change` frames received, summed over subscribers, divided by the time from the first
  write until the last subscriber got the last event. Every key is new, so nothing coalesces: each write is one
  event per subscriber. Every subscriber must get every event (and no reset), or the run says so. The node's CPU
  (all threads) per event delivered (`watch_server_cpu_us_per_event`, which includes taking the writes) says whether
  the node or this reader was the bound.
- `rss_mib_per_subscriber`: that node's resident memory with the subscribers connected and idle (each has read the
  stream's opening comment, sent once it is subscribed) minus before they connected, divided by their number.

Every loop is bounded in count and time (`deadline_s`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
import time
from pathlib import Path

import aiohttp
from http_bench import cpu_seconds

from rumor.server.client import RumorClient
from rumor.server.local_cluster import LocalCluster

SSE = {"Accept": "text/event-stream"}
CHANGE, RESET = b"event: change\n", b"event: reset\n"
WRITE_BATCH = 100


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(pct / 100 * (len(ordered) - 1)))] if ordered else float("nan")


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def pin_process(pid: int, cpu: int) -> None:
    """Every thread of `pid` onto `cpu` (the affinity of a process is its threads', one by one)."""
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            os.sched_setaffinity(int(task.name), {cpu})


async def watch_latency(samples: int, deadline_s: float = 120.0) -> dict[str, object]:
    latencies: list[float] = []
    timeouts = 0
    with tempfile.TemporaryDirectory(prefix="rumor-watch-latency-") as tmp:
        async with LocalCluster(3, Path(tmp), preset="local", fault_injection=False) as cluster:
            await cluster.wait_members(timeout_s=20)
            writer, watcher = cluster["n1"].api(), cluster["n3"].api()
            since = (await watcher.poll_changes("lat/", timeout_ms=1))["cursor"]
            arrived: dict[str, asyncio.Future[float]] = {}
            loop = asyncio.get_running_loop()

            async def follow() -> None:
                async with watcher.open_watch("lat/", since) as events:
                    async for event in events:
                        waiting = arrived.get(event.data.get("key", ""))
                        if waiting is not None and not waiting.done():
                            waiting.set_result(loop.time())

            following = asyncio.create_task(follow())
            stop_at = loop.time() + deadline_s
            try:
                for i in range(samples):
                    if loop.time() > stop_at:
                        break
                    key = f"lat/{i}"
                    arrived[key] = loop.create_future()
                    started = loop.time()
                    await writer.put(key, i)
                    try:
                        latencies.append(await asyncio.wait_for(arrived[key], 5.0) - started)
                    except TimeoutError:
                        timeouts += 1
            finally:
                following.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await following
    return {"watch_latency_ms_p50": round(percentile(latencies, 50) * 1000, 2),
            "watch_latency_ms_p99": round(percentile(latencies, 99) * 1000, 2),
            "watch_latency_samples": len(latencies), "watch_latency_timeouts": timeouts}


class _Subscriber:
    """One SSE subscriber that counts frames without parsing them (the reader must stay cheaper than the server)."""

    def __init__(self) -> None:
        self.changes = 0
        self.resets = 0
        self.opened = asyncio.Event()
        self.last_at = 0.0

    async def run(self, session: aiohttp.ClientSession, url: str, since: str, expected: int) -> None:
        loop = asyncio.get_running_loop()
        tail = b""
        async with session.get(url + "/v1/watch", params={"prefix": "fan/", "since": since}, headers=SSE) as reply:
            reply.raise_for_status()
            async for chunk in reply.content.iter_any():
                self.opened.set()  # the first bytes are the comment sent once the subscription exists
                text = tail + chunk
                self.changes += text.count(CHANGE)
                self.resets += text.count(RESET)
                tail = text[-(len(CHANGE) - 1):]  # a marker split between chunks is counted once, in the next
                if self.changes >= expected:
                    self.last_at = loop.time()
                    return


async def fan_out(subscribers: int, writes: int, server_cpu: int | None, client_cpu: int | None,
                  deadline_s: float = 120.0) -> dict[str, object]:
    with tempfile.TemporaryDirectory(prefix="rumor-watch-fanout-") as tmp:
        async with LocalCluster(1, Path(tmp), preset="local", fault_injection=False) as cluster:
            node = cluster["n1"]
            assert node.proc is not None
            own_cpus = os.sched_getaffinity(0)
            if server_cpu is not None and client_cpu is not None:
                pin_process(node.proc.pid, server_cpu)
                pin_process(os.getpid(), client_cpu)
            api = node.api()
            await api.batch([{"key": f"warm/{i}", "type": "register", "value": i} for i in range(WRITE_BATCH)])
            since = (await api.poll_changes("fan/", timeout_ms=1))["cursor"]
            rss_before = rss_mib(node.proc.pid)
            subs = [_Subscriber() for _ in range(subscribers)]
            connector = aiohttp.TCPConnector(limit=0)
            async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(
                    total=deadline_s, sock_read=30)) as session:
                tasks = [asyncio.create_task(s.run(session, node.http_url, since, writes)) for s in subs]
                try:
                    async with asyncio.timeout(30):
                        await asyncio.gather(*(s.opened.wait() for s in subs))
                    rss_idle = rss_mib(node.proc.pid)
                    cpu_before = cpu_seconds(node.proc.pid)
                    result = await _deliver(api, subs, tasks, writes, deadline_s)
                    cpu_us = (cpu_seconds(node.proc.pid) - cpu_before) * 1e6
                    delivered = sum(s.changes for s in subs)
                    result["watch_server_cpu_us_per_event"] = round(cpu_us / max(1, delivered), 2)
                finally:
                    for task in tasks:
                        task.cancel()
                    await asyncio.gather(*tasks, return_exceptions=True)
                    for thread in Path("/proc/self/task").iterdir():
                        with contextlib.suppress(OSError):
                            os.sched_setaffinity(int(thread.name), own_cpus)
    return result | {"rss_mib_per_subscriber": round((rss_idle - rss_before) / subscribers, 4),
                     "rss_mib_without_subscribers": round(rss_before, 1),
                     "rss_mib_with_idle_subscribers": round(rss_idle, 1), "watch_subscribers": subscribers}


async def _deliver(api: RumorClient, subs: list[_Subscriber], tasks: list[asyncio.Task[None]], writes: int,
                   deadline_s: float) -> dict[str, object]:
    loop = asyncio.get_running_loop()
    started = loop.time()
    for first in range(0, writes, WRITE_BATCH):
        keys = range(first, min(first + WRITE_BATCH, writes))
        await api.batch([{"key": f"fan/{i}", "type": "register", "value": i} for i in keys])
    written_at = loop.time()
    done, _ = await asyncio.wait(tasks, timeout=max(1.0, deadline_s - (written_at - started)))
    failed = [t.exception() for t in done if t.exception() is not None]
    if failed:
        raise RuntimeError(f"{len(failed)} subscribers failed: {failed[0]!r}")
    delivered = sum(s.changes for s in subs)
    complete = all(s.changes >= writes for s in subs)
    finished = max(s.last_at for s in subs) if complete else loop.time()
    return {"watch_events_per_s": round(delivered / (finished - started)),
            "watch_events_delivered": delivered, "watch_events_expected": writes * len(subs),
            "watch_resets": sum(s.resets for s in subs),
            "watch_writes_per_s": round(writes / (written_at - started)), "watch_fanout_writes": writes}


async def measure(samples: int, subscribers: int, writes: int, server_cpu: int | None,
                  client_cpu: int | None) -> dict[str, object]:
    started = time.perf_counter()
    figures = await watch_latency(samples)
    figures |= await fan_out(subscribers, writes, server_cpu, client_cpu)
    return figures | {"watch_bench_s": round(time.perf_counter() - started, 1)}
