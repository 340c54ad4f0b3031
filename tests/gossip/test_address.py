"""The one host:port syntax (`gossip.address`): what it reads, what it refuses and why, and that it reads back what it
writes. (The server's config fields use the same parser: tests/server/test_config_values_metrics.py.)"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rumor.gossip.address import AddressError, format_address, parse_address
from rumor.gossip.errors import GossipError


@pytest.mark.parametrize(("text", "expected"), [
    ("127.0.0.1:7946", ("127.0.0.1", 7946)),
    ("node-3.example:0", ("node-3.example", 0)),  # port 0: any free port, when binding
    ("localhost:65535", ("localhost", 65535)),
    ("[::1]:7000", ("::1", 7000)),
    ("[fe80::1%eth0]:7946", ("fe80::1%eth0", 7946)),
    ("  10.0.0.1:80 ", ("10.0.0.1", 80)),  # surrounding blanks, as in a comma-separated seed list
])
def test_addresses_that_parse(text: str, expected: tuple[str, int]) -> None:
    assert parse_address(text) == expected


@pytest.mark.parametrize(("text", "expected"), [
    ("10.0.0.1", ("10.0.0.1", 7946)),
    ("[::1]", ("::1", 7946)),
    ("seed.example", ("seed.example", 7946)),
])
def test_a_missing_port_takes_the_callers_default(text: str, expected: tuple[str, int]) -> None:
    assert parse_address(text, default_port=7946) == expected


@pytest.mark.parametrize(("text", "reason"), [
    ("10.0.0.1", "no port"),  # and no default given
    ("10.0.0.1:", "no port after ':'"),
    ("10.0.0.1:http", "the port is not a decimal number"),
    ("10.0.0.1:-1", "the port is not a decimal number"),
    ("10.0.0.1:+80", "the port is not a decimal number"),
    ("10.0.0.1:٨٠", "the port is not a decimal number"),  # digits, but not ASCII ones
    ("10.0.0.1:65536", "port 65536 is over 65535"),
    (":7946", "no host"),
    ("[]:7946", "no host"),
    ("", "no host"),
    ("::1", "an IPv6 host goes in brackets"),
    ("fe80::1:7946", "an IPv6 host goes in brackets"),
    ("[::1:7946", "no ']' closes the IPv6 host"),
    ("[::1]7946", "'7946' after the bracketed host"),
])
def test_bad_addresses_say_what_is_wrong_and_name_the_field(text: str, reason: str) -> None:
    with pytest.raises(AddressError) as info:
        parse_address(text, "--join")
    message = str(info.value)
    assert message.startswith("--join must be host:port ([host]:port for IPv6), got ")
    assert reason in message and info.value.field == "--join"
    assert isinstance(info.value, GossipError) and isinstance(info.value, ValueError)


def test_bad_ports_fail_even_with_a_default() -> None:
    with pytest.raises(AddressError, match="over 65535"):
        parse_address("10.0.0.1:99999", default_port=7946)


@pytest.mark.parametrize(("addr", "text"), [
    (("127.0.0.1", 7946), "127.0.0.1:7946"),
    (("::1", 7000), "[::1]:7000"),
    (("node-3", 0), "node-3:0"),
])
def test_formatting_brackets_ipv6_hosts(addr: tuple[str, int], text: str) -> None:
    assert format_address(addr) == text


_HOSTS = st.one_of(
    st.from_regex(r"[a-z0-9][a-z0-9.-]{0,20}", fullmatch=True),
    st.ip_addresses().map(str),
)


@given(host=_HOSTS, port=st.integers(0, 65535))
def test_format_then_parse_is_the_identity(host: str, port: int) -> None:
    assert parse_address(format_address((host, port))) == (host, port)
