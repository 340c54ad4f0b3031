"""The node's HTTP connections: aiohttp's, with a deadline for request heads and a client's malformed request kept
out of the error log.

A connection that has not sent a complete request line and headers within ``header_timeout_s`` is closed.

aiohttp bounds only idle keep-alive connections (``keepalive_timeout``, an hour by default in 3.10 and later), not the
time a head takes to arrive, so a client that opens connections and trickles a partial head into each ("slowloris")
holds them, and their file descriptors, for that long. nginx calls this deadline ``client_header_timeout``.

The clock runs from the moment a connection opens, and on a kept-alive connection from the first byte received while
the handler is idle, waiting for its next request; it stops once the parser has a complete head. Bodies are not
timed: a slow upload is the handler's business. Not covered: a partial head pipelined right behind a complete request
in one read (aiohttp buffers it before the first request is handled); ``keepalive_timeout`` still bounds that one.

A head that does not parse (a bad request line or header, a TLS hello on the HTTP port) is answered 400 by aiohttp,
which also logs it at ERROR with a traceback, as if the server had failed: `NodeRequestHandler` logs those at DEBUG
(the client's mistake, not the operator's concern) and leaves every other error as it is.

aiohttp has no hook for the deadline, so `NodeRequestHandler` subclasses its `RequestHandler` and reads three of its
private attributes: ``_waiter`` (pending while the handler waits for a head), ``_request_count`` (heads parsed on this
connection) and ``_upgraded``; and `NodeRunner` rebuilds the application's `web.Server` from its ``_loop``
and ``_kwargs`` to hand out that handler. tests/server/test_header_timeout.py fails if an aiohttp upgrade changes them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestHandler

DEFAULT_HEADER_TIMEOUT_S = 10.0


class NodeRequestHandler(RequestHandler):
    """`RequestHandler` that closes its connection when a request head is not complete in time."""

    def __init__(self, manager: web.Server, *, header_timeout_s: float,
                 on_timeout: Callable[[], None] | None = None, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self.header_timeout_s = header_timeout_s
        self._on_timeout = on_timeout
        self._head_deadline: asyncio.TimerHandle | None = None
        self._heads_at_arm = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._arm()

    def data_received(self, data: bytes) -> None:
        waiter = self._waiter
        idle = waiter is not None and not waiter.done()  # these bytes begin the next head
        heads = self._request_count
        super().data_received(data)
        if self._request_count != heads or self._upgraded:
            self._disarm()  # a complete head arrived (or the connection left HTTP): nothing left to time
        elif idle and data and self._head_deadline is None:
            self._arm()

    def connection_lost(self, exc: BaseException | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def log_exception(self, *args: Any, **kw: Any) -> None:
        if isinstance(kw.get("exc_info"), HttpProcessingError):  # a malformed request, answered 400: not a failure
            self.logger.debug(*args, **kw)
            return
        super().log_exception(*args, **kw)

    def _arm(self) -> None:
        self._heads_at_arm = self._request_count
        self._head_deadline = self._loop.call_later(self.header_timeout_s, self._expired)

    def _disarm(self) -> None:
        if self._head_deadline is not None:
            self._head_deadline.cancel()
            self._head_deadline = None

    def _expired(self) -> None:
        self._head_deadline = None
        if self._request_count != self._heads_at_arm or self.transport is None:
            return
        if self._on_timeout is not None:
            self._on_timeout()
        self.force_close()


class _NodeServer(web.Server):
    """The application's `web.Server`, handing out `NodeRequestHandler`s (same arguments, plus the deadline)."""

    def __init__(self, inner: web.Server, runner: NodeRunner) -> None:
        super().__init__(inner.request_handler, request_factory=inner.request_factory,
                         handler_cancellation=inner.handler_cancellation, loop=inner._loop, **inner._kwargs)
        self._runner = runner

    def __call__(self) -> RequestHandler:
        return NodeRequestHandler(self, loop=self._loop, header_timeout_s=self._runner.header_timeout_s,
                                    on_timeout=self._runner.count_timeout, **self._kwargs)


class NodeRunner(web.AppRunner):
    """`web.AppRunner` whose connections must send each request head within ``header_timeout_s``;
    ``header_timeouts`` counts the connections closed for it."""

    def __init__(self, app: web.Application, *, header_timeout_s: float = DEFAULT_HEADER_TIMEOUT_S,
                 **kwargs: Any) -> None:
        if header_timeout_s <= 0:
            raise ValueError("header_timeout_s must be positive")
        super().__init__(app, **kwargs)
        self.header_timeout_s = header_timeout_s
        self.header_timeouts = 0

    def count_timeout(self) -> None:
        self.header_timeouts += 1

    async def _make_server(self) -> web.Server:
        return _NodeServer(await super()._make_server(), self)


__all__ = ["DEFAULT_HEADER_TIMEOUT_S", "NodeRequestHandler", "NodeRunner"]
