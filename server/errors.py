"""The server's error tree: one root (`ServerError`), precise subclasses that carry what went wrong.

Each subclass names a stable machine-readable `code`; `server.http_errors` is the single place that maps these to
HTTP statuses, so library code (keyspace, storage, node) never thinks about HTTP.
"""

from __future__ import annotations


class ServerError(Exception):
    """Root of every error raised by `server/`."""

    code = "server_error"


class ConfigError(ServerError, ValueError):
    """A configuration value (flag, environment variable or TOML entry) is invalid."""

    code = "bad_config"


class BadRequestError(ServerError, ValueError):
    """The request is malformed: bad encoding, wrong types, unknown fields or an unknown operation."""

    code = "bad_request"


class MalformedBodyError(BadRequestError):
    """The body could not be decoded (bad JSON or msgpack) or holds data outside the JSON data model."""

    code = "malformed_body"


class InvalidValueError(MalformedBodyError):
    """A value decoded but is outside what the store keeps: a lone surrogate, an integer outside the signed 64-bit
    range, NaN, a non-JSON type, or nesting deeper than the limit."""

    code = "invalid_value"


class InvalidKeyError(BadRequestError):
    """Keys are 1..1024 bytes of UTF-8."""

    code = "invalid_key"

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(f"invalid key: {reason}")
        self.key = key
        self.reason = reason


class UnknownFieldError(BadRequestError):
    """The body names fields this operation does not have: rejected rather than silently ignored."""

    code = "unknown_field"

    def __init__(self, fields: list[str], hint: str | None = None) -> None:
        names = ", ".join(repr(name[:40]) for name in sorted(fields))
        super().__init__(f"unknown field(s): {names}" + (f" ({hint})" if hint else ""))
        self.fields = sorted(fields)


class InvalidOperationError(BadRequestError):
    """The operation is understood but its arguments are invalid (zero increment, wrong value type, ...)."""

    code = "invalid_operation"


class BadContextError(BadRequestError):
    """The opaque causal context handed back by a client does not decode."""

    code = "bad_context"


class InvalidOptionError(BadRequestError):
    """A query option (w, r, timeout_ms, limit, ...) is invalid."""

    code = "invalid_option"


class OpIdConflictError(BadRequestError):
    """An op_id (Idempotency-Key) already named a different request (another key, type or body): replaying that
    one's result would silently drop this one."""

    code = "op_id_conflict"

    def __init__(self, op_id: str, key: str) -> None:
        super().__init__(f"op_id {op_id!r} was already used for a different request (on key {key!r}); "
                         "use a new op_id for a new request")
        self.op_id = op_id
        self.key = key


class KeyNotFoundError(ServerError, KeyError):
    """The key holds no value (never written, or empty after a delete)."""

    code = "not_found"

    def __init__(self, key: str, detail: str | None = None) -> None:
        super().__init__(key)
        self.key = key
        self.detail = detail

    def __str__(self) -> str:
        return f"key not found: {self.key!r}" + (f" ({self.detail})" if self.detail else "")


class TypeConflictError(ServerError, TypeError):
    """A key's CRDT type is fixed by its first write; another type was asked for."""

    code = "type_mismatch"

    def __init__(self, key: str, existing: str, requested: str, *, emptied: bool = False) -> None:
        why = (f" (it was deleted, but a key keeps its type for good, so that {existing} updates made concurrently "
               f"elsewhere still merge: write a {existing}, or use another key)") if emptied else ""
        super().__init__(f"key {key!r} holds a {existing}, not a {requested}{why}")
        self.key = key
        self.existing = existing
        self.requested = requested


class PayloadTooLargeError(ServerError, ValueError):
    """The body is over the configured limit."""

    code = "payload_too_large"

    def __init__(self, limit: int) -> None:
        super().__init__(f"body over the limit of {limit} bytes")
        self.limit = limit


class UnsupportedMediaTypeError(ServerError, ValueError):
    """Bodies are application/json or application/msgpack."""

    code = "unsupported_media_type"

    def __init__(self, media_type: str) -> None:
        super().__init__(f"unsupported media type {media_type!r}: use application/json or application/msgpack")
        self.media_type = media_type


class UnauthorizedError(ServerError, PermissionError):
    """An API token is configured and the request did not present it."""

    code = "unauthorized"


class StorageError(ServerError, OSError):
    """The durable store failed: the update was NOT acknowledged."""

    code = "storage_error"


class StorageCorruptError(StorageError):
    """Recovery found data it cannot decode; refusing to start rather than serving a wrong state."""

    code = "storage_corrupt"


class NodeNotRunningError(ServerError, RuntimeError):
    """The node is not started (or already stopped)."""

    code = "unavailable"


class InvalidAddressError(BadRequestError):
    """An address given to `POST /v1/cluster/join` is not ``host:port``."""

    code = "invalid_address"


class UnresolvableAddressError(BadRequestError):
    """No address given to `POST /v1/cluster/join` resolved (``reasons``: name -> the resolver's words)."""

    code = "unresolvable_address"

    def __init__(self, reasons: dict[str, str]) -> None:
        super().__init__("no address to contact: " + "; ".join(f"cannot resolve {name}: {why}"
                                                                 for name, why in reasons.items()))
        self.reasons = reasons


class UnknownMemberError(ServerError, LookupError):
    """A member id this node does not know (never seen, or forgotten long after it died or left)."""

    code = "unknown_member"

    def __init__(self, member_id: str) -> None:
        super().__init__(f"no member {member_id!r} is known here (see GET /v1/members)")
        self.member_id = member_id


class MemberNotDeadError(ServerError):
    """A force-leave named a member that is alive, suspect, or this node: only a dead member can be made left."""

    code = "member_not_dead"


class JoinFailedError(ServerError, ConnectionError):
    """No address given to `POST /v1/cluster/join` let this node in; the message says why, address by address."""

    code = "join_failed"


class NotAClusterMemberError(ServerError):
    """A cluster operation (join, force-leave) asked of a node that runs embedded, without gossip."""

    code = "not_a_cluster_member"
