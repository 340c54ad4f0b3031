"""`FaultInjectingTransport` in isolation, over a recording fake transport: what is blocked, what passes, counters."""

from __future__ import annotations

import pytest

from rumor.gossip.clock import Address
from rumor.gossip.fault_injection import FaultInjectingTransport
from rumor.gossip.transport import PacketHandler, PeerUnreachableError, RequestHandler, Transport

A: Address = ("127.0.0.1", 7001)
B: Address = ("127.0.0.1", 7002)


class Recording:
    """The smallest Transport: remembers what was sent and hands back what the test injects."""

    def __init__(self) -> None:
        self.sent: list[tuple[Address, bytes]] = []
        self.requests: list[Address] = []
        self.on_packet: PacketHandler | None = None

    @property
    def local_address(self) -> Address:
        return ("127.0.0.1", 7000)

    async def start(self, on_packet: PacketHandler, on_request: RequestHandler) -> None:
        self.on_packet = on_packet

    def send_packet(self, addr: Address, data: bytes) -> None:
        self.sent.append((addr, data))

    async def request(self, addr: Address, data: bytes, timeout_s: float) -> bytes:
        self.requests.append(addr)
        return b"reply:" + data

    async def close(self) -> None:
        pass


async def test_blocks_both_directions_for_blocked_addresses_only_and_heals() -> None:
    inner = Recording()
    faults = FaultInjectingTransport(inner)
    assert isinstance(faults, Transport)
    received: list[tuple[bytes, Address]] = []

    async def no_requests(data: bytes, sender: Address) -> bytes:
        raise AssertionError("not used")

    await faults.start(lambda data, sender: received.append((data, sender)), no_requests)
    faults.block([A])
    faults.send_packet(A, b"to-a")
    faults.send_packet(B, b"to-b")
    assert inner.on_packet is not None
    inner.on_packet(b"from-a", A)
    inner.on_packet(b"from-b", B)
    with pytest.raises(PeerUnreachableError):
        await faults.request(A, b"x", 1.0)
    assert await faults.request(B, b"x", 1.0) == b"reply:x"
    assert inner.sent == [(B, b"to-b")]
    assert received == [(b"from-b", B)]
    assert inner.requests == [B]
    assert dict(faults.dropped) == {"partition_out": 1, "partition_in": 1, "partition_stream": 1}

    faults.heal()
    faults.send_packet(A, b"again")
    inner.on_packet(b"back", A)
    assert inner.sent[-1] == (A, b"again") and received[-1] == (b"back", A)
    assert faults.blocked == frozenset()
