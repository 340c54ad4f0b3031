"""Running a node as a process: HTTP server + `Node`, until SIGTERM/SIGINT, then a graceful shutdown.

Every served node is a cluster member (`server.cluster`): alone until it joins seeds or others join it.
Shutdown order: stop accepting and finish in-flight requests (aiohttp runner cleanup), then `Node.stop()` (which
stops replication and announces a graceful leave, checkpoints dirty keys and flushes storage). Nothing acknowledged
is lost either way; a clean stop just makes the next start faster.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import socket
import sys

from aiohttp import web

from server.cluster import Cluster
from server.config import ServerConfig
from server.http_api import create_app
from server.node import Node

log = logging.getLogger(__name__)


def bind_http(config: ServerConfig) -> socket.socket:
    """Binds the API socket before anything starts, so the real port (for port 0) can be published in gossip."""
    host, port = config.http_host_port
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(128)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


async def serve(config: ServerConfig, *, stop: asyncio.Event | None = None) -> None:
    """Runs until `stop` is set or the process gets SIGTERM/SIGINT. Prints one 'listening' line on stdout."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    sock = bind_http(config)
    host, port = sock.getsockname()[:2]
    http_addr = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    cluster = Cluster(config, http_addr)
    node = Node(config, replication=cluster.replication)
    cluster.bind_metrics(node.metrics)
    runner = web.AppRunner(create_app(node, cluster), access_log=None, handle_signals=False)
    try:
        await node.start()
    except BaseException:
        sock.close()
        await node.stop()
        raise
    tune_collector()
    try:
        await runner.setup()
        site = web.SockSite(runner, sock)
        await site.start()
        print(f"rumor: node {node.node_id} listening on http://{http_addr} gossip {cluster.gossip_address}", flush=True)
        await stop.wait()
        log.info("shutting down")
    finally:
        await runner.cleanup()
        await node.stop()  # stops replication first: announces leave, then flushes storage
        sock.close()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)


def tune_collector() -> None:
    """Process-wide GC policy for a serving node, applied once the keyspace is recovered.

    `gc.freeze()` moves everything alive now (the recovered keyspace, imported code) out of the collector's reach:
    those objects live as long as the process, and without it every full collection rescans all of them, a cost
    that grows with the keyspace. A larger first-generation threshold makes young collections rarer: requests
    allocate many short-lived objects, nearly all freed by reference counting, so collecting every 700 allocations
    spent about 6% of a write's CPU finding nothing.
    """
    gc.freeze()
    _, second, third = gc.get_threshold()
    gc.set_threshold(20_000, second, third)


def run(config: ServerConfig) -> int:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    asyncio.run(serve(config))
    return 0
