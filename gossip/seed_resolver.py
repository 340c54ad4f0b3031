"""Seeds given as DNS names: each join attempt turns every seed into all of its addresses, afresh.

A seed such as ``rumor.default.svc.cluster.local:7946`` (a Kubernetes headless Service) names several nodes, one A or
AAAA record each, and the set changes as nodes come and go; so a join contacts every address of every seed, and
resolves again on each retry instead of once at start. An IP literal is used as it is, with no lookup.

Resolution goes through a `Resolver`: `SystemResolver` asks the operating system (``getaddrinfo``: /etc/hosts, DNS,
whatever nsswitch says) without blocking the event loop; `StaticResolver` answers from a table, or from text in the
/etc/hosts format, so tests need no DNS. A name that does not resolve is reported with the resolver's reason and
skipped; the join goes ahead with what did resolve.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from rumor.gossip.address import format_address
from rumor.gossip.clock import Address
from rumor.gossip.errors import GossipError


class SeedResolutionError(GossipError, OSError):
    """A seed's host name has no address (``reason``: the resolver's words, e.g. "Name or service not known")."""

    def __init__(self, host: str, reason: str) -> None:
        super().__init__(f"cannot resolve seed host {host!r}: {reason}")
        self.host = host
        self.reason = reason


class Resolver(Protocol):
    async def resolve(self, host: str, port: int) -> list[Address]:
        """Every address of ``host`` (IPv4 and IPv6), each with ``port``; raises `SeedResolutionError` if none."""
        ...


def is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


class SystemResolver:
    """The operating system's resolver, run off the event loop by asyncio (``loop.getaddrinfo``)."""

    async def resolve(self, host: str, port: int) -> list[Address]:
        loop = asyncio.get_running_loop()
        try:
            infos = await loop.getaddrinfo(host, port, family=socket.AF_UNSPEC, type=socket.SOCK_DGRAM)
        except (socket.gaierror, UnicodeError) as exc:
            raise SeedResolutionError(host, getattr(exc, "strerror", None) or str(exc)) from None
        addresses = list(dict.fromkeys((str(info[4][0]), port) for info in infos))
        if not addresses:
            raise SeedResolutionError(host, "no addresses")
        return addresses


@dataclass
class StaticResolver:
    """Answers from ``table`` (host name -> addresses, in order); counts lookups per name (``lookups``)."""

    table: dict[str, list[str]] = field(default_factory=dict)
    lookups: dict[str, int] = field(default_factory=dict)

    @classmethod
    def from_hosts(cls, text: str) -> StaticResolver:
        """/etc/hosts lines (``address name [alias...]``, ``#`` comments); a name on several lines has each address."""
        table: dict[str, list[str]] = {}
        for line in text.splitlines():
            fields = line.split("#", 1)[0].split()
            if len(fields) < 2 or not is_ip_literal(fields[0]):
                continue
            for name in fields[1:]:
                table.setdefault(name.lower(), []).append(fields[0])
        return cls(table)

    async def resolve(self, host: str, port: int) -> list[Address]:
        name = host.lower()
        self.lookups[name] = self.lookups.get(name, 0) + 1
        addresses = self.table.get(name)
        if not addresses:
            raise SeedResolutionError(host, "Name or service not known")
        return [(address, port) for address in dict.fromkeys(addresses)]


@dataclass(frozen=True, slots=True)
class ResolvedSeeds:
    """What one resolution of the seed list gave: the addresses to contact (in seed order, each once), and the
    reason for each seed name that gave none."""

    addresses: list[Address]
    failures: Mapping[str, str]

    def describe_failures(self) -> str:
        return "; ".join(f"{name}: {reason}" for name, reason in self.failures.items())


async def resolve_seeds(seeds: Sequence[Address], resolver: Resolver) -> ResolvedSeeds:
    """Every address of every seed, IP literals as given; names are looked up concurrently."""
    names = [seed for seed in dict.fromkeys(seeds) if not is_ip_literal(seed[0])]
    answers = await asyncio.gather(*(resolver.resolve(host, port) for host, port in names), return_exceptions=True)
    by_name: dict[Address, list[Address]] = {}
    failures: dict[str, str] = {}
    for seed, answer in zip(names, answers, strict=True):
        if isinstance(answer, SeedResolutionError):
            failures[format_address(seed)] = answer.reason
        elif isinstance(answer, BaseException):
            raise answer
        else:
            by_name[seed] = answer
    addresses: list[Address] = []
    for seed in seeds:
        addresses.extend(by_name.get(seed, [seed] if is_ip_literal(seed[0]) else []))
    return ResolvedSeeds(list(dict.fromkeys(addresses)), failures)


def hosts_text(entries: Iterable[tuple[str, str]]) -> str:
    """(address, name) pairs as /etc/hosts lines: what `StaticResolver.from_hosts` and the system resolver read."""
    return "".join(f"{address} {name}\n" for address, name in entries)


__all__ = ["ResolvedSeeds", "Resolver", "SeedResolutionError", "StaticResolver", "SystemResolver", "hosts_text",
           "is_ip_literal", "resolve_seeds"]
