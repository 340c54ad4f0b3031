"""Slow clients: a connection whose request head is not complete within the deadline is closed; others are not.

Real sockets on loopback with a 0.2 s deadline; every wait is bounded. These also pin the aiohttp internals the
handler reads (see `server.header_timeout`): if an upgrade renames them, the partial-head cases fail here.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from rumor.server.config import ServerConfig, load_config
from rumor.server.errors import ConfigError
from rumor.server.http_server import NodeRunner

pytestmark = pytest.mark.integration

DEADLINE_S = 0.2
BOUND_S = 5.0  # far above the deadline: only a server that never closes runs into it


async def _echo(request: web.Request) -> web.Response:
    body = await request.read()
    return web.Response(text=f"got {len(body)}")


@pytest.fixture
async def server() -> AsyncIterator[tuple[NodeRunner, int]]:
    app = web.Application()
    app.router.add_route("*", "/", _echo)
    runner = NodeRunner(app, header_timeout_s=DEADLINE_S, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    yield runner, port
    await runner.cleanup()


async def closed_after(reader: asyncio.StreamReader) -> tuple[float, bytes]:
    """Seconds until the server closes the connection, and whatever it sent before."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    try:
        data = await asyncio.wait_for(reader.read(), BOUND_S)
    except ConnectionError:  # a write of ours hit the closed socket first: closed all the same
        data = b""
    return loop.time() - started, data


async def request(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, body: bytes = b"") -> bytes:
    writer.write(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), BOUND_S)
    length = int(next(line for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:"))[15:])
    return await asyncio.wait_for(reader.readexactly(length), BOUND_S)


async def test_a_partial_head_is_closed_at_the_deadline(server: tuple[NodeRunner, int]) -> None:
    runner, port = server
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n")  # no blank line: the head never completes
    elapsed, data = await closed_after(reader)
    assert data == b"" and DEADLINE_S * 0.9 <= elapsed < BOUND_S
    assert runner.header_timeouts == 1
    writer.close()


async def test_a_connection_that_sends_nothing_is_closed_too(server: tuple[NodeRunner, int]) -> None:
    runner, port = server
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    _, data = await closed_after(reader)
    assert data == b"" and runner.header_timeouts == 1
    writer.close()


async def test_a_trickled_head_on_a_kept_alive_connection_is_closed(server: tuple[NodeRunner, int]) -> None:
    runner, port = server
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    assert await request(reader, writer, b"abc") == b"got 3"
    await asyncio.sleep(DEADLINE_S * 2)  # idle between requests is keep-alive's business, not the head deadline's
    assert await request(reader, writer) == b"got 0"
    loop = asyncio.get_running_loop()
    started = loop.time()
    writer.write(b"GET / HTTP/1.1\r\n")
    # a byte every half deadline: each arrives in time, the head as a whole does not (the clock is not reset)
    while not reader.at_eof() and loop.time() - started < BOUND_S:
        await asyncio.sleep(DEADLINE_S / 2)
        try:
            writer.write(b"X")
            await writer.drain()
        except ConnectionError:
            break
    await closed_after(reader)
    assert loop.time() - started < 4 * DEADLINE_S and runner.header_timeouts == 1
    writer.close()


async def test_a_slow_body_after_a_complete_head_is_not_cut(server: tuple[NodeRunner, int]) -> None:
    runner, port = server
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\n")
    for chunk in (b"a", b"b", b"c", b"d"):
        await asyncio.sleep(DEADLINE_S / 2)  # the body takes twice the head deadline
        writer.write(chunk)
    answer = await asyncio.wait_for(reader.readuntil(b"got 4"), BOUND_S)
    assert answer.startswith(b"HTTP/1.1 200") and runner.header_timeouts == 0
    writer.close()


def test_the_deadline_must_be_positive_and_is_configurable() -> None:
    with pytest.raises(ValueError):
        NodeRunner(web.Application(), header_timeout_s=0)
    with pytest.raises(ConfigError):
        ServerConfig(http_header_timeout_s=0)
    assert ServerConfig().http_header_timeout_s == 10.0
    assert load_config(env={"RUMOR_HTTP_HEADER_TIMEOUT_S": "2.5"}).http_header_timeout_s == 2.5
