"""Bind versus advertise: where a node listens, and the addresses it tells others to use.

A node binds its gossip and API sockets to ``gossip_addr`` and ``http_addr``. What it *tells* others can differ: behind
NAT, in a container with mapped ports, or bound to every interface (``0.0.0.0`` / ``::``), the bound address is not
one another host can use. ``advertise_addr`` (``host`` or ``host:port``) is then the gossip address in membership,
and its host is also the API address published in the member metadata (with the bound API port), unless
``advertise_http_addr`` says otherwise. A part left out is the bound one (so port 0 advertises the port the system
picked).

What is refused, at configuration time, with the option named: an unspecified host (``0.0.0.0``, ``::``) as an
advertised address; port 0 in one; a gossip advertise host that is a name rather than an IP (every gossip packet is
sent to it as is, with no lookup; an API address may be a name, clients resolve it); and a gossip address bound to
every interface with nothing advertised, since no peer could reach ``0.0.0.0``.
"""

from __future__ import annotations

import ipaddress

from rumor.gossip.address import AddressError, format_address, parse_address
from rumor.gossip.clock import Address
from rumor.server.errors import ConfigError

#: marks a port left out of an advertised address (the bound one is used)
_NO_PORT = -1


def is_unspecified(host: str) -> bool:
    """True for the "every interface" addresses, 0.0.0.0 and ::, which name no host another node can reach."""
    try:
        return ipaddress.ip_address(host).is_unspecified
    except ValueError:
        return False


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def parse_advertised(text: str, option: str, *, ip_only: bool) -> tuple[str, int | None]:
    """``host`` or ``host:port`` ([v6]:port) -> (host, port or None); raises `ConfigError` naming ``option``."""
    try:
        host, port = parse_address(text, option, default_port=_NO_PORT)
    except AddressError as exc:
        raise ConfigError(str(exc)) from None
    if port == 0:
        raise ConfigError(f"{option} {text!r}: port 0 cannot be advertised (give the real port, or leave the port "
                          "out to advertise the bound one)")
    if is_unspecified(host):
        raise ConfigError(f"{option} {text!r}: {host} means every interface, which no other host can reach; "
                          "advertise this node's own address")
    if ip_only and not _is_ip(host):
        raise ConfigError(f"{option} {text!r}: the gossip address must be an IP address (peers send every packet "
                          "to it as is, without a lookup)")
    return host, (None if port == _NO_PORT else port)


def check_advertising(gossip_addr: Address, advertise_addr: str | None, advertise_http_addr: str | None) -> None:
    """Every advertised address is valid, and a gossip address bound to every interface has one advertised."""
    if advertise_addr is not None:
        parse_advertised(advertise_addr, "advertise_addr", ip_only=True)
    if advertise_http_addr is not None:
        parse_advertised(advertise_http_addr, "advertise_http_addr", ip_only=False)
    if advertise_addr is None and is_unspecified(gossip_addr[0]):
        raise ConfigError(f"gossip_addr {format_address(gossip_addr)} binds every interface, which no peer can "
                          "reach: give --advertise-addr, the address other nodes reach this one at")


def gossip_advertise(advertise_addr: str | None) -> tuple[str | None, int | None]:
    """What `gossip.memberlist.Memberlist` takes as ``advertise``: None parts are the bound ones."""
    if advertise_addr is None:
        return None, None
    return parse_advertised(advertise_addr, "advertise_addr", ip_only=True)


def http_advertised(bound_http: Address, bound_gossip_host: str, advertise_addr: str | None,
                    advertise_http_addr: str | None) -> str:
    """The API address published to members and printed at start (``host:port``).

    The host: ``advertise_http_addr``'s, else ``advertise_addr``'s, else the bound one, unless that is every
    interface, then the gossip host (what peers reach this node at). The port: ``advertise_http_addr``'s, else the
    bound one.
    """
    host, port = bound_http
    if advertise_addr is not None:
        host = parse_advertised(advertise_addr, "advertise_addr", ip_only=True)[0]
    elif is_unspecified(host) and not is_unspecified(bound_gossip_host):
        host = bound_gossip_host
    if advertise_http_addr is not None:
        http_host, http_port = parse_advertised(advertise_http_addr, "advertise_http_addr", ip_only=False)
        host, port = http_host, http_port or port
    return format_address((host, port))


__all__ = ["check_advertising", "gossip_advertise", "http_advertised", "is_unspecified", "parse_advertised"]
