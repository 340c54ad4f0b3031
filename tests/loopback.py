"""What the loopback interface of the machine running the tests offers (shared by tests that use real sockets)."""

from __future__ import annotations

import socket


def ipv6_available() -> bool:
    """True when a socket can bind ``::1`` (some containers have no IPv6 loopback)."""
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True
