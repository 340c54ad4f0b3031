"""`GET /v1/watch` over HTTP (`server.watch_http`): SSE framing, long-poll timing, resume with `since` and
`Last-Event-ID`, malformed and foreign cursors, a consumer that never reads, clients that hang up, shutdown, the
client's resuming iterator and `rumor watch`. Loopback only; every wait has a deadline."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer

from rumor.server import cli
from rumor.server.client import RumorClient, WatchEvent
from rumor.server.config import ServerConfig
from rumor.server.http_api import create_app
from rumor.server.node import Node
from rumor.server.sse import SSEvent, read_events
from rumor.server.updates import Increment, RegisterWrite
from rumor.server.watch import SLOW_CONSUMER, Cursor

SSE = {"Accept": "text/event-stream"}
Build = Callable[..., Any]


class Stream:
    """An open SSE response read event by event (one parser for its whole life: no chunk is lost between reads)."""

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self.response = response
        self._events = read_events(response.content.iter_any())

    async def next(self, timeout_s: float = 5.0) -> SSEvent:
        async with asyncio.timeout(timeout_s):
            return await anext(self._events)

    async def take(self, n: int) -> list[SSEvent]:
        return [await self.next() for _ in range(n)]


@contextlib.asynccontextmanager
async def stream(api: TestClient, **params: str) -> AsyncIterator[Stream]:
    response = await api.get("/v1/watch", params=params, headers=SSE)
    assert response.status == 200, await response.text()
    try:
        # the first bytes are a comment sent once the subscription exists: from here on nothing can be missed
        async with asyncio.timeout(5):
            assert (await response.content.readuntil(b"\n\n")).startswith(b": watching")
        yield Stream(response)
    finally:
        response.close()


async def head_cursor(api: TestClient, prefix: str = "") -> str:
    response = await api.get("/v1/watch", params={"prefix": prefix, "timeout_ms": "1"})
    assert response.status == 200
    body = await response.json()
    assert body["events"] == [] and body["reset"] is None
    return body["cursor"]


async def until(condition: Callable[[], bool], timeout_s: float = 5.0) -> None:
    """Awaits `condition` (state another task changes), checking between loop turns, with a deadline."""
    async with asyncio.timeout(timeout_s):
        while not condition():
            await asyncio.sleep(0.005)


async def test_sse_frames_change_events_with_their_cursor_as_id(make_api: Build) -> None:
    node, api = await make_api()
    async with stream(api, prefix="user/") as events:
        await node.update("user/1", RegisterWrite(value={"name": "ada\nlovelace"}))
        first = await events.next()  # read before the next writes: they would coalesce with it otherwise
        await node.update("order/1", Increment(amount=1))
        await node.update("user/2", Increment(amount=2))
        second = await events.next()
        await node.delete("user/1")
        third = await events.next()
    assert (first.event, second.event, third.event) == ("change", "change", "change")
    bodies = [json.loads(e.data) for e in (first, second, third)]
    assert [e.id for e in (first, second, third)] == [b["cursor"] for b in bodies]
    assert bodies[0] == {"key": "user/1", "type": "register", "value": {"name": "ada\nlovelace"},
                         "context": bodies[0]["context"], "cursor": bodies[0]["cursor"], "origin": "local",
                         "deleted": False}
    assert isinstance(bodies[0]["context"], str) and bodies[0]["context"]  # the opaque context a GET shows
    assert (bodies[1]["key"], bodies[1]["value"]) == ("user/2", 2)
    assert (bodies[2]["key"], bodies[2]["value"], bodies[2]["context"], bodies[2]["deleted"]) == \
        ("user/1", None, None, True)


async def test_the_raw_stream_is_text_event_stream_with_one_data_line_per_event(make_api: Build) -> None:
    node, api = await make_api()
    response = await api.get("/v1/watch", headers=SSE)
    try:
        assert response.status == 200 and response.content_type == "text/event-stream"
        assert response.headers["Cache-Control"] == "no-store"
        async with asyncio.timeout(5):
            await response.content.readuntil(b"\n\n")
            await node.update("k", RegisterWrite(value="a\r\nb"))
            raw = await response.content.readuntil(b"\n\n")
    finally:
        response.close()
    lines = raw.decode().split("\n")
    assert lines[0] == "event: change" and lines[1].startswith("id: v1.") and lines[2].startswith("data: {")
    assert lines[3:] == ["", ""]


async def test_sse_parsing_handles_crlf_split_lines_comments_and_multiline_data() -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for chunk in (b": hi\r", b"\nevent: a\r\nid: 1\r\ndata: x\r", b"\ndata:y\r\n\r", b"\ndata: big",
                      b"ger\n\nevent: cut\ndata: never dispatched"):
            yield chunk

    got = [e async for e in read_events(chunks())]
    assert got == [SSEvent("a", "x\ny", "1"), SSEvent("message", "bigger", "1")]


async def test_a_long_poll_answers_at_once_when_events_are_pending(make_api: Build) -> None:
    node, api = await make_api()
    cursor = await head_cursor(api)
    await node.update("k", Increment(amount=1))
    started = time.monotonic()
    response = await api.get("/v1/watch", params={"since": cursor, "timeout_ms": "60000"})
    body = await response.json()
    assert time.monotonic() - started < 5
    assert [e["key"] for e in body["events"]] == ["k"] and body["reset"] is None
    assert body["cursor"] == body["events"][-1]["cursor"] != cursor


async def test_a_long_poll_answers_after_timeout_ms_with_no_events(make_api: Build) -> None:
    node, api = await make_api()
    await node.update("other", Increment(amount=1))
    cursor = await head_cursor(api, "k/")
    started = time.monotonic()
    response = await api.get("/v1/watch", params={"prefix": "k/", "since": cursor, "timeout_ms": "60"})
    assert time.monotonic() - started >= 0.06
    assert await response.json() == {"events": [], "cursor": cursor, "reset": None}


async def test_a_waiting_long_poll_answers_with_the_first_change(make_api: Build) -> None:
    node, api = await make_api()
    cursor = await head_cursor(api)
    poll = asyncio.ensure_future(api.get("/v1/watch", params={"since": cursor, "timeout_ms": "60000"}))
    await until(lambda: len(node.feed.subscribers) == 1)
    await node.update("k", RegisterWrite(value="v"))
    response = await asyncio.wait_for(poll, 5)
    assert [e["value"] for e in (await response.json())["events"]] == ["v"]
    await until(lambda: not node.feed.subscribers)


async def test_resuming_with_since_after_a_reconnect_has_no_gap_and_no_repeat(make_api: Build) -> None:
    node, api = await make_api()
    start = await head_cursor(api, "a/")
    async with stream(api, prefix="a/", since=start) as events:
        for i in (1, 2, 3):
            await node.update(f"a/{i}", Increment(amount=1))
        seen = await events.take(3)
    last = seen[-1].id
    assert last is not None
    await node.update("a/2", Increment(amount=1))  # written while no one watched
    await node.update("b/1", Increment(amount=1))
    await node.update("a/4", Increment(amount=1))
    async with stream(api, prefix="a/", since=last) as events:
        resumed = await events.take(2)
        await node.update("a/5", Increment(amount=1))
        live = await events.next()
    assert [(json.loads(e.data)["key"], json.loads(e.data)["value"]) for e in [*resumed, live]] == \
        [("a/2", 2), ("a/4", 1), ("a/5", 1)]
    # an EventSource reconnecting sends Last-Event-ID instead: the same resume
    response = await api.get("/v1/watch", params={"prefix": "a/", "timeout_ms": "1"},
                             headers={"Last-Event-ID": last})
    assert [e["key"] for e in (await response.json())["events"]] == ["a/2", "a/4", "a/5"]


async def test_resume_across_a_durable_node_restart(make_api: Build, disk_config: ServerConfig) -> None:
    node = Node(disk_config)
    await node.start()
    async with TestClient(TestServer(create_app(node))) as api:
        cursor = await head_cursor(api)
        await node.update("k", Increment(amount=1))
    node._running = False  # killed: the log stays behind
    await node.storage.close()
    node, api = await make_api(in_memory=False, data_dir=disk_config.data_dir, node_id=disk_config.node_id,
                               checkpoint_interval_s=3600)
    response = await api.get("/v1/watch", params={"since": cursor, "timeout_ms": "1"})
    body = await response.json()
    assert [(e["key"], e["value"], e["origin"]) for e in body["events"]] == [("k", 1, "unknown")]


@pytest.mark.parametrize("since", ["garbage", "v1.0123456789abcdef.1", "v1.0123456789abcdef.007.n1"])
async def test_a_malformed_cursor_is_a_400(make_api: Build, since: str) -> None:
    _, api = await make_api()
    for headers in ({}, SSE):
        response = await api.get("/v1/watch", params={"since": since}, headers=headers)
        assert response.status == 400
        assert (await response.json())["error"]["code"] == "invalid_option"


@pytest.mark.parametrize("query", ["?limit=3", "?timeout_ms=0", "?timeout_ms=60001", "?prefix=a&prefix=b"])
async def test_unknown_and_bad_options_are_400(make_api: Build, query: str) -> None:
    _, api = await make_api()
    response = await api.get("/v1/watch" + query)
    assert response.status == 400 and (await response.json())["error"]["code"] == "invalid_option"


async def test_another_nodes_cursor_is_a_reset_first_in_both_forms(make_api: Build) -> None:
    node, api = await make_api()
    foreign = str(Cursor("n2", node.feed.epoch, 0))
    response = await api.get("/v1/watch", params={"since": foreign, "prefix": "u/"})
    body = await response.json()
    assert body["events"] == [] and body["reset"]["reason"].startswith("cursor of another node")
    assert body["cursor"] == body["reset"]["cursor"] and "GET /v1/kv?prefix=u%2F" in body["reset"]["resync"]
    async with stream(api, since=foreign) as events:
        reset = await events.next()
        await node.update("k", Increment(amount=1))
        after = await events.next()
    assert reset.event == "reset" and reset.id is None
    assert set(json.loads(reset.data)) == {"reason", "cursor", "resync"}
    assert after.event == "change"  # the stream carries on from the reset's cursor


async def test_the_token_guards_the_feed(make_api: Build) -> None:
    _, api = await make_api(api_token="secret")
    assert (await api.get("/v1/watch", params={"timeout_ms": "1"})).status == 401
    response = await api.get("/v1/watch", params={"timeout_ms": "1"}, headers={"Authorization": "Bearer secret"})
    assert response.status == 200


async def test_a_consumer_that_never_reads_stays_bounded_and_gets_a_slow_consumer_reset(make_api: Build) -> None:
    node, api = await make_api()
    node.feed.max_pending_keys = 8
    loop = asyncio.get_running_loop()
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    try:
        await loop.sock_connect(sock, ("127.0.0.1", api.server.port))
        await loop.sock_sendall(sock, b"GET /v1/watch HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n")
        received = b""
        async with asyncio.timeout(5):
            while b": watching" not in received:
                received += await loop.sock_recv(sock, 4096)
        (subscriber,) = node.feed.subscribers
        big = "x" * 50_000
        for i in range(2000):  # the socket's buffers fill, the handler blocks in its write, the subscriber fills
            await node.update(f"big/{i}", RegisterWrite(value=big))
            assert len(subscriber) <= 8
            if subscriber.resets:
                break
            for _ in range(3):  # the handler's turns: it takes what is pending and writes it while it can
                await asyncio.sleep(0)
        assert subscriber.resets == 1
        assert i > 16  # it did deliver until the connection stopped taking more
        received = b""
        async with asyncio.timeout(10):  # reading again: the reset comes through, then the stream carries on
            while b"event: reset" not in received:
                received = received[-200:] + await loop.sock_recv(sock, 1 << 16)
            while b"\n\n" not in received.partition(b"event: reset")[2]:
                received += await loop.sock_recv(sock, 1 << 16)
        assert SLOW_CONSUMER.encode() in received.partition(b"event: reset")[2]
    finally:
        sock.close()
    await until(lambda: not node.feed.subscribers)


async def test_a_client_that_hangs_up_frees_its_subscriber(make_api: Build) -> None:
    node, api = await make_api()
    async with stream(api):
        assert len(node.feed.subscribers) == 1
    await until(lambda: not node.feed.subscribers)


async def test_shutting_the_server_down_ends_open_streams_at_once(make_api: Build) -> None:
    node = Node(ServerConfig(in_memory=True, node_id="n1"))
    await node.start()
    server = TestServer(create_app(node))
    await server.start_server()
    try:
        async with aiohttp.ClientSession() as session, \
                session.get(server.make_url("/v1/watch"), headers=SSE) as response:
            await asyncio.wait_for(response.content.readuntil(b"\n\n"), 5)
            started = time.monotonic()
            await asyncio.wait_for(server.close(), 10)
            assert time.monotonic() - started < 5
            assert not node.feed.subscribers
    finally:
        await node.stop()


async def test_the_client_resumes_after_a_dropped_connection_from_its_last_cursor(make_api: Build) -> None:
    node, api = await make_api()
    retries: list[tuple[BaseException | None, str | None]] = []
    got: asyncio.Queue[WatchEvent] = asyncio.Queue()
    async with RumorClient(str(api.make_url(""))) as client:
        start = (await client.poll_changes("w/", timeout_ms=1))["cursor"]

        async def follow() -> None:
            events = client.watch("w/", start, on_retry=lambda e, c: retries.append((e, c)), retry_initial_s=0.01)
            async with contextlib.aclosing(events):
                async for event in events:
                    await got.put(event)

        task = asyncio.create_task(follow())
        try:
            await node.update("w/1", Increment(amount=1))
            first = await asyncio.wait_for(got.get(), 5)
            for subscriber in node.feed.subscribers:  # the node ends the stream (as a restart would)
                subscriber.close()
            await until(lambda: bool(retries))
            await node.update("w/2", Increment(amount=1))
            second = await asyncio.wait_for(got.get(), 5)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    assert (first.kind, first.data["key"], second.data["key"]) == ("change", "w/1", "w/2")
    assert retries[0] == (None, first.cursor)
    assert got.empty()


async def test_the_client_raises_for_a_malformed_cursor(make_api: Build) -> None:
    from rumor.server.client import RumorHTTPError

    _, api = await make_api()
    async with RumorClient(str(api.make_url(""))) as client:
        with pytest.raises(RumorHTTPError) as raised:
            await anext(client.watch(since="nope"))
    assert raised.value.status == 400


async def test_rumor_watch_prints_one_line_per_event(make_api: Build, capsys: pytest.CaptureFixture[str]) -> None:
    node, api = await make_api()
    cursor = await head_cursor(api)
    await node.update("cli/name", RegisterWrite(value="ada"))
    await node.update("cli/gone", Increment(amount=1))
    await node.delete("cli/gone")
    await node.update("elsewhere", Increment(amount=1))
    status = await asyncio.to_thread(cli.main, ["watch", "cli/", "--node", str(api.make_url("")), "--since", cursor,
                                                "--count", "2"])
    assert status == 0
    assert capsys.readouterr().out.splitlines() == ['cli/name register "ada" (local)',
                                                    "cli/gone counter deleted (local)"]


def test_watch_lines_for_a_reset() -> None:
    reset = WatchEvent("reset", {"reason": "slow consumer", "cursor": "c", "resync": "list, then watch"})
    assert cli.watch_line(reset) == "reset (slow consumer): list, then watch"
