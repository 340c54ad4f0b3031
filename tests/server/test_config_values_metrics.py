"""Configuration precedence, the JSON <-> crdt value mapping, consistency levels and the metrics text format."""

from __future__ import annotations

import platform
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rumor.crdt import CausalContext
from rumor.server.config import ServerConfig, load_config
from rumor.server.consistency import Level, parse_consistency
from rumor.server.errors import BadContextError, ConfigError, InvalidOptionError, InvalidValueError, MalformedBodyError
from rumor.server.metrics import Metrics
from rumor.server.negotiation import JSON, MSGPACK, response_format
from rumor.server.values import (
    MAX_DEPTH,
    check_binding,
    check_json_value,
    check_op_id,
    context_binding,
    decode_read_context,
    encode_read_context,
    from_element,
    json_sort_key,
    sorted_json,
    to_element,
)
from rumor.server.version import VERSION


def test_config_precedence_flags_over_env_over_file_over_defaults(tmp_path: Path) -> None:
    path = tmp_path / "rumor.toml"
    path.write_text('http_addr = "127.0.0.1:7100"\ntiming = "wan"\nseeds = ["10.0.0.1:7946"]\nmax_body_bytes = 10\n')
    config = load_config(
        {"timing": "local", "in_memory": None},
        {"RUMOR_TIMING": "lan", "RUMOR_MAX_BODY_BYTES": "20", "RUMOR_SEEDS": "127.0.0.1:1, 127.0.0.1:2",
         "RUMOR_IN_MEMORY": "true", "RUMOR_CONFIG": str(path)},
    )
    assert config.http_addr == "127.0.0.1:7100"  # file
    assert config.max_body_bytes == 20  # env over file
    assert config.seeds == ("127.0.0.1:1", "127.0.0.1:2")
    assert config.timing == "local"  # flag over env
    assert config.in_memory is True
    assert load_config() == ServerConfig()
    assert ServerConfig().http_addr == "127.0.0.1:7000" and ServerConfig().max_body_bytes == 1024 * 1024


@pytest.mark.parametrize(
    ("flags", "env", "toml"),
    [
        ({"http_addr": "nope"}, {}, ""),
        ({"timing": "fast"}, {}, ""),
        ({}, {"RUMOR_CLOCK_OFFSET_MS": "soon"}, ""),
        ({}, {"RUMOR_IN_MEMORY": "maybe"}, ""),
        ({}, {}, "unknown_key = 1\n"),
        ({}, {}, "max_body_bytes = 0\n"),
        ({}, {}, "this is not toml"),
        ({"seeds": ["no-port"]}, {}, ""),
    ],
)
def test_bad_config_is_a_config_error(tmp_path: Path, flags: dict[str, Any], env: dict[str, str], toml: str) -> None:
    path = tmp_path / "c.toml"
    path.write_text(toml)
    with pytest.raises(ConfigError):
        load_config(flags, env, path)


@pytest.mark.parametrize(("field", "value", "words"), [
    ("http_addr", "nope", "http_addr must be host:port ([host]:port for IPv6), got 'nope': no port"),
    ("gossip_addr", "::1:7946", "gossip_addr must be host:port ([host]:port for IPv6), got '::1:7946': an IPv6 host"),
    ("http_addr", "127.0.0.1:70000", "port 70000 is over 65535"),
])
def test_address_fields_follow_the_one_host_port_syntax_and_say_which_field(field: str, value: str,
                                                                            words: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(words)):
        load_config({field: value})


def test_seeds_are_named_in_their_error_and_ipv6_addresses_work() -> None:
    with pytest.raises(ConfigError, match=r"^seeds must be host:port"):
        ServerConfig(seeds=("10.0.0.1:7946", "10.0.0.2"))
    config = ServerConfig(http_addr="[::1]:0", gossip_addr="[::1]:7946", seeds=("[::1]:7947",))
    assert config.http_host_port == ("::1", 0)


@pytest.mark.parametrize("value", ["s", 7, True, False, None, 1.0, 1.5, [1, "a"], {"b": [None], "a": 1}, [], {}])
def test_set_elements_round_trip_and_stay_distinct(value: Any) -> None:
    element = to_element(value)
    hash(element)
    back = from_element(element)
    assert back == value and type(back) is type(value)
    assert to_element(1) != to_element(True) and to_element(1) != to_element(1.0)
    assert to_element({"a": 1, "b": 2}) == to_element({"b": 2, "a": 1})


def test_sorted_json_is_a_total_deterministic_order() -> None:
    values = [{"a": 1}, [2], [1], "b", "a", 3, 1.5, 1, True, False, None, 1.0]
    expected = [None, False, True, 1, 1.0, 1.5, 3, "a", "b", [1], [2], {"a": 1}]
    assert sorted_json(values) == expected
    assert sorted_json(reversed(values)) == expected
    assert [type(v) for v in sorted_json(values)] == [type(v) for v in expected]


@given(st.one_of(st.lists(st.integers(min_value=-2**70, max_value=2**70)), st.lists(st.text()),
                 st.lists(st.one_of(st.integers(), st.floats(allow_nan=False, allow_infinity=False), st.text(),
                                    st.booleans(), st.none()))))
def test_sorted_json_of_one_kind_keeps_the_keyed_order(values: list[Any]) -> None:
    """Values of one plain kind are sorted without keys (a big set's render): the same order, ties and all."""
    assert sorted_json(values) == sorted(values, key=json_sort_key)
    assert [type(v) for v in sorted_json(values)] == [type(v) for v in sorted(values, key=json_sort_key)]


@pytest.mark.parametrize("value", [float("nan"), float("inf"), b"x", {1: 2}, (1, 2), {"a": {3}}])
def test_values_outside_the_json_model_are_rejected(value: Any) -> None:
    with pytest.raises(MalformedBodyError):
        check_json_value(value)


def nested(depth: int, leaf: Any) -> Any:
    for i in range(depth):
        leaf = [leaf] if i % 2 else {"k": leaf}
    return leaf


@pytest.mark.parametrize("leaf", [1, 1.5, "s", None, [], {}])
def test_values_may_nest_up_to_max_depth_and_no_deeper(leaf: Any) -> None:
    assert check_json_value(nested(MAX_DEPTH, leaf)) == nested(MAX_DEPTH, leaf)  # the leaf sits at MAX_DEPTH
    with pytest.raises(MalformedBodyError):
        check_json_value(nested(MAX_DEPTH + 1, leaf))


def test_read_context_round_trips_and_rejects_garbage() -> None:
    context = CausalContext([("n1", 1), ("n1", 2), ("n2", 5)])
    binding = context_binding("k", "set")
    text = encode_read_context(binding, context)
    assert "=" not in text and decode_read_context(text) == (binding, context)
    for bad in ("***", text[:-3] + "!!!", 5, "A", "\u0661\u0660"):
        with pytest.raises(BadContextError):
            decode_read_context(bad)


def test_a_context_is_bound_to_its_key_and_type() -> None:
    binding = context_binding("k", "set")
    check_binding("k", "set", binding)
    check_binding("other", "set", None)  # a context made in Python is trusted as it is
    for key, type_name in (("other", "set"), ("k", "map"), ("k\0set", "")):
        with pytest.raises(BadContextError):
            check_binding(key, type_name, binding)


@pytest.mark.parametrize("value", ["\ud800", ["ok", "\udfff"], {"\ud800": 1}, {"a": [{"b": "x\ud800"}]},
                                   2**63, -(2**63) - 1, [10**300]])
def test_values_with_lone_surrogates_or_out_of_range_integers_are_rejected(value: Any) -> None:
    with pytest.raises(InvalidValueError):
        check_json_value(value)


def test_integer_range_is_signed_64_bit_and_only_for_stored_values() -> None:
    assert check_json_value([2**63 - 1, -(2**63)]) == [2**63 - 1, -(2**63)]
    assert check_json_value({"increment": 10**30}, int64=False) == {"increment": 10**30}


@pytest.mark.parametrize("op_id", ["", "a b", "x" * 257, "caf\u00e9", "\ud800", "tab\t", 5, None])
def test_op_ids_are_visible_ascii(op_id: Any) -> None:
    with pytest.raises(InvalidOptionError):
        check_op_id(op_id)
    assert check_op_id("retry-7:x/y") == "retry-7:x/y"


def test_consistency_levels() -> None:
    assert [Level.QUORUM.required(n) for n in (1, 2, 3, 4, 5)] == [1, 2, 2, 3, 3]
    assert Level.ALL.required(5) == 5 and Level.ONE.required(5) == 1
    parsed = parse_consistency("quorum", 250, name="w")
    assert parsed.level is Level.QUORUM and parsed.timeout_s == 0.25
    with pytest.raises(InvalidOptionError):
        parse_consistency("2", None, name="w")


def test_accept_negotiation() -> None:
    assert response_format(None) == JSON
    assert response_format("application/msgpack") == MSGPACK
    assert response_format("application/msgpack, */*;q=0.1") == MSGPACK
    assert response_format("application/json, application/msgpack") == JSON
    assert response_format("application/msgpack;q=0") == JSON
    assert response_format("text/html") == JSON


def test_metrics_text_format() -> None:
    metrics = Metrics()
    metrics.http_requests.inc("/v1/kv", "GET", "200")
    metrics.http_latency.observe(0.003, "/v1/kv", "GET")
    metrics.http_latency.observe(7.0, "/v1/kv", "GET")
    metrics.http_latency.observe(0.003, "/v1/kv", "POST")
    metrics.gossip_dropped.inc("bad_mac", amount=3)
    metrics.keys.set_source(lambda: {(): 42})
    text = metrics.render()
    assert 'rumor_http_requests_total{route="/v1/kv",method="GET",status="200"} 1' in text
    assert 'rumor_http_request_duration_seconds_bucket{route="/v1/kv",method="GET",le="0.0025"} 0' in text
    assert 'rumor_http_request_duration_seconds_bucket{route="/v1/kv",method="GET",le="0.005"} 1' in text
    assert 'rumor_http_request_duration_seconds_bucket{route="/v1/kv",method="GET",le="+Inf"} 2' in text
    assert 'rumor_http_request_duration_seconds_count{route="/v1/kv",method="GET"} 2' in text
    assert 'rumor_http_request_duration_seconds_count{route="/v1/kv",method="POST"} 1' in text
    assert 'rumor_gossip_dropped_packets_total{reason="bad_mac"} 3' in text
    assert "rumor_keys 42" in text
    assert 'rumor_members{status="alive"} 1' in text
    assert f'rumor_build_info{{version="{VERSION}",python="{platform.python_version()}"}} 1' in text
    for name in ("process_cpu_seconds_total", "process_resident_memory_bytes", "process_open_fds",
                 "process_start_time_seconds", "process_virtual_memory_bytes"):
        value = next(line for line in text.splitlines() if line.startswith(name + " ")).split(" ")[1]
        assert float(value) > 0, name
    counters = {line.split()[2] for line in text.splitlines() if line.startswith("# TYPE") and line.endswith("counter")}
    assert all(name.endswith("_total") for name in counters)  # a counter is named so, and only counts up
    for line in text.splitlines():
        if not line.startswith("# "):
            float(line.rsplit(" ", 1)[1])  # every sample's value is a number


def test_a_counter_never_goes_down_when_its_source_starts_over() -> None:
    """Gossip and replication counters are read from their components' stats: a component restarted under the
    supervisor starts from zero, and the counter must keep what it had counted (a Prometheus counter only rises)."""
    from rumor.server.metrics import Counter

    readings = {("sent",): 5.0}
    counter = Counter("rumor_test_total", "test", ("direction",))
    counter.set_source(lambda: dict(readings))
    counter.inc("sent", amount=2)
    assert counter.get("sent") == 7
    readings[("sent",)] = 1.0  # the component was restarted
    assert counter.get("sent") == 8
    readings[("sent",)] = 4.0
    assert counter.get("sent") == 11
    counter.set_source(lambda: {("sent",): 0.5})  # replaced by a new component's stats
    assert counter.get("sent") == 11.5
    seen = [counter.get("sent")]
    for value in (0.0, 3.0, 2.0, 9.0):
        counter.set_source(lambda value=value: {("sent",): value})
        seen.append(counter.get("sent"))
    assert seen == sorted(seen)
