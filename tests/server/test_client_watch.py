"""The application client's change feed (`Client.watch`, `server.cluster_watch`): resume on the same node after the
server drops the stream, failover to the next node with a snapshot from it, resets surfaced or turned into
snapshots (paged), the blocking flavour, and giving up. Live in-process nodes on loopback; every wait has a
deadline."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from typing import Any

import pytest

from rumor.server import cluster_watch
from rumor.server.client import RumorClient, RumorHTTPError
from rumor.server.cluster_client import Change, Client, NoNodeAvailableError, Reset, Snapshot, SyncClient
from rumor.server.cluster_watch import ClusterWatchEvent
from rumor.server.node import Node
from rumor.server.updates import Increment, RegisterWrite, SetChange
from rumor.server.watch import Cursor

Build = Callable[..., Any]


async def no_sleep(_seconds: float) -> None:
    """Backoff pauses, injected: the tests wait for nothing."""


def url_of(api: Any) -> str:
    return str(api.make_url("")).rstrip("/")


def closed_port_url() -> str:
    with socket.socket() as sock:  # bound then closed: nothing listens there (connection refused)
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


async def head(url: str, prefix: str) -> str:
    """The node's current cursor: a watch from it sees every later change."""
    async with RumorClient(url) as client:
        return str((await client.poll_changes(prefix, timeout_ms=1))["cursor"])


def foreign_cursor() -> str:
    return str(Cursor("elsewhere", "0123456789abcdef", 1))


class Watcher:
    """`Client.watch` iterated by a task into a queue, so the test can act between events."""

    def __init__(self, events: AsyncGenerator[ClusterWatchEvent, None]) -> None:
        self.queue: asyncio.Queue[ClusterWatchEvent] = asyncio.Queue()
        self._events = events
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        async with contextlib.aclosing(self._events) as events:
            async for event in events:
                await self.queue.put(event)

    async def next(self, timeout_s: float = 5.0) -> ClusterWatchEvent:
        return await asyncio.wait_for(self.queue.get(), timeout_s)

    async def stop(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


@contextlib.asynccontextmanager
async def watching(client: Client, prefix: str, since: str | None, **options: Any) -> AsyncIterator[Watcher]:
    watcher = Watcher(client.watch(prefix, since, **options))
    try:
        yield watcher
    finally:
        await watcher.stop()


async def test_it_resumes_on_the_same_node_after_the_server_drops_the_stream(make_api: Build) -> None:
    node, api = await make_api(node_id="a")
    url = url_of(api)
    async with Client([url], sleep=no_sleep) as rumor, watching(rumor, "w/", await head(url, "w/")) as watcher:
        await node.update("w/1", Increment(amount=1))
        first = await watcher.next()
        dropped = node.feed.subscribers
        for subscriber in dropped:  # the node ends the stream, as a restart would
            subscriber.close()
        await node.update("w/2", Increment(amount=2))  # while the watcher is away
        second = await watcher.next()
        assert node.feed.subscribers and not set(node.feed.subscribers) & set(dropped)  # a new connection
        await node.update("w/1", Increment(amount=1))
        third = await watcher.next()
    assert [type(e) for e in (first, second, third)] == [Change, Change, Change]
    assert [(e.key, e.value, e.node) for e in (first, second, third)] == [  # type: ignore[union-attr]
        ("w/1", 1, url), ("w/2", 2, url), ("w/1", 2, url)]
    assert watcher.queue.empty()  # nothing repeated


async def test_it_fails_over_to_the_next_node_with_a_snapshot_of_it(make_api: Build) -> None:
    node_a, api_a = await make_api(node_id="a")
    node_b, api_b = await make_api(node_id="b")  # independent nodes: b holds only what is written on b
    a, b = url_of(api_a), url_of(api_b)
    await node_b.update("w/b1", RegisterWrite(value="on b"))
    await node_b.update("w/gone", RegisterWrite(value="x"))
    await node_b.delete("w/gone")
    await node_b.update("other/b", RegisterWrite(value="not watched"))
    async with Client([a, b], sleep=no_sleep) as rumor, watching(rumor, "w/", await head(a, "w/")) as watcher:
        await node_a.update("w/a1", RegisterWrite(value="on a"))
        from_a = await watcher.next()
        await api_a.close()  # node a goes away: its stream ends and its port refuses
        await node_a.stop()
        resynced = await watcher.next()
        await node_b.update("w/b2", SetChange(add=("y",)))
        from_b = await watcher.next()
        assert rumor.current_url == b
    assert isinstance(from_a, Change) and (from_a.key, from_a.value, from_a.node) == ("w/a1", "on a", a)
    assert isinstance(resynced, Snapshot) and resynced.node == b and "another node" in resynced.reason
    assert {k: i.value for k, i in resynced.items.items()} == {"w/b1": "on b"}  # b's view, all of it
    assert resynced.cursor.endswith(".b")
    assert isinstance(from_b, Change) and (from_b.key, from_b.value, from_b.node) == ("w/b2", ["y"], b)


async def test_a_reset_is_surfaced_typed_when_resync_is_off(make_api: Build) -> None:
    node, api = await make_api(node_id="a")
    await node.update("r/before", Increment(amount=1))
    async with Client([url_of(api)], sleep=no_sleep) as rumor, \
            watching(rumor, "r/", foreign_cursor(), resync=False) as watcher:
        reset = await watcher.next()
        await node.update("r/after", Increment(amount=3))
        after = await watcher.next()
    assert isinstance(reset, Reset) and "another node" in reset.reason
    assert reset.cursor.endswith(".a") and "GET /v1/kv?prefix=r%2F" in reset.resync
    assert isinstance(after, Change) and (after.key, after.value) == ("r/after", 3)
    assert int(after.cursor.split(".")[2]) > int(reset.cursor.split(".")[2])


async def test_a_reset_becomes_a_snapshot_read_page_by_page_then_changes_follow(
        make_api: Build, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cluster_watch, "SNAPSHOT_PAGE", 2)
    node, api = await make_api(node_id="a")
    for i in range(5):
        await node.update(f"s/{i}", Increment(amount=i + 1))
    await node.update("s/emptied", SetChange(add=("z",)))
    await node.update("s/emptied", SetChange(remove=("z",)))
    async with Client([url_of(api)], sleep=no_sleep) as rumor, watching(rumor, "s/", foreign_cursor()) as watcher:
        taken = await watcher.next()
        await node.update("s/0", Increment(amount=10))
        changed = await watcher.next()
    assert isinstance(taken, Snapshot)
    assert {k: i.value for k, i in taken.items.items()} == {f"s/{i}": i + 1 for i in range(5)}
    assert isinstance(changed, Change) and (changed.key, changed.value) == ("s/0", 11)
    assert watcher.queue.empty()


async def test_the_blocking_client_watches_too(make_api: Build) -> None:
    node, api = await make_api(node_id="a")
    url = url_of(api)
    since = await head(url, "b/")
    await node.update("b/k", RegisterWrite(value="v"))

    def first_event() -> ClusterWatchEvent:
        with SyncClient([closed_port_url(), url], sleep=no_sleep) as rumor, \
                contextlib.closing(rumor.watch("b/", since)) as events:
            return next(events)

    event = await asyncio.to_thread(first_event)  # the node serves on this loop meanwhile
    assert isinstance(event, Change) and (event.key, event.value, event.node) == ("b/k", "v", url)
    await asyncio.wait_for(until_no_subscribers(node), 5)  # closing the generator hung up


async def until_no_subscribers(node: Node) -> None:
    while node.feed.subscribers:
        await asyncio.sleep(0.01)


async def test_it_gives_up_when_no_node_answers_and_raises_for_a_malformed_cursor(make_api: Build) -> None:
    async with Client([closed_port_url(), closed_port_url()], sleep=no_sleep) as rumor:
        with pytest.raises(NoNodeAvailableError, match="no node answered the watch"):
            await anext(rumor.watch("x/", give_up_s=0))
    _, api = await make_api()
    async with Client([url_of(api)], sleep=no_sleep) as rumor:
        with pytest.raises(RumorHTTPError) as bad:
            await anext(rumor.watch("x/", "not-a-cursor"))
    assert bad.value.status == 400
