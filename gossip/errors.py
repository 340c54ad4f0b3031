"""The root of every error raised by `gossip/`, plus the protocol core's own subclasses.

Each error also subclasses the matching stdlib error, so callers that only know Python's vocabulary
(``except ValueError``) still catch it. The network layer adds its own subclasses (transport, security)
in its own modules.
"""

from __future__ import annotations


class GossipError(Exception):
    """Root of all gossip errors: ``except GossipError`` catches everything this package raises on purpose."""


class ConfigError(GossipError, ValueError):
    """A `Config` value is out of range or inconsistent with another."""

    def __init__(self, field: str, value: object, reason: str) -> None:
        super().__init__(f"invalid config {field}={value!r}: {reason}")
        self.field = field
        self.value = value
        self.reason = reason


class PacketDecodeError(GossipError, ValueError):
    """A datagram or stream message could not be decoded; the driver drops it and counts it by ``reason``."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


class PacketTooLargeError(GossipError, ValueError):
    """An encoded message would not fit the configured packet size: a bug in the caller, never a network event."""

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"encoded message is {size} bytes, over the {limit}-byte limit")
        self.size = size
        self.limit = limit


class UnknownMemberError(GossipError, KeyError):
    """An operation named a member id this node does not know (or knows only as dead/left)."""

    def __init__(self, member_id: str) -> None:
        super().__init__(member_id)
        self.member_id = member_id

    def __str__(self) -> str:
        return f"unknown member {self.member_id!r}"


class MemberNotGoneError(GossipError, ValueError):
    """A force-leave named a member that is not dead: ``status`` is what this node sees (``alive``, ``suspect``, or
    ``self``). Only the cluster's own verdict (dead) may be turned into a leave: a live member would refute it, and
    declaring a suspect one gone would skip the suspicion that protects it from a slow network."""

    def __init__(self, member_id: str, status: str) -> None:
        why = ("it is this node: ask it to leave instead" if status == "self" else
               f"it is {status}: force-leave only takes a member the cluster has declared dead")
        super().__init__(f"cannot force member {member_id!r} to leave: {why}")
        self.member_id = member_id
        self.status = status
