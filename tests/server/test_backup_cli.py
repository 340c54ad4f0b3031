"""`rumor export` and `rumor import` end to end: the CLI as a process against nodes served on 127.0.0.1."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from rumor.server.backup_cli import check_file
from rumor.server.updates import Increment, RegisterWrite, SetChange

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parent.parent.parent
Build = Callable[..., Any]


async def rumor(*args: str, env: dict[str, str] | None = None) -> tuple[int, bytes, str]:
    """Runs the CLI to its end (bounded): (exit status, stdout, stderr)."""
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "rumor.server.cli", *args, cwd=ROOT, env=env,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out, err.decode()


def url(client: TestClient) -> str:
    return str(client.make_url("")).rstrip("/")


async def test_export_to_a_file_then_import_it_into_another_node(make_api: Build, tmp_path: Path) -> None:
    source, source_api = await make_api(node_id="n1", api_token="t0ken")
    await source.update("visits", Increment(amount=5))
    await source.update("tags", SetChange(add=("a", "b")))
    await source.update("owner", RegisterWrite(value={"name": "ada"}))
    target, target_api = await make_api(node_id="n2")
    await target.update("visits", Increment(amount=2))  # a contribution of its own, kept by the join
    backup = tmp_path / "backup.rumor-export"

    status, _, err = await rumor("export", "--node", url(source_api), "--token", "t0ken", "-o", str(backup))
    assert status == 0, err
    assert "exported 3 keys" in err
    assert check_file(backup) == 3
    assert [p.name for p in tmp_path.iterdir()] == ["backup.rumor-export"]  # no .partial left behind

    status, out, err = await rumor("import", str(backup), "--node", url(target_api))
    assert status == 0, err
    assert b'"merged": 3' in out
    assert (await target.read("visits")).value == 7  # type: ignore[union-attr]
    assert (await target.read("owner")).value == {"name": "ada"}  # type: ignore[union-attr]
    status, out, _ = await rumor("import", str(backup), "--node", url(target_api))
    assert status == 0 and b'"unchanged": 3' in out


async def test_export_to_stdout_and_the_mistakes_an_operator_makes(make_api: Build, tmp_path: Path) -> None:
    node, api = await make_api(node_id="n1", api_token="t0ken")
    await node.update("k", Increment(amount=1))
    status, out, err = await rumor("export", "--node", url(api), "--token", "t0ken")
    assert status == 0, err
    backup = tmp_path / "piped.rumor-export"
    backup.write_bytes(out)
    assert check_file(backup) == 1

    status, _, err = await rumor("export", "--node", url(api), "-o", str(tmp_path / "denied"))
    assert status == 1 and "401 unauthorized" in err and "Traceback" not in err
    assert not list(tmp_path.glob("denied*"))  # neither the file nor its .partial

    damaged = tmp_path / "damaged.rumor-export"
    data = bytearray(out)
    data[-40] ^= 0xFF
    damaged.write_bytes(bytes(data))
    logged = node.storage.last_seq
    status, _, err = await rumor("import", str(damaged), "--node", url(api), "--token", "t0ken")
    assert status == 1 and "bad export file" in err and "nothing was sent to the node" in err
    assert node.storage.last_seq == logged

    status, _, err = await rumor("import", str(tmp_path / "missing"), "--node", url(api))
    assert status == 1 and "missing: No such file or directory" in err
