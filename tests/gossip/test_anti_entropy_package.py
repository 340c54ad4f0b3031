"""The anti-entropy package's shape: layered modules, one message-type enum, config errors that name their field."""

from __future__ import annotations

import ast
from pathlib import Path

import msgpack
import pytest

import gossip.anti_entropy as package
from rumor.gossip.anti_entropy import AntiEntropyConfig, AntiEntropyMessageType, AntiEntropyProtocolError, Reassembler
from rumor.gossip.anti_entropy.wire import decode_message
from rumor.gossip.errors import ConfigError, GossipError

PACKAGE_DIR = Path(package.__file__).parent
LAYERS = ["merkle", "chunking", "config", "wire", "work", "descent", "composer", "bulk", "engine", "session"]
"""Each module may import only the modules before it (the order the package docstring gives)."""


def package_imports(module: str) -> set[str]:
    tree = ast.parse((PACKAGE_DIR / f"{module}.py").read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("rumor.gossip.anti_entropy."):
            found.add(node.module.removeprefix("rumor.gossip.anti_entropy."))
        elif isinstance(node, ast.ImportFrom) and node.level:
            found.add(node.module or "__init__")
    return found


def test_every_module_is_in_a_layer_and_imports_only_lower_layers() -> None:
    assert {p.stem for p in PACKAGE_DIR.glob("*.py")} == {*LAYERS, "__init__"}
    upward = {module: sorted(package_imports(module) - set(LAYERS[:i])) for i, module in enumerate(LAYERS)}
    assert {module: bad for module, bad in upward.items() if bad} == {}


def test_the_package_names_everything_it_exports() -> None:
    assert sorted(package.__all__) == sorted(set(package.__all__))
    assert all(hasattr(package, name) for name in package.__all__)


def test_message_type_values_are_append_only() -> None:
    assert {t.name: t.value for t in AntiEntropyMessageType} == {
        "HELLO": 0x41, "IN_SYNC": 0x42, "EXCHANGE": 0x43, "ERROR": 0x44, "BULK": 0x45, "BULK_STATES": 0x46,
    }


@pytest.mark.parametrize("kind", list(AntiEntropyMessageType))
def test_the_decoder_accepts_exactly_the_enum(kind: AntiEntropyMessageType) -> None:
    decoded, body = decode_message(bytes([kind]) + msgpack.packb({}), 4096)
    assert decoded is kind and body == {}


@pytest.mark.parametrize("first", [0x00, 0x40, 0x47, 0xFF])
def test_the_decoder_rejects_bytes_outside_the_enum(first: int) -> None:
    with pytest.raises(AntiEntropyProtocolError, match="unknown_type"):
        decode_message(bytes([first]) + msgpack.packb({}), 4096)


@pytest.mark.parametrize(
    ("field", "value"),
    [("max_message_bytes", 4095), ("hash_bytes", 1), ("hash_bytes", 17), ("max_pending", 0), ("max_rounds", 0)],
)
def test_a_config_error_names_the_field_at_fault(field: str, value: int) -> None:
    with pytest.raises(ConfigError) as info:
        AntiEntropyConfig(**{field: value})
    assert info.value.field == field and info.value.value == value
    assert isinstance(info.value, GossipError) and isinstance(info.value, ValueError)


@pytest.mark.parametrize(("field", "value"),
                         [("max_buffer_bytes", 0), ("max_transfers", 0), ("remember_completed", -1)])
def test_a_reassembler_bound_error_names_the_bound(field: str, value: int) -> None:
    with pytest.raises(GossipError, match=f"bad_bounds: {field}={value}"):
        Reassembler(**{field: value})
