"""The change feed across real node processes: a watcher on n3 sees writes made on n1 and n2 as they arrive by
gossip (origin "peer"), and its own node's writes as "local"."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from rumor.server.client import WatchEvent
from rumor.server.local_cluster import LocalCluster

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]


async def test_a_watcher_on_n3_sees_writes_made_on_the_other_nodes(cluster3: LocalCluster) -> None:
    cluster = cluster3
    watcher = cluster["n3"].api()
    cursor = (await watcher.poll_changes("watched/", timeout_ms=1))["cursor"]  # from here on nothing is missed
    wanted = {"watched/from-n1": "hello", "watched/from-n2": 7, "watched/from-n3": "mine"}
    seen: dict[str, WatchEvent] = {}

    async def follow() -> None:
        async with contextlib.aclosing(watcher.watch("watched/", cursor)) as events:
            async for event in events:
                assert event.kind == "change", event.data
                seen[event.data["key"]] = event
                if all(key in seen and seen[key].data["value"] == value for key, value in wanted.items()):
                    return

    following = asyncio.create_task(follow())
    try:
        await cluster["n1"].api().put("watched/from-n1", "hello")
        await cluster["n2"].api().incr("watched/from-n2", 7)
        await watcher.put("watched/from-n3", "mine")
        await cluster["n1"].api().put("unwatched/key", "not under the prefix")
        await asyncio.wait_for(asyncio.shield(following), 15)
    finally:
        following.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await following
    assert set(seen) == set(wanted)
    assert {key: event.data["origin"] for key, event in seen.items()} == {
        "watched/from-n1": "peer", "watched/from-n2": "peer", "watched/from-n3": "local"}
    assert all(event.cursor.endswith(".n3") for event in seen.values())  # cursors are the watched node's
