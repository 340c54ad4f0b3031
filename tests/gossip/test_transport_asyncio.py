"""AsyncioTransport on real loopback sockets: datagrams, streams, limits, timeouts, and encryption policy."""

from __future__ import annotations

import asyncio
import struct
from collections.abc import AsyncIterator, Callable

import pytest
from loopback import ipv6_available

from rumor.gossip.address import parse_address
from rumor.gossip.clock import Address
from rumor.gossip.security import Keyring
from rumor.gossip.transport import (
    CountingTransport,
    FrameTooLargeError,
    KeyMismatchError,
    PeerTimeoutError,
    PeerUnreachableError,
    RemoteHandlerError,
    Transport,
    TransportClosedError,
)
from rumor.gossip.transport_asyncio import AsyncioTransport

pytestmark = pytest.mark.integration

KEY = bytes(range(32))
OTHER_KEY = bytes(range(1, 33))
WAIT_S = 5.0



class Inbox:
    """Collects datagrams and wakes waiters as they arrive (event-driven, no polling)."""

    def __init__(self) -> None:
        self.packets: list[tuple[bytes, Address]] = []
        self._event = asyncio.Event()

    def __call__(self, data: bytes, addr: Address) -> None:
        self.packets.append((data, addr))
        self._event.set()

    async def wait_for(self, count: int) -> list[tuple[bytes, Address]]:
        async with asyncio.timeout(WAIT_S):
            while len(self.packets) < count:
                self._event.clear()
                await self._event.wait()
        return self.packets


async def echo(data: bytes, addr: Address) -> bytes:
    return b"echo:" + data


async def make(
    host: str = "127.0.0.1",
    keyring: Keyring | None = None,
    handler: Callable[[bytes, Address], object] = echo,
    **kwargs: object,
) -> tuple[AsyncioTransport, Inbox]:
    transport = AsyncioTransport((host, 0), keyring, **kwargs)  # type: ignore[arg-type]
    inbox = Inbox()
    await transport.start(inbox, handler)  # type: ignore[arg-type]
    return transport, inbox


@pytest.fixture
async def pair() -> AsyncIterator[tuple[AsyncioTransport, Inbox, AsyncioTransport, Inbox]]:
    a, inbox_a = await make()
    b, inbox_b = await make()
    yield a, inbox_a, b, inbox_b
    await a.close()
    await b.close()


def test_asyncio_transport_satisfies_the_protocols() -> None:
    transport = AsyncioTransport(("127.0.0.1", 0))
    assert isinstance(transport, Transport)
    assert isinstance(transport, CountingTransport)


async def test_datagrams_flow_both_ways_and_are_counted(pair: tuple) -> None:
    a, inbox_a, b, inbox_b = pair
    a.send_packet(b.local_address, b"\x01hello")
    b.send_packet(a.local_address, b"\x01world")
    [(data, sender)] = await inbox_b.wait_for(1)
    assert data == b"\x01hello"
    assert sender == a.local_address
    assert (await inbox_a.wait_for(1))[0][0] == b"\x01world"
    assert a.stats.packets_sent == 1 and a.stats.bytes_sent == 6
    assert b.stats.packets_received == 1 and b.stats.bytes_received == 6


async def test_udp_and_tcp_share_one_port(pair: tuple) -> None:
    a, _, b, inbox_b = pair
    assert await a.request(b.local_address, b"ping", timeout_s=WAIT_S) == b"echo:ping"
    a.send_packet(b.local_address, b"\x02")
    await inbox_b.wait_for(1)
    assert b.stats.streams_accepted == 1


async def test_oversized_datagrams_are_dropped_on_both_ends(pair: tuple) -> None:
    a, _, b, inbox_b = pair
    a.send_packet(b.local_address, bytes(a.max_packet_bytes + 1))
    assert a.stats.dropped["send_oversize"] == 1
    big = AsyncioTransport(("127.0.0.1", 0), max_packet_bytes=9000)
    await big.start(Inbox(), echo)
    try:
        big.send_packet(b.local_address, bytes(5000))
        big.send_packet(b.local_address, b"\x01after")
        [(data, _)] = await inbox_b.wait_for(1)
        assert data == b"\x01after"
        assert b.stats.dropped["oversize"] == 1
    finally:
        await big.close()


async def test_request_round_trip_and_many_concurrent(pair: tuple) -> None:
    a, _, b, _ = pair
    replies = await asyncio.gather(*(a.request(b.local_address, bytes([i]), WAIT_S) for i in range(20)))
    assert replies == [b"echo:" + bytes([i]) for i in range(20)]
    assert a.stats.streams_opened == 20


async def test_large_stream_frame_within_limit(pair: tuple) -> None:
    a, _, b, _ = pair
    payload = bytes(range(256)) * 4096  # 1 MiB
    assert await a.request(b.local_address, payload, WAIT_S) == b"echo:" + payload


async def test_frame_over_the_limit_is_refused_by_the_sender(pair: tuple) -> None:
    a, _, b, _ = pair
    with pytest.raises(FrameTooLargeError) as info:
        await a.request(b.local_address, bytes(a.max_stream_bytes + 1), WAIT_S)
    assert info.value.limit == a.max_stream_bytes


async def test_announced_frame_over_the_limit_closes_the_connection() -> None:
    server, _ = await make(max_stream_bytes=1000)
    try:
        reader, writer = await asyncio.open_connection(*server.local_address)
        writer.write(struct.pack(">I", 10_000_000) + b"x" * 100)
        await writer.drain()
        async with asyncio.timeout(WAIT_S):
            assert await reader.read() == b""
        writer.close()
        assert server.stats.dropped["frame_too_large"] == 1
    finally:
        await server.close()


async def test_handler_failure_is_reported_to_the_requester() -> None:
    async def broken(data: bytes, addr: Address) -> bytes:
        raise KeyError("no such thing")

    server, _ = await make(handler=broken)
    client, _ = await make()
    try:
        with pytest.raises(RemoteHandlerError) as info:
            await client.request(server.local_address, b"q", WAIT_S)
        assert "no such thing" in info.value.detail
        assert server.stats.dropped["request_handler_error"] == 1
    finally:
        await server.close()
        await client.close()


async def test_slow_handler_times_out_with_peer_timeout_error() -> None:
    release = asyncio.Event()

    async def stuck(data: bytes, addr: Address) -> bytes:
        await release.wait()
        return b"late"

    server, _ = await make(handler=stuck)
    client, _ = await make()
    try:
        with pytest.raises(PeerTimeoutError) as info:
            await client.request(server.local_address, b"q", timeout_s=0.2)
        assert isinstance(info.value, TimeoutError)
        assert info.value.timeout_s == 0.2
    finally:
        release.set()
        await server.close()
        await client.close()


async def test_nobody_listening_is_unreachable() -> None:
    client, _ = await make()
    ghost, _ = await make()
    address = ghost.local_address
    await ghost.close()
    try:
        with pytest.raises(PeerUnreachableError):
            await client.request(address, b"q", WAIT_S)
        client.send_packet(address, b"\x01lost")  # never raises on loss
    finally:
        await client.close()


async def test_silent_connections_are_closed_and_limited() -> None:
    server, _ = await make(max_connections=2, stream_timeout_s=0.3)
    try:
        idle = [await asyncio.open_connection(*server.local_address) for _ in range(2)]
        async with asyncio.timeout(WAIT_S):
            while server.stats.streams_accepted < 2:
                await asyncio.sleep(0.01)
        reader, writer = await asyncio.open_connection(*server.local_address)
        async with asyncio.timeout(WAIT_S):
            assert await reader.read() == b""  # over the limit: closed at once
        assert server.stats.dropped["connection_limit"] == 1
        for idle_reader, idle_writer in idle:
            async with asyncio.timeout(WAIT_S):
                assert await idle_reader.read() == b""  # idle past stream_timeout_s: closed
            idle_writer.close()
        writer.close()
    finally:
        await server.close()


async def test_server_keeps_a_connection_for_several_requests() -> None:
    server, _ = await make()
    try:
        reader, writer = await asyncio.open_connection(*server.local_address)
        for i in range(3):
            writer.write(struct.pack(">I", 2) + b"r" + bytes([i]))
            await writer.drain()
            (size,) = struct.unpack(">I", await reader.readexactly(4))
            assert await reader.readexactly(size) == b"\x00echo:r" + bytes([i])
        writer.close()
    finally:
        await server.close()


async def test_sealed_transports_talk_and_wire_bytes_include_the_seal() -> None:
    a, _ = await make(keyring=Keyring(KEY))
    b, inbox_b = await make(keyring=Keyring(KEY))
    try:
        a.send_packet(b.local_address, b"\x01secret")
        [(data, _)] = await inbox_b.wait_for(1)
        assert data == b"\x01secret"
        assert a.stats.bytes_sent == 7 + 29
        assert await a.request(b.local_address, b"q", WAIT_S) == b"echo:q"
    finally:
        await a.close()
        await b.close()


async def test_wrong_key_is_dropped_and_counted() -> None:
    a, _ = await make(keyring=Keyring(OTHER_KEY))
    b, inbox_b = await make(keyring=Keyring(KEY))
    good, _ = await make(keyring=Keyring(KEY))
    try:
        a.send_packet(b.local_address, b"\x01forged")
        good.send_packet(b.local_address, b"\x01genuine")  # sent after: arrival proves the first was handled
        [(data, _)] = await inbox_b.wait_for(1)
        assert data == b"\x01genuine"
        assert b.stats.dropped["decrypt_no_matching_key"] == 1
        with pytest.raises(KeyMismatchError) as caught:
            await a.request(b.local_address, b"q", WAIT_S)
        assert caught.value.kind == "reply", "b answered that it cannot decrypt, sealed with its key: a cannot read it"
        assert b.stats.dropped["decrypt_no_matching_key"] == 2
        assert a.stats.dropped["decrypt_no_matching_key"] == 1
    finally:
        for t in (a, b, good):
            await t.close()


async def test_plain_and_sealed_nodes_refuse_each_other() -> None:
    plain, plain_inbox = await make()
    sealed, sealed_inbox = await make(keyring=Keyring(KEY))
    try:
        plain.send_packet(sealed.local_address, b"\x01plain")
        sealed.send_packet(plain.local_address, b"\x01sealed")
        plain.send_packet(plain.local_address, b"\x01marker")
        sealed.send_packet(sealed.local_address, b"\x01marker")
        assert [d for d, _ in await plain_inbox.wait_for(1)] == [b"\x01marker"]
        assert [d for d, _ in await sealed_inbox.wait_for(1)] == [b"\x01marker"]
        assert plain.stats.dropped["sealed_refused"] == 1
        assert sealed.stats.dropped["plaintext_refused"] == 1
        with pytest.raises(KeyMismatchError) as caught:
            await plain.request(sealed.local_address, b"q", WAIT_S)
        assert caught.value.kind == "sealed"
        with pytest.raises(KeyMismatchError) as caught:
            await sealed.request(plain.local_address, b"q", WAIT_S)
        assert caught.value.kind == "plaintext"
        # each side refused the other's request, and then the answer saying so
        assert sealed.stats.dropped["plaintext_refused"] == 3
        assert plain.stats.dropped["sealed_refused"] == 3
    finally:
        await plain.close()
        await sealed.close()


@pytest.mark.skipif(not ipv6_available(), reason="this host has no IPv6 loopback (::1)")
async def test_ipv6_loopback() -> None:
    a, _ = await make("::1")
    b, inbox_b = await make("::1")
    try:
        assert a.local_address[0] == "::1"
        a.send_packet(b.local_address, b"\x01v6")
        [(data, sender)] = await inbox_b.wait_for(1)
        assert data == b"\x01v6" and sender == a.local_address
        assert await a.request(b.local_address, b"q", WAIT_S) == b"echo:q"
        assert parse_address(f"[::1]:{b.local_address[1]}") == b.local_address
    finally:
        await a.close()
        await b.close()


async def test_lifecycle_errors() -> None:
    transport = AsyncioTransport(("127.0.0.1", 0))
    assert transport.local_address == ("127.0.0.1", 0)
    with pytest.raises(TransportClosedError):
        await transport.request(("127.0.0.1", 1), b"q", 1.0)
    transport.send_packet(("127.0.0.1", 1), b"\x01")
    assert transport.stats.dropped["send_while_closed"] == 1
    await transport.start(Inbox(), echo)
    assert transport.local_address[1] != 0
    with pytest.raises(TransportClosedError):
        await transport.start(Inbox(), echo)
    await transport.close()
    await transport.close()  # idempotent
    assert not transport.running
