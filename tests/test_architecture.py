"""Guards the rules the design rests on, read from the code's syntax tree (never from its text, so a comment or a
string naming ``time`` is no offence and an aliased import is still one):

* crdt/ is pure: no clock, randomness, I/O, threads, event loop, collector switches or dynamic imports;
* gossip/ never learns what a CRDT is, and its state machines take a Clock and a ``random.Random`` instead of
  reaching for ``time``, sockets, the event loop or the global random generator;
* no import circle among the project's modules; no module past the size limit.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("crdt", "gossip", "server")
#: the namespace they install under (``rumor.crdt``, ...): imports are read with it stripped, as the packages' own names
NAMESPACE = "rumor"

# -- reading the code --------------------------------------------------------------------------------------------


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@cache
def project_modules() -> dict[str, Path]:
    """Every module of the project's packages, by dotted name."""
    return {module_name(p): p for package in PACKAGES for p in sorted((ROOT / package).rglob("*.py"))}


def package_files(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


@cache
def parse(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), filename=str(path))


def rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


def imported_modules(path: Path, *, module_level_only: bool = False) -> Iterator[tuple[str, list[str], int]]:
    """``(module, names, line)`` for each import in ``path``: ``import a.b`` gives ``("a.b", [], n)``,
    ``from a import b, c`` gives ``("a", ["b", "c"], n)``; relative imports are resolved to absolute names.

    ``module_level_only`` skips imports inside function bodies (run on call, not on import) but keeps those under
    ``if TYPE_CHECKING:``, ``try:`` or in a class body: they are part of what a reader must know first.
    """
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]

    def walk(node: ast.AST) -> Iterator[ast.AST]:
        for child in ast.iter_child_nodes(node):
            if module_level_only and isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
                continue
            yield child
            yield from walk(child)

    for node in walk(parse(path)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name.removeprefix(f"{NAMESPACE}."), [], node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            if target == NAMESPACE:  # `from rumor import crdt` imports the package crdt
                for alias in node.names:
                    yield alias.name, [], node.lineno
            else:
                yield target.removeprefix(f"{NAMESPACE}."), [alias.name for alias in node.names], node.lineno


def imported_roots(path: Path) -> set[str]:
    """Top-level names of everything ``path`` imports, anywhere in it (a function-level import counts too)."""
    return {module.split(".")[0] for module, _, _ in imported_modules(path)}


def module_aliases(tree: ast.Module, module: str) -> set[str]:
    """Names under which ``import module [as x]`` binds the module anywhere in ``tree``."""
    return {
        alias.asname or alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
        if alias.name == module
    }


# -- dependency direction ------------------------------------------------------------------------------------------

#: what crdt/ may never touch: clocks, randomness, I/O of any kind, concurrency, the collector, dynamic imports
IMPURE_FOR_CRDT = {
    "time", "datetime", "zoneinfo",  # clocks: physical time is handed in by the caller
    "random", "secrets", "uuid",  # randomness: a replica id is handed in too
    "os", "io", "pathlib", "shutil", "tempfile", "glob", "fileinput", "mmap", "sqlite3", "logging",  # files, I/O
    "socket", "ssl", "select", "selectors", "asyncio", "aiohttp", "http", "urllib",  # network, event loop
    "threading", "multiprocessing", "concurrent", "subprocess", "signal",  # concurrency, processes
    "gc", "importlib", "builtins", "sys",  # process-wide switches, dynamic imports, the interpreter's state
}
FORBIDDEN = {
    "crdt": IMPURE_FOR_CRDT | {"gossip", "server"},
    "gossip": {"crdt", "server"},
}
#: builtins that do I/O or import or run code by name: the same rule as the imports above, for what needs none
IMPURE_BUILTINS_FOR_CRDT = {"__import__", "open", "print", "input", "breakpoint", "exec", "eval", "compile"}


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_imports_respect_dependency_direction(package: str) -> None:
    offenders = {
        rel(path): sorted(imported_roots(path) & FORBIDDEN[package]) for path in package_files(package)
    }
    assert {name: bad for name, bad in offenders.items() if bad} == {}


def test_crdt_calls_no_impure_builtin() -> None:
    offenders = [
        f"{rel(path)}:{node.lineno} {node.id}"
        for path in package_files("crdt")
        for node in ast.walk(parse(path))
        if isinstance(node, ast.Name) and node.id in IMPURE_BUILTINS_FOR_CRDT
    ]
    assert offenders == []


# -- pure state machines in gossip/ --------------------------------------------------------------------------------

#: The state machines (and the formulas and wire formats they are made of): each receives a Clock reading and a
#: ``random.Random``. Patterns are globs under the repository root; a pattern that names a directory covers every
#: module in it, so ``gossip/anti_entropy*`` holds the anti-entropy modules whether they sit flat in gossip/
#: (anti_entropy.py, anti_entropy_engine.py, anti_entropy_wire.py) or in the gossip/anti_entropy/ package.
PURE_GOSSIP = (
    "gossip/membership.py",
    "gossip/swim.py",
    "gossip/member_table.py",
    "gossip/suspicion.py",
    "gossip/awareness.py",
    "gossip/broadcast_queue.py",
    "gossip/probe_order.py",
    "gossip/joining.py",
    "gossip/id_conflict.py",
    "gossip/messages.py",
    "gossip/outgoing.py",
    "gossip/member.py",
    "gossip/rate_limit.py",
    "gossip/address.py",
    "gossip/msgpack_wire.py",
    "gossip/anti_entropy*",
    "gossip/**/merkle.py",
    "gossip/**/chunking.py",
)
IMPURE_FOR_GOSSIP_STATE_MACHINES = {"time", "datetime", "socket", "asyncio", "threading", "secrets", "os"}
#: the one thing of the random module a state machine may name: the type of the generator it is handed
RANDOM_ALLOWED = {"Random"}


def expand(pattern: str) -> list[Path]:
    found: set[Path] = set()
    for hit in ROOT.glob(pattern):
        if hit.is_dir():
            found.update(hit.rglob("*.py"))
        elif hit.suffix == ".py":
            found.add(hit)
    return sorted(found)


@pytest.mark.parametrize("pattern", PURE_GOSSIP)
def test_pure_gossip_pattern_matches_modules(pattern: str) -> None:
    """A pattern matching nothing (a module renamed or moved) would let the purity check pass on nothing."""
    assert expand(pattern), f"{pattern} matches no module: update PURE_GOSSIP in {rel(Path(__file__))}"


def global_randomness(path: Path) -> list[str]:
    """Uses of the random module other than naming ``random.Random``, and unseeded ``Random()`` constructions."""
    tree = parse(path)
    aliases = module_aliases(tree, "random")
    found = []
    for module, names, line in imported_modules(path):
        if module == "random" and set(names) - RANDOM_ALLOWED:
            found.append(f"{rel(path)}:{line} from random import {', '.join(sorted(set(names) - RANDOM_ALLOWED))}")
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases:
            if node.attr not in RANDOM_ALLOWED:
                found.append(f"{rel(path)}:{node.lineno} random.{node.attr}")
        elif isinstance(node, ast.Call) and not node.args and not node.keywords:
            func = node.func
            if (isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) and func.value.id in aliases
                    and func.attr == "Random"):
                found.append(f"{rel(path)}:{node.lineno} random.Random() seeded from the OS")
    return found


@pytest.mark.parametrize("pattern", PURE_GOSSIP)
def test_gossip_state_machines_take_time_and_randomness_from_outside(pattern: str) -> None:
    offenders = []
    for path in expand(pattern):
        bad = imported_roots(path) & IMPURE_FOR_GOSSIP_STATE_MACHINES
        offenders += [f"{rel(path)} imports {name}" for name in sorted(bad)]
        offenders += global_randomness(path)
    assert offenders == []


# -- import circles ------------------------------------------------------------------------------------------------


def import_graph() -> dict[str, set[str]]:
    """Module -> project modules it imports when it is imported (function-level imports excluded).

    ``from a import b`` points at ``a.b`` when that is a module, else at ``a``. The package ``__init__`` that
    Python runs before any submodule is not an edge: every package re-exporting its submodules would otherwise be
    a circle; a submodule importing names from its own package's ``__init__`` is one, and is found.
    """
    modules = project_modules()
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        for target, names, _ in imported_modules(path, module_level_only=True):
            hits = {f"{target}.{n}" for n in names} & modules.keys()
            if len(hits) < len(names) or not names:  # some names are not submodules: they come from ``target``
                while target and target not in modules:
                    target = target.rpartition(".")[0]
                if target:
                    hits.add(target)
            graph[name] |= hits - {name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One circle through each strongly connected component of more than one module (Tarjan), as a path."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[set[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                components.append(component)

    for v in sorted(graph):
        if v not in index:
            connect(v)
    return [circle_in(graph, component) for component in components]


def circle_in(graph: dict[str, set[str]], component: set[str]) -> list[str]:
    """A shortest circle from the component's first module back to itself, for the failure message."""
    start = min(component)
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w in sorted(graph[v] & component):
                if w == start:
                    return [*paths[v], start]
                if w not in paths:
                    paths[w] = [*paths[v], w]
                    nxt.append(w)
        frontier = nxt
    raise AssertionError(f"no circle in a strongly connected component {component}")


def test_no_import_circle_among_project_modules() -> None:
    """Imports under ``if TYPE_CHECKING:`` count: a circle for the type checker is a circle for the reader."""
    assert [" -> ".join(c) for c in cycles(import_graph())] == []


def test_circle_detection_sees_a_circle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c", "a"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


# -- size --------------------------------------------------------------------------------------------------------


def test_modules_stay_under_the_size_limit() -> None:
    too_long = {
        rel(path): n
        for package in PACKAGES
        for path in package_files(package)
        if (n := len(path.read_text().splitlines())) > 700
    }
    assert too_long == {}


def test_test_modules_have_unique_basenames() -> None:
    """pytest imports test modules by basename (no __init__.py in tests/): two files of one name in different
    folders break collection of the whole suite."""
    names = [path.name for path in sorted((ROOT / "tests").rglob("test_*.py"))]
    assert sorted({name for name in names if names.count(name) > 1}) == []
