"""Running a node as a process: HTTP server + `Node`, until SIGTERM/SIGINT, then a graceful shutdown.

Every served node is a cluster member (`server.cluster`): alone until it joins seeds or others join it.
Shutdown order: stop accepting and finish in-flight requests (aiohttp runner cleanup), then `Node.stop()` (which
stops replication and announces a graceful leave, checkpoints dirty keys and flushes storage). Nothing acknowledged
is lost either way; a clean stop just makes the next start faster.

A fatal failure of background work (see `server.supervisor`) takes the same graceful path, after one ERROR line
naming the component and why, and the process exits with status 1 so that whatever runs it notices and restarts it.
A failure during shutdown is logged and does not change the exit status of a requested stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
import socket
from collections.abc import Iterator

from aiohttp import web

from rumor.gossip.address import format_address
from rumor.server.cluster import Cluster
from rumor.server.config import ServerConfig
from rumor.server.errors import ServerError
from rumor.server.http_api import create_app
from rumor.server.http_server import NodeRunner
from rumor.server.logs import ACCESS_LOGGER, AccessLogger, configure_logging
from rumor.server.node import Node

log = logging.getLogger(__name__)


class ListenError(ServerError, OSError):
    """An address to listen on cannot be bound: the one-line message names it, says why, and which option to change
    (``option``: the flag that sets this address)."""

    code = "cannot_listen"

    def __init__(self, address: str, reason: str, option: str) -> None:
        hint = f"is another node running? pick another {option}" if "in use" in reason else f"check {option}"
        super().__init__(f"cannot listen on {address}: {reason} ({hint})")
        self.address = address
        self.reason = reason
        self.option = option


def bind_http(config: ServerConfig) -> socket.socket:
    """Binds the API socket before anything starts, so the real port (for port 0) can be published in gossip.

    Raises `ListenError` (one line, no traceback needed) if the address is taken or not this host's.
    """
    host, port = config.http_host_port
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        sock = socket.socket(family, socket.SOCK_STREAM)
    except OSError as exc:
        raise ListenError(config.http_addr, _os_reason(exc), "--http-addr") from exc
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(128)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        raise ListenError(config.http_addr, _os_reason(exc), "--http-addr") from exc
    return sock


def _os_reason(exc: OSError) -> str:
    """The operating system's words ("address already in use"), without the errno, lower-cased to continue a line."""
    text = os.strerror(exc.errno) if exc.errno else str(exc)  # asyncio's strerror also names the address
    return text[:1].lower() + text[1:]


async def serve(config: ServerConfig, *, stop: asyncio.Event | None = None) -> int:
    """Runs until `stop` is set, the process gets SIGTERM/SIGINT, or background work fails fatally; returns the exit
    status: 0 after a requested stop, 1 after a fatal failure. Prints one 'listening' line on stdout."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    sock = bind_http(config)
    http_addr = format_address(sock.getsockname()[:2])
    cluster = Cluster(config, http_addr)
    node = Node(config, replication=cluster.replication)
    node.supervisor.on_fatal = lambda _component, _exc: stop.set()
    cluster.bind_metrics(node.metrics)
    access = {"access_log": logging.getLogger(ACCESS_LOGGER), "access_log_class": AccessLogger} \
        if config.access_log else {"access_log": None}
    runner = NodeRunner(create_app(node, cluster), header_timeout_s=config.http_header_timeout_s,
                        handle_signals=False, **access)
    try:
        with collector_paused():  # recovery decodes every stored state: up to 2x faster with no cyclic GC passes
            await node.start()
    except BaseException:
        sock.close()
        await node.stop()
        raise
    tune_collector()
    fatal: tuple[str, str] | None = None
    try:
        await runner.setup()
        site = web.SockSite(runner, sock)
        await site.start()
        print(f"rumor: node {node.node_id} listening on http://{http_addr} gossip {cluster.gossip_address}", flush=True)
        await stop.wait()
        fatal = node.supervisor.fatal
        if fatal is None:
            log.info("shutting down")
        else:
            log.error("node %s: %s failed fatally (%s); shutting down", node.node_id, *fatal)
    finally:
        try:
            await runner.cleanup()
        except Exception:  # whatever went wrong, storage is still flushed and closed below
            log.exception("stopping the HTTP server failed")
        await node.stop()  # stops replication first: announces leave, then flushes storage; logs what failed
        sock.close()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
    return 0 if fatal is None else 1


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    """No cyclic garbage collection inside: decoding a big state allocates millions of objects that all live on, and
    the collector would rescan them again and again (measured: a 1M-element set decodes 2x faster paused)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


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
    configure_logging(config)
    return asyncio.run(serve(config))
