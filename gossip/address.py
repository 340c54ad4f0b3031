"""Host:port text, read and written one way everywhere: flags, config files, seeds, log lines and `/v1/members`.

The rules: ``host:port``, with an IPv6 host in brackets (``[::1]:7946``), because its colons would otherwise be read
as the port separator; the port is decimal, 0..65535 (0 asks the OS for a free one when binding); a missing port
takes the caller's default, when the caller has one; the host is never empty. `format_address` writes what
`parse_address` reads back, so an address shown anywhere can be pasted into a flag.
"""

from __future__ import annotations

from rumor.gossip.clock import Address
from rumor.gossip.errors import GossipError

MAX_PORT = 65535


class AddressError(GossipError, ValueError):
    """Text that is not a usable ``host:port``; the message names the field it was given for and what is wrong."""

    def __init__(self, field: str, text: str, reason: str) -> None:
        super().__init__(f"{field} must be host:port ([host]:port for IPv6), got {text!r}: {reason}")
        self.field = field
        self.text = text
        self.reason = reason


def format_address(addr: Address) -> str:
    """``host:port``, with an IPv6 host in brackets."""
    host, port = addr
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def parse_address(text: str, field: str = "address", *, default_port: int | None = None) -> Address:
    """``host:port`` or ``[v6 host]:port`` -> (host, port); without ``default_port`` the port is required.

    Raises `AddressError` naming ``field`` (the flag or config key the text came from).
    """
    stripped = text.strip()
    if stripped.startswith("["):
        host, closed, rest = stripped[1:].partition("]")
        if not closed:
            raise AddressError(field, text, "no ']' closes the IPv6 host")
        if rest and not rest.startswith(":"):
            raise AddressError(field, text, f"{rest!r} after the bracketed host")
        has_port, port_text = bool(rest), rest[1:]
    else:
        host, colon, port_text = stripped.rpartition(":")
        if not colon:
            host, has_port = stripped, False
        elif ":" in host:
            raise AddressError(field, text, "an IPv6 host goes in brackets, as in [::1]:7946")
        else:
            has_port = True
    if not host:
        raise AddressError(field, text, "no host")
    if not has_port:
        if default_port is None:
            raise AddressError(field, text, "no port")
        return (host, default_port)
    if not (port_text.isascii() and port_text.isdigit()):
        raise AddressError(field, text, "the port is not a decimal number" if port_text else "no port after ':'")
    port = int(port_text)
    if port > MAX_PORT:
        raise AddressError(field, text, f"port {port} is over {MAX_PORT}")
    return (host, port)


__all__ = ["MAX_PORT", "AddressError", "format_address", "parse_address"]
