"""The built wheel installs everything under the `rumor` namespace and nothing at the top of site-packages (an
application's own `server` or `crdt` package must never be shadowed by ours), ships every module of the repository's
packages (the package list in pyproject.toml is explicit: a new subpackage must be added there), the dashboard's
static files and the typing markers, and keeps the `rumor` console script."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> zipfile.ZipFile:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out), str(ROOT)],
                   check=True, capture_output=True, timeout=300)
    (built,) = out.glob("rumor-*.whl")
    return zipfile.ZipFile(built)


def test_nothing_but_the_rumor_namespace_is_installed(wheel: zipfile.ZipFile) -> None:
    tops = {name.split("/")[0] for name in wheel.namelist()}
    assert {top for top in tops if not top.endswith(".dist-info")} == {"rumor"}
    assert not any(name.startswith("rumor/__init__") for name in wheel.namelist())  # a namespace package


def test_every_module_of_the_repository_is_in_the_wheel(wheel: zipfile.ZipFile) -> None:
    shipped = set(wheel.namelist())
    expected = {f"rumor/{path.relative_to(ROOT).as_posix()}" for package in ("crdt", "gossip", "server")
                for path in (ROOT / package).rglob("*.py")}
    assert expected - shipped == set()


def test_data_files_and_the_console_script(wheel: zipfile.ZipFile) -> None:
    shipped = set(wheel.namelist())
    for name in ("rumor/crdt/py.typed", "rumor/gossip/py.typed", "rumor/server/py.typed",
                 "rumor/server/ui/index.html", "rumor/server/ui/app.js", "rumor/server/ui/style.css",
                 "rumor/server/deploy/rumor.service", "rumor/server/deploy/kubernetes.yaml"):
        assert name in shipped
    (entry_points,) = [n for n in shipped if n.endswith(".dist-info/entry_points.txt")]
    assert "rumor = rumor.server.cli:main" in wheel.read(entry_points).decode()
