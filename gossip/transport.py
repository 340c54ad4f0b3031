"""The seam between the membership protocol and the network: best-effort packets plus reliable request/response streams.

Why two channels (as in HashiCorp memberlist): probes and gossip want cheap, lossy datagrams, where a lost packet is
just information the protocol already handles; push-pull state exchange and application requests want an answer or a
clear error. Everything above this seam is written against `Transport`, so the same driver runs over real UDP/TCP
(`gossip.transport_asyncio.AsyncioTransport`) or an in-memory network.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from rumor.gossip.address import format_address
from rumor.gossip.clock import Address
from rumor.gossip.errors import GossipError

PacketHandler = Callable[[bytes, Address], None]
"""Called once per received datagram with its (already opened) payload and the sender's address."""

RequestHandler = Callable[[bytes, Address], Awaitable[bytes]]
"""Answers one stream request; the returned bytes go back to the requester as the response frame."""

STREAM_LENGTH_PREFIX_BYTES = 4
"""Stream frames are a 4-byte big-endian length followed by that many bytes."""


class TransportError(GossipError, OSError):
    """The network could not carry a message: bad address, socket failure, closed or oversized stream."""

    def __init__(self, addr: Address | None, detail: str) -> None:
        super().__init__(f"{format_address(addr)}: {detail}" if addr is not None else detail)
        self.addr = addr
        self.detail = detail


class PeerUnreachableError(TransportError):
    """A stream connection to the peer could not be opened, or broke before the response arrived."""


class FrameTooLargeError(TransportError):
    """A stream frame (sent or announced by the peer) exceeds the configured maximum; the connection is closed."""

    def __init__(self, addr: Address | None, size: int, limit: int) -> None:
        super().__init__(addr, f"stream frame of {size} bytes exceeds the {limit}-byte limit")
        self.size = size
        self.limit = limit


class RemoteHandlerError(TransportError):
    """The peer received the request but its handler failed; ``detail`` carries the peer's short explanation."""


class KeyMismatchError(TransportError):
    """The peer and this node do not share a cluster key, so no exchange can succeed until an operator fixes it.

    ``kind`` says how it showed: ``"reply"`` (the peer's reply failed to decrypt), ``"request"`` (the peer could not
    decrypt our request and said so), ``"plaintext"`` (the reply is not encrypted, but we have a key) or
    ``"sealed"`` (the reply is encrypted, but we have no key).
    """

    def __init__(self, addr: Address, kind: str, detail: str) -> None:
        super().__init__(addr, detail)
        self.kind = kind


class PeerTimeoutError(GossipError, TimeoutError):
    """The peer did not answer a stream request within the allotted time."""

    def __init__(self, addr: Address, timeout_s: float) -> None:
        super().__init__(f"{format_address(addr)}: no response within {timeout_s:.3f}s")
        self.addr = addr
        self.timeout_s = timeout_s


class TransportClosedError(TransportError):
    """The transport was used before `start()` or after `close()`."""

    def __init__(self, detail: str = "transport is not running") -> None:
        super().__init__(None, detail)


@runtime_checkable
class Transport(Protocol):
    """What the membership driver needs from a network. Implementations never raise from `send_packet` on loss."""

    @property
    def local_address(self) -> Address: ...

    async def start(self, on_packet: PacketHandler, on_request: RequestHandler) -> None: ...

    def send_packet(self, addr: Address, data: bytes) -> None: ...

    async def request(self, addr: Address, data: bytes, timeout_s: float) -> bytes: ...

    async def close(self) -> None: ...


@dataclass
class TransportStats:
    """Wire-level counters kept by a transport, so bytes are measured where they really leave and enter the host.

    Byte counts include framing and encryption overhead; ``dropped`` counts by reason what the transport refused
    before any protocol code saw it (undecryptable, sealed/plain mismatch, oversized, connection limit).
    """

    packets_sent: int = 0
    bytes_sent: int = 0
    packets_received: int = 0
    bytes_received: int = 0
    streams_opened: int = 0
    streams_accepted: int = 0
    stream_bytes_sent: int = 0
    stream_bytes_received: int = 0
    send_errors: int = 0
    dropped: Counter[str] = field(default_factory=Counter)

    def drop(self, reason: str) -> None:
        self.dropped[reason] += 1

    def as_dict(self) -> dict[str, object]:
        return {
            "packets_sent": self.packets_sent,
            "bytes_sent": self.bytes_sent,
            "packets_received": self.packets_received,
            "bytes_received": self.bytes_received,
            "streams_opened": self.streams_opened,
            "streams_accepted": self.streams_accepted,
            "stream_bytes_sent": self.stream_bytes_sent,
            "stream_bytes_received": self.stream_bytes_received,
            "send_errors": self.send_errors,
            "dropped": dict(self.dropped),
        }


@runtime_checkable
class CountingTransport(Transport, Protocol):
    """A transport that also reports wire-level counters; the driver folds them into its own stats when present."""

    @property
    def stats(self) -> TransportStats: ...
