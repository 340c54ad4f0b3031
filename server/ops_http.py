"""The operator's routes: `GET /v1/cluster/convergence`, the dashboard's files under `/ui` and its event stream
`GET /v1/ui/events`.

- `/v1/cluster/convergence` answers the report of `server.ops_view.OpsView.convergence` (JSON or msgpack).
- `/ui`, `/ui/app.js`, `/ui/style.css` are static files shipped in the package (`server/ui/`, package data), served
  without the token: they hold no data, and a browser navigating to a page cannot send an `Authorization` header.
  Everything the page shows comes from `/v1/ui/events`, which takes the token like every other route. The page
  reads the token from the URL fragment (`/ui#token=...`: a fragment never leaves the browser, so it reaches no log)
  or asks for it after a 401, keeps it in the tab's `sessionStorage`, and sends it as `Authorization: Bearer` with a
  `fetch` whose body it parses as Server-Sent Events itself (`EventSource` cannot send headers).
- `/v1/ui/events` with `Accept: text/event-stream` sends an `event: snapshot` (`data:` one `OpsView.snapshot`) every
  ``interval_ms`` (250..10000, default 1000) until the client goes; otherwise it answers one snapshot (its
  ``writes_per_s`` is null: a rate needs two samples).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from functools import cache
from importlib import resources

from aiohttp import web

from rumor.server.http_request import int_option, query_options
from rumor.server.negotiation import JSON, encode_body, response_format
from rumor.server.ops_view import OpsView
from rumor.server.sse import CONTENT_TYPE as EVENT_STREAM
from rumor.server.sse import frame
from rumor.server.watch_http import wants_event_stream

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

UI_FILES = {"/ui": ("index.html", "text/html"), "/ui/app.js": ("app.js", "text/javascript"),
            "/ui/style.css": ("style.css", "text/css")}
"""path -> (file in `server/ui/`, content type). These paths are public (no token): see the module docstring."""
UI_EVENT_OPTIONS = frozenset({"interval_ms"})
DEFAULT_INTERVAL_MS = 1000
MIN_INTERVAL_MS = 250
MAX_INTERVAL_MS = 10_000
#: the page runs only its own script and style, and talks only to the node that served it
_UI_HEADERS = {"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff",
               "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'"}


@cache
def ui_file(name: str) -> bytes:
    """A dashboard file's bytes, read once from the installed package."""
    return resources.files("server").joinpath("ui", name).read_bytes()


def ops_routes(app: web.Application, view: OpsView) -> dict[str, list[tuple[str, Handler]]]:
    """The routes of this module for `server.http_api.create_app`'s table; ends open streams at shutdown."""
    streams: set[asyncio.Event] = set()

    async def end_streams(_app: web.Application) -> None:
        for stop in list(streams):
            stop.set()

    app.on_shutdown.append(end_streams)

    async def convergence(request: web.Request) -> web.StreamResponse:
        """Whether this node holds the same data as every member, now (see `server.replication.convergence`)."""
        query_options(request, frozenset())
        fmt = response_format(request.headers.get("Accept"))
        return web.Response(body=encode_body(await view.convergence(), fmt), content_type=fmt,
                            headers={"Cache-Control": "no-store"})

    async def ui_events(request: web.Request) -> web.StreamResponse:
        options = query_options(request, UI_EVENT_OPTIONS)
        interval_ms = int_option("interval_ms", options.get("interval_ms", str(DEFAULT_INTERVAL_MS)),
                                 MIN_INTERVAL_MS, MAX_INTERVAL_MS)
        if request.method == "HEAD" or not wants_event_stream(request.headers.get("Accept")):
            fmt = response_format(request.headers.get("Accept"))
            body = b"" if request.method == "HEAD" else encode_body(await view.snapshot(None), fmt)
            return web.Response(body=body, content_type=fmt, headers={"Cache-Control": "no-store"})
        stop = asyncio.Event()
        streams.add(stop)
        try:
            return await _stream(request, view, interval_ms / 1000, stop)
        finally:
            streams.discard(stop)

    def static(path: str) -> Handler:
        name, content_type = UI_FILES[path]

        async def serve_file(request: web.Request) -> web.StreamResponse:
            return web.Response(body=ui_file(name), content_type=content_type, charset="utf-8", headers=_UI_HEADERS)

        return serve_file

    routes: dict[str, list[tuple[str, Handler]]] = {
        "/v1/cluster/convergence": [("GET", convergence)],
        "/v1/ui/events": [("GET", ui_events)],
    }
    for path in UI_FILES:
        routes[path] = [("GET", static(path))]
    return routes


def _gone(request: web.Request) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()


async def _stream(request: web.Request, view: OpsView, interval_s: float, stop: asyncio.Event) -> web.StreamResponse:
    """A snapshot every ``interval_s`` until the client goes or the node shuts down; writes per second are this
    stream's own (the count's change since its previous snapshot)."""
    response = web.StreamResponse(headers={"Content-Type": f"{EVENT_STREAM}; charset=utf-8",
                                           "Cache-Control": "no-store", "X-Accel-Buffering": "no"})
    with contextlib.suppress(ConnectionResetError):  # the client left: nothing more to send, nothing failed
        await response.prepare(request)
        previous: tuple[int, float] | None = None
        while not stop.is_set() and not _gone(request):
            started = time.monotonic()
            view.writes.attach(view.node)
            count = view.writes.count
            rate = None if previous is None else (count - previous[0]) / max(started - previous[1], 1e-3)
            previous = (count, started)
            snapshot = await view.snapshot(rate)
            await response.write(frame("snapshot", encode_body(snapshot, JSON)))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), max(0.0, interval_s - (time.monotonic() - started)))
    return response


__all__ = ["UI_FILES", "ops_routes", "ui_file"]
