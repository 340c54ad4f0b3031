"""Running a node as a process: HTTP server + `Node`, until SIGTERM/SIGINT, then a graceful shutdown.

Shutdown order: stop accepting and finish in-flight requests (aiohttp runner cleanup), then `Node.stop()` (which
stops replication, checkpoints dirty keys and flushes storage). Nothing acknowledged is lost either way; a clean
stop just makes the next start faster.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys

from aiohttp import web

from server.config import ServerConfig
from server.http_api import create_app
from server.node import Node

log = logging.getLogger(__name__)


async def serve(config: ServerConfig, *, stop: asyncio.Event | None = None) -> None:
    """Runs until `stop` is set or the process gets SIGTERM/SIGINT. Prints one 'listening' line on stdout."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    node = Node(config)
    await node.start()
    runner = web.AppRunner(create_app(node), access_log=None, handle_signals=False)
    try:
        await runner.setup()
        host, port = config.http_host_port
        site = web.TCPSite(runner, host, port)
        await site.start()
        bound = runner.addresses[0][1] if runner.addresses else port
        print(f"rumor: node {node.node_id} listening on http://{host}:{bound}", flush=True)
        await stop.wait()
        log.info("shutting down")
    finally:
        await runner.cleanup()
        await node.stop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)


def run(config: ServerConfig) -> int:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    asyncio.run(serve(config))
    return 0
