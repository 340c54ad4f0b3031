"""The type registry: one name, one class; only dot-store types; read-only from outside."""

from typing import Any, ClassVar

import pytest

from rumor import crdt
from rumor.crdt import TYPES, InvalidOperationError, ORSet, register_type
from rumor.crdt.dot_kernel import DotKernel


def test_every_type_the_package_exports_is_registered_under_its_name() -> None:
    exported = [getattr(crdt, name) for name in crdt.__all__]
    kernel_types = {cls for cls in exported if isinstance(cls, type) and issubclass(cls, DotKernel)} - {DotKernel}
    assert {cls.TYPE_NAME: cls for cls in kernel_types} == dict(TYPES)


def test_a_name_already_taken_is_refused_and_the_registry_is_unchanged() -> None:
    class Impostor(ORSet):
        __slots__ = ()
        TYPE_NAME: ClassVar[str] = "orset"

    with pytest.raises(InvalidOperationError, match="already names ORSet"):
        register_type(Impostor)
    assert TYPES["orset"] is ORSet


def test_registering_again_the_same_class_is_harmless() -> None:
    assert register_type(ORSet) is ORSet
    assert TYPES["orset"] is ORSet


@pytest.mark.parametrize("cls", [int, DotKernel])
def test_only_dot_store_types_can_be_registered(cls: type) -> None:
    with pytest.raises(InvalidOperationError, match="not a CRDT type"):
        register_type(cls)


def test_a_type_must_name_itself() -> None:
    class Unnamed(ORSet):  # inherits "orset": registering it would shadow the parent
        __slots__ = ()

    with pytest.raises(InvalidOperationError, match="no TYPE_NAME of its own"):
        register_type(Unnamed)


def test_the_registry_is_read_only() -> None:
    table: Any = TYPES
    with pytest.raises(TypeError):
        table["orset"] = ORSet
