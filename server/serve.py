"""Running a node as a process: HTTP server + `Node`, until SIGTERM/SIGINT, then a graceful shutdown.

Every served node is a cluster member (`server.cluster`): alone until it joins seeds or others join it. It binds
where the config says and publishes its advertised addresses (`server.advertise`); with a certificate it serves
HTTPS only (`server.tls`), certificate files checked before anything is bound.
Shutdown order: stop accepting and finish in-flight requests (aiohttp runner cleanup), then `Node.stop()` (which
stops replication and announces a graceful leave, checkpoints dirty keys and flushes storage). Nothing acknowledged
is lost either way; a clean stop just makes the next start faster.

A fatal failure of background work (see `server.supervisor`) takes the same graceful path, after one ERROR line
naming the component and why, and the process exits with status 1 so that whatever runs it notices and restarts it.
A failure during shutdown is logged and does not change the exit status of a requested stop.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket

from aiohttp import web

from rumor.crdt import set_write_version
from rumor.gossip.address import format_address
from rumor.server.advertise import http_advertised
from rumor.server.cluster import Cluster
from rumor.server.collector import CollectionPauses, FullCollections, collector_paused, tune_collector
from rumor.server.config import ServerConfig, config_address
from rumor.server.errors import ServerError
from rumor.server.http_api import create_app
from rumor.server.http_server import NodeRunner
from rumor.server.logs import ACCESS_LOGGER, AccessLogger, configure_logging
from rumor.server.node import Node
from rumor.server.tls import server_context

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
    tls = server_context(config.tls_cert, config.tls_key, config.tls_ca) \
        if config.tls_cert is not None and config.tls_key is not None else None
    sock = bind_http(config)
    bound_http = sock.getsockname()[:2]
    http_addr = http_advertised(bound_http, config_address(config.gossip_addr, "gossip_addr")[0],
                                config.advertise_addr, config.advertise_http_addr)
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
    stop_timing = CollectionPauses().install()
    if config.gc_full_interval_s > 0:
        node.supervisor.supervise("gc", FullCollections(config.gc_full_interval_s).run)
    fatal: tuple[str, str] | None = None
    try:
        await runner.setup()
        site = web.SockSite(runner, sock, ssl_context=tls)
        await site.start()
        scheme = "http" if tls is None else "https"
        line = (f"rumor: node {node.node_id} listening on {scheme}://{format_address(bound_http)} "
                f"gossip {cluster.gossip_bound_address}")
        if (http_addr, cluster.gossip_address) != (format_address(bound_http), cluster.gossip_bound_address):
            line += f" advertised as {scheme}://{http_addr} gossip {cluster.gossip_address}"
        print(line, flush=True)
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
        stop_timing()
        await node.stop()  # stops replication first: announces leave, then flushes storage; logs what failed
        sock.close()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
    return 0 if fatal is None else 1


def run(config: ServerConfig) -> int:
    configure_logging(config)
    set_write_version(config.wire_version)  # process-wide: every encoder of this process writes it
    return asyncio.run(serve(config))
