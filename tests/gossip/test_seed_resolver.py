"""Seeds as DNS names: every address of every seed, IP literals untouched, names that do not resolve reported."""

from __future__ import annotations

import asyncio

import pytest

from rumor.gossip.seed_resolver import SeedResolutionError, StaticResolver, SystemResolver, hosts_text, resolve_seeds

HOSTS = """\
# a headless Service: one name, a record per pod
10.0.0.11 rumor.default.svc rumor-0
10.0.0.12 rumor.default.svc   # trailing comment
fd00::13  rumor.default.svc
not-an-ip broken
"""


def test_hosts_text_gives_every_address_of_a_name_in_order() -> None:
    resolver = StaticResolver.from_hosts(HOSTS)
    assert resolver.table == {"rumor.default.svc": ["10.0.0.11", "10.0.0.12", "fd00::13"], "rumor-0": ["10.0.0.11"]}
    assert StaticResolver.from_hosts(hosts_text([("10.0.0.1", "a"), ("10.0.0.2", "a")])).table == {
        "a": ["10.0.0.1", "10.0.0.2"]}


async def test_every_address_of_every_seed_in_seed_order_each_once() -> None:
    resolver = StaticResolver.from_hosts(HOSTS)
    seeds = [("10.0.0.9", 7946), ("rumor.default.svc", 7946), ("RUMOR-0", 7946)]
    resolved = await resolve_seeds(seeds, resolver)
    assert resolved.addresses == [("10.0.0.9", 7946), ("10.0.0.11", 7946), ("10.0.0.12", 7946), ("fd00::13", 7946)]
    assert resolved.failures == {}
    assert resolver.lookups == {"rumor.default.svc": 1, "rumor-0": 1}  # the IP literal is not looked up


async def test_a_name_that_does_not_resolve_is_reported_and_the_rest_goes_ahead() -> None:
    resolver = StaticResolver.from_hosts(HOSTS)
    resolved = await resolve_seeds([("gone.example", 7000), ("rumor-0", 7000)], resolver)
    assert resolved.addresses == [("10.0.0.11", 7000)]
    assert resolved.failures == {"gone.example:7000": "Name or service not known"}
    assert "gone.example:7000: Name or service not known" in resolved.describe_failures()


async def test_each_resolution_asks_again_so_a_changed_record_set_is_seen() -> None:
    resolver = StaticResolver()
    assert (await resolve_seeds([("seeds", 1)], resolver)).addresses == []
    resolver.table["seeds"] = ["10.1.0.1", "10.1.0.2"]
    assert (await resolve_seeds([("seeds", 1)], resolver)).addresses == [("10.1.0.1", 1), ("10.1.0.2", 1)]
    assert resolver.lookups == {"seeds": 2}


async def test_the_system_resolver_answers_localhost_from_the_hosts_file() -> None:
    addresses = await asyncio.wait_for(SystemResolver().resolve("localhost", 7946), 10)
    assert addresses and {host for host, _ in addresses} <= {"127.0.0.1", "::1"}
    assert all(port == 7946 for _, port in addresses)


async def test_the_system_resolver_refuses_a_malformed_name_with_its_reason() -> None:
    with pytest.raises(SeedResolutionError, match="cannot resolve seed host") as refused:
        await asyncio.wait_for(SystemResolver().resolve("bad..name", 7946), 10)  # empty label: refused locally
    assert refused.value.reason
