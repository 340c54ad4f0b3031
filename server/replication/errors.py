"""Errors of the replication layer, under the server's root error."""

from __future__ import annotations

from rumor.server.errors import ServerError


class ReplicationError(ServerError):
    """Root of replication errors."""

    code = "replication_error"


class ReplicationProtocolError(ReplicationError, ValueError):
    """A peer sent something this layer cannot accept; ``reason`` is a short stable label for counters."""

    code = "replication_protocol"

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


class ReplicationConfigError(ReplicationError, ValueError):
    """A `ReplicationConfig` value is out of range."""

    code = "bad_config"

    def __init__(self, name: str, value: object, reason: str) -> None:
        super().__init__(f"{name}={value!r}: {reason}")
        self.name = name
        self.value = value
