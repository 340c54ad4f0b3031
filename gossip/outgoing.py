"""The types a driver exchanges with the membership state machine.

Mostly what the machine asks its driver to do (send a datagram, make a stream request, answer a stream), plus the
progress and counters the driver reports. Returning requests instead of doing I/O is what keeps the protocol pure:
the asyncio driver turns them into socket calls, the simulator into events on a virtual network, and unit tests
simply inspect them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from rumor.gossip.clock import Address
from rumor.gossip.messages import AppRequest


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


@dataclass(frozen=True, slots=True)
class JoinStatus:
    """``conflict`` is where a seed said our node id is alive (the join failed for that reason), else None."""

    done: bool
    failed: bool
    contacted: int
    attempts: int
    conflict: Address | None = None


@dataclass(slots=True)
class MembershipStats:
    """Counters for observability and benchmarks; ``dropped`` counts rejected input by reason."""

    probes: int = 0
    indirect_probes: int = 0
    probe_failures: int = 0
    suspicions: int = 0
    deaths_declared: int = 0
    refutations: int = 0
    stalls: int = 0
    push_pulls_started: int = 0
    push_pulls_served: int = 0
    packets_built: int = 0
    bytes_built: int = 0
    dropped: dict[str, int] = field(default_factory=dict)

    def count_drop(self, reason: str) -> None:
        self.dropped[reason] = self.dropped.get(reason, 0) + 1
