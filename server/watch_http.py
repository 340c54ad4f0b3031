"""`GET /v1/watch?prefix=&since=&timeout_ms=`: the change feed (`server.watch`) over HTTP, as Server-Sent Events or
as a JSON (or msgpack) long-poll.

- `Accept: text/event-stream`: a stream of `event: change` (`id:` the event's cursor, `data:` the event's JSON) and
  `event: reset` (`data: {"reason", "cursor", "resync"}`), with a comment every `KEEPALIVE_S` while idle (so proxies
  keep the connection and a dead peer surfaces). A browser's `EventSource` resumes by itself: on reconnecting it
  sends `Last-Event-ID`, which is read as `since` when the query has none.
- Otherwise one answer `{"events": [...], "cursor", "reset": null | {...}}`, as soon as there is an event or a reset,
  else after `timeout_ms` with no events. `cursor` is what to pass as `since` next; after a reset it is the reset's
  (the events after it come with the next request).

Every request has its own subscriber, closed in `finally`: a long-poll's when it answers, a stream's when its client
goes. aiohttp tells a handler nothing when the client of a bodiless request hangs up (it cancels the handler only on
servers run with `handler_cancellation`, which would change every route), so a waiting handler looks at its
connection every `DISCONNECT_CHECK_S` as well: a subscriber outlives its client by at most that, and it holds at
most `max_pending_keys` keys meanwhile. A write to a client that stopped reading blocks in aiohttp's drain, with
about 64 KiB buffered; changes meanwhile coalesce in the subscriber until it overflows into a reset.

`watch_route(app, node)` returns the handler and registers an `on_shutdown` hook on `app` that ends every open
stream, so a node stopping gracefully does not wait out its shutdown timeout for watchers that never hang up.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from rumor.server.http_request import int_option, query_options
from rumor.server.negotiation import JSON, encode_body, response_format
from rumor.server.node import Node
from rumor.server.sse import CONTENT_TYPE as EVENT_STREAM
from rumor.server.sse import KEEPALIVE, comment, frame
from rumor.server.watch import ChangeFeed, Cursor, Subscriber, Taken

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

WATCH_OPTIONS = frozenset({"prefix", "since", "timeout_ms"})
DEFAULT_TIMEOUT_MS = 30_000
MAX_TIMEOUT_MS = 60_000
KEEPALIVE_S = 15.0
DISCONNECT_CHECK_S = 0.25
#: events rendered per long-poll answer or per stream write: a bound on one answer's size, not on what is delivered
MAX_EVENTS_PER_ANSWER = 1000


def watch_route(app: web.Application, node: Node) -> Handler:
    """The `GET /v1/watch` handler for `app`, whose shutdown ends the streams it opened."""
    open_subscribers: set[Subscriber] = set()

    async def end_streams(_app: web.Application) -> None:
        for subscriber in list(open_subscribers):
            subscriber.close()

    app.on_shutdown.append(end_streams)

    async def watch(request: web.Request) -> web.StreamResponse:
        options = query_options(request, WATCH_OPTIONS)
        prefix = options.get("prefix", "")
        since_text = options.get("since", request.headers.get("Last-Event-ID", ""))
        since = Cursor.parse(since_text) if since_text else None
        timeout_ms = int_option("timeout_ms", options.get("timeout_ms", str(DEFAULT_TIMEOUT_MS)), 1, MAX_TIMEOUT_MS)
        stream = wants_event_stream(request.headers.get("Accept"))
        feed = node.feed
        if request.method == "HEAD":
            return web.Response(content_type=EVENT_STREAM if stream else response_format(request.headers.get("Accept")))
        subscriber = feed.subscribe(prefix, since)
        open_subscribers.add(subscriber)
        try:
            if stream:
                return await _stream(request, feed, subscriber)
            return await _long_poll(request, feed, subscriber, timeout_ms / 1000)
        finally:
            subscriber.close()
            open_subscribers.discard(subscriber)

    return watch


def wants_event_stream(accept: str | None) -> bool:
    """Whether `Accept` names `text/event-stream` (with a q above 0)."""
    if not accept or EVENT_STREAM not in accept.lower():
        return False
    for part in accept.split(","):
        media, *params = (p.strip() for p in part.split(";"))
        if media.lower() == EVENT_STREAM:
            q = next((p.partition("=")[2] for p in params if p.partition("=")[0].strip() == "q"), "1")
            try:
                return float(q) > 0
            except ValueError:
                return False
    return False


def _gone(request: web.Request) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()


def _events(feed: ChangeFeed, taken: Taken) -> list[dict[str, Any]]:
    return [event for change in taken.changes if (event := feed.event(change)) is not None]


async def _long_poll(request: web.Request, feed: ChangeFeed, subscriber: Subscriber,
                     timeout_s: float) -> web.StreamResponse:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    body: dict[str, Any]
    while True:
        taken = subscriber.take(MAX_EVENTS_PER_ANSWER)
        if taken.reset is not None:  # the events after it come with the next request, from the reset's cursor
            body = {"events": [], "cursor": str(taken.reset.cursor), "reset": taken.reset.to_json(subscriber.prefix)}
            break
        events = _events(feed, taken)
        remaining = deadline - loop.time()
        if events or subscriber.closed or remaining <= 0 or _gone(request):
            body = {"events": events, "cursor": str(taken.position), "reset": None}
            break
        await subscriber.wait(min(remaining, DISCONNECT_CHECK_S))
    fmt = response_format(request.headers.get("Accept"))
    return web.Response(body=encode_body(body, fmt), content_type=fmt, headers={"Cache-Control": "no-store"})


async def _stream(request: web.Request, feed: ChangeFeed, subscriber: Subscriber) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": f"{EVENT_STREAM}; charset=utf-8",
                                           "Cache-Control": "no-store", "X-Accel-Buffering": "no"})
    loop = asyncio.get_running_loop()
    with contextlib.suppress(ConnectionResetError):  # the client left: nothing more to send, nothing failed
        await response.prepare(request)
        await response.write(comment(f"watching {subscriber.prefix!r} on {feed.node_id}"))  # the client knows now
        keepalive_at = loop.time() + KEEPALIVE_S
        while not subscriber.closed:
            taken = subscriber.take(MAX_EVENTS_PER_ANSWER)
            chunks = []
            if taken.reset is not None:
                chunks.append(frame("reset", encode_body(taken.reset.to_json(subscriber.prefix), JSON)))
            chunks += [frame("change", encode_body(event, JSON), event["cursor"]) for event in _events(feed, taken)]
            now = loop.time()
            if chunks:
                await response.write(b"".join(chunks))
                keepalive_at = now + KEEPALIVE_S
                continue
            if _gone(request):
                break
            if now >= keepalive_at:
                await response.write(KEEPALIVE)
                keepalive_at = now + KEEPALIVE_S
                continue
            await subscriber.wait(min(DISCONNECT_CHECK_S, keepalive_at - now))
    return response


__all__ = ["DEFAULT_TIMEOUT_MS", "KEEPALIVE_S", "WATCH_OPTIONS", "wants_event_stream", "watch_route"]
