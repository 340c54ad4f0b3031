"""What the membership state machine asks its driver to do: send a datagram, or make a stream request.

Returning these instead of doing I/O is what keeps the protocol pure: the asyncio driver turns them into socket
calls, the simulator into events on a virtual network, and unit tests simply inspect them.
"""

from __future__ import annotations

from dataclasses import dataclass

from gossip.clock import Address
from gossip.messages import AppRequest


@dataclass(frozen=True, slots=True)
class Packet:
    """A datagram to send, best effort."""

    address: Address
    data: bytes


@dataclass(frozen=True, slots=True)
class StreamRequest:
    """A request to send over a reliable stream; report the outcome with ``stream_response(request_id, ...)``."""

    request_id: int
    address: Address
    data: bytes
    timeout_s: float


Outgoing = Packet | StreamRequest


@dataclass(frozen=True, slots=True)
class StreamReply:
    """What to answer on an incoming stream: ``reply`` bytes, or an app request the driver must hand the delegate."""

    reply: bytes | None = None
    app_request: AppRequest | None = None
