"""Guards the dependency direction the design rests on: crdt/ is pure, gossip/ never learns what a CRDT is."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
IMPURE_FOR_CRDT = {"time", "random", "socket", "asyncio", "aiohttp", "sqlite3", "os", "threading", "secrets"}
FORBIDDEN = {
    "crdt": IMPURE_FOR_CRDT | {"gossip", "server"},
    "gossip": {"crdt", "server"},
}


def imported_roots(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    roots: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
    return roots


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_imports_respect_dependency_direction(package: str) -> None:
    offenders = {
        str(path.relative_to(ROOT)): sorted(imported_roots(path) & FORBIDDEN[package])
        for path in sorted((ROOT / package).rglob("*.py"))
    }
    assert {name: bad for name, bad in offenders.items() if bad} == {}


def test_modules_stay_under_the_size_limit() -> None:
    too_long = {
        str(path.relative_to(ROOT)): n
        for package in ("crdt", "gossip", "server")
        for path in (ROOT / package).rglob("*.py")
        if (n := len(path.read_text().splitlines())) > 700
    }
    assert too_long == {}
