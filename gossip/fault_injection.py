"""A `Transport` wrapper that cuts this node off from chosen peers: the real-socket counterpart of the simulator's
partitions, for demos and multi-process tests.

Why a wrapper and not firewall rules: everything runs on loopback as an ordinary user, and the protocol above must
see exactly what a real partition looks like (datagrams vanish, streams fail to connect) without knowing it is
being tested. The wrapper knows nothing about what the bytes mean.

What is blocked, for each blocked address:
- datagrams we send to it are dropped silently (a lost packet, as on a real network);
- datagrams that arrive from it are dropped before the protocol sees them (UDP replies come from the peer's bound
  port, which is its gossip address);
- stream requests we open to it fail with `PeerUnreachableError` (as a refused or reset connection would).

Incoming streams cannot be attributed: on loopback their source is an ephemeral port, not the peer's gossip address.
A full partition is therefore made by blocking on both sides (which is what `rumor demo` and the tests do); blocked
on one side only, the peer's own stream requests still get through, as with a one-way firewall rule.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from rumor.gossip.clock import Address
from rumor.gossip.transport import PacketHandler, PeerUnreachableError, RequestHandler, Transport, TransportStats


class FaultInjectingTransport:
    """Wraps ``inner``; `block` replaces the blocked set, `heal` empties it. ``dropped`` counts refusals by reason."""

    def __init__(self, inner: Transport) -> None:
        self.inner = inner
        self._blocked: frozenset[Address] = frozenset()
        self.dropped: Counter[str] = Counter()

    @property
    def blocked(self) -> frozenset[Address]:
        return self._blocked

    def block(self, addresses: Iterable[Address]) -> None:
        """Cut off exactly these addresses (anything blocked before and not listed is reachable again)."""
        self._blocked = frozenset((str(host), int(port)) for host, port in addresses)

    def heal(self) -> None:
        self._blocked = frozenset()

    # -- Transport ---------------------------------------------------------------------------------------------------

    @property
    def local_address(self) -> Address:
        return self.inner.local_address

    @property
    def stats(self) -> TransportStats | None:
        """The wrapped transport's wire counters, when it keeps them (so the driver still reports real bytes)."""
        return getattr(self.inner, "stats", None)

    async def start(self, on_packet: PacketHandler, on_request: RequestHandler) -> None:
        def filtered(data: bytes, sender: Address) -> None:
            if sender in self._blocked:
                self.dropped["partition_in"] += 1
                return
            on_packet(data, sender)

        await self.inner.start(filtered, on_request)

    def send_packet(self, addr: Address, data: bytes) -> None:
        if addr in self._blocked:
            self.dropped["partition_out"] += 1
            return
        self.inner.send_packet(addr, data)

    async def request(self, addr: Address, data: bytes, timeout_s: float) -> bytes:
        if addr in self._blocked:
            self.dropped["partition_stream"] += 1
            raise PeerUnreachableError(addr, "blocked by fault injection")
        return await self.inner.request(addr, data, timeout_s)

    async def close(self) -> None:
        await self.inner.close()

    def __repr__(self) -> str:
        return f"FaultInjectingTransport({self.inner!r}, blocked={sorted(self._blocked)})"


__all__ = ["FaultInjectingTransport"]
