"""The application client: failover to the next node, op_ids on every write, counter increments never moved once
their node may have applied them, typed results, and the blocking flavour."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from rumor.server.client import RumorHTTPError
from rumor.server.cluster_client import Client, ConflictError, Item, NoNodeAvailableError, OutcomeUnknownError, SyncClient


class HangUp:
    """A TCP server on loopback that reads a request and closes the connection unanswered: to the client, a node
    that may have applied what it sent."""

    def __init__(self) -> None:
        self.requests = 0
        self.server: asyncio.Server | None = None

    async def __aenter__(self) -> str:
        async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.readuntil(b"\r\n\r\n")
            self.requests += 1
            writer.close()

        self.server = await asyncio.start_server(on_connect, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    async def __aexit__(self, *_: object) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()


async def no_sleep(_seconds: float) -> None:
    """Backoff pauses, injected: the tests wait for nothing."""


@pytest.fixture
async def urls(make_api: Callable[..., Any]) -> AsyncIterator[list[str]]:
    """Two independent live nodes (not a cluster: what one holds, the other does not)."""
    made = []
    for name in ("a", "b"):
        _, api = await make_api(node_id=name)
        made.append(str(api.make_url("")).rstrip("/"))
    yield made


def closed_port_url() -> str:
    with socket.socket() as sock:  # bound then closed: nothing listens there (connection refused)
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


async def test_requests_fail_over_to_the_next_node_and_stay_there(urls: list[str]) -> None:
    dead = closed_port_url()
    async with Client([dead, urls[0]], sleep=no_sleep) as rumor:
        item = await rumor.put("greeting", "hello")
        assert isinstance(item, Item) and (item.key, item.type, item.value, item.complete) == (
            "greeting", "register", "hello", True)
        assert rumor.current_url == urls[0]
        assert (await rumor.incr("visits", 2)) is not None  # refused connection: the increment never left
        assert (await rumor.get("visits")).value == 2  # type: ignore[union-attr]
        assert await rumor.get("missing") is None


async def test_a_counter_increment_is_not_moved_once_its_node_may_have_applied_it(urls: list[str]) -> None:
    hangup = HangUp()
    async with hangup as flaky, Client([flaky, urls[0]], sleep=no_sleep, attempts=3) as rumor:
        with pytest.raises(OutcomeUnknownError) as unknown:
            await rumor.incr("c", 1)
        assert hangup.requests == 3 and unknown.value.node == flaky  # retried on its node only, same op_id
        assert await rumor.get("c") is None  # and never sent to the other node
        assert (await rumor.add("s", "x")).value == ["x"]  # type: ignore[union-attr]  # a set add moves on


async def test_no_node_left_is_one_clear_error() -> None:
    async with Client([closed_port_url(), closed_port_url()], sleep=no_sleep, attempts=2) as rumor:
        with pytest.raises(NoNodeAvailableError, match="no node answered"):
            await rumor.get("k")


async def test_results_and_refusals_are_typed(urls: list[str]) -> None:
    async with Client(urls[:1], sleep=no_sleep) as rumor:
        await rumor.incr("n", 1)
        with pytest.raises(ConflictError) as conflict:
            await rumor.put("n", "not a counter")
        assert conflict.value.status == 409 and conflict.value.code == "type_mismatch"
        with pytest.raises(RumorHTTPError) as bad:
            await rumor.incr("n", 0)
        assert bad.value.status == 400
        results = await rumor.batch([{"key": "n", "type": "counter", "increment": 2},
                                     {"key": "t", "type": "set", "add": ["y"]}])
        assert [r["status"] for r in results] == [200, 200]
        many = await rumor.get_many(["n", "t", "nothing"])
        assert (many["n"].value, many["t"].value, many["nothing"]) == (3, ["y"], None)  # type: ignore[union-attr]
        assert await rumor.delete("t") is None and await rumor.get("t") is None


async def test_the_blocking_client_makes_the_same_calls(urls: list[str]) -> None:
    def use() -> tuple[Any, Any, str]:
        with SyncClient([closed_port_url(), urls[1]], sleep=no_sleep) as rumor:
            rumor.put("k", {"v": 1})
            rumor.incr("c", 5)
            return rumor.get("k"), rumor.get("c"), rumor.current_url

    k, c, current = await asyncio.to_thread(use)  # the nodes serve on this loop meanwhile
    assert (k.value, c.value, current) == ({"v": 1}, 5, urls[1])
