"""`rumor serve` as a real process on loopback: SIGKILL right after acknowledgements loses nothing; CLI commands;
SIGTERM shuts down cleanly."""

from __future__ import annotations

import asyncio
import json
import os
import re
import select
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from rumor.server import cli
from rumor.server.client import RumorClient

pytestmark = pytest.mark.integration

STARTUP_TIMEOUT_S = 15


class Served:
    def __init__(self, proc: subprocess.Popen[str], url: str) -> None:
        self.proc = proc
        self.url = url


def start_node(data_dir: Path, *extra: str, env: dict[str, str] | None = None) -> Served:
    """Starts `rumor serve` on a free port (port 0) and waits for its 'listening' line."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "rumor.server.cli", "serve", "--http-addr", "127.0.0.1:0", "--data-dir", str(data_dir),
         *extra],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env={**os.environ, **(env or {})},
    )
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], STARTUP_TIMEOUT_S)
    line = proc.stdout.readline() if ready else ""
    match = re.search(r"listening on (http://127\.0\.0\.1:\d+)", line)
    if match is None:
        proc.kill()
        raise AssertionError(f"node did not start: {line!r}, exit {proc.wait(STARTUP_TIMEOUT_S)}")
    return Served(proc, match.group(1))


@pytest.fixture
def nodes() -> Iterator[list[Served]]:
    started: list[Served] = []
    yield started
    for served in started:
        if served.proc.poll() is None:
            served.proc.kill()
        served.proc.wait(STARTUP_TIMEOUT_S)


async def test_sigkill_after_acknowledgements_loses_nothing(tmp_path: Path, nodes: list[Served]) -> None:
    nodes.append(first := start_node(tmp_path))
    async with RumorClient(first.url) as client:
        node_id = (await client.health())["node"]
        # concurrent writers, so acknowledgements come from many different group commits
        async def writer(w: int) -> None:
            for i in range(15):
                await client.incr("hits", 1)
                await client.add("seen", f"w{w}-{i}")
                await client.put(f"reg/{w}", i)
        await asyncio.gather(*(writer(w) for w in range(8)))
    first.proc.send_signal(signal.SIGKILL)  # right after the last acknowledgement: no flush, no checkpoint
    first.proc.wait(STARTUP_TIMEOUT_S)

    nodes.append(second := start_node(tmp_path))
    async with RumorClient(second.url) as client:
        assert (await client.health())["node"] == node_id  # the derived node id was persisted
        assert (await client.get("hits"))["value"] == 120  # type: ignore[index]
        assert len((await client.get("seen"))["value"]) == 120  # type: ignore[index]
        for w in range(8):
            assert (await client.get(f"reg/{w}"))["value"] == 14  # type: ignore[index]


def test_cli_commands_and_graceful_sigterm(
    tmp_path: Path, nodes: list[Served], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    nodes.append(served := start_node(tmp_path, "--api-token", "tok", env={"RUMOR_NODE_ID": "cli-node"}))
    monkeypatch.setenv("RUMOR_NODE", served.url)
    monkeypatch.setenv("RUMOR_API_TOKEN", "tok")

    def rumor(*args: str) -> tuple[int, str, str]:
        """The CLI in-process (a subprocess per command costs a second of imports each)."""
        code = cli.main(list(args))
        out, err = capsys.readouterr()
        return code, out, err

    assert json.loads(rumor("put", "greeting", '{"hi": 1}')[1])["value"] == {"hi": 1}
    assert json.loads(rumor("incr", "c", "5")[1])["value"] == 5
    assert json.loads(rumor("incr", "c", "-2")[1])["value"] == 3
    assert json.loads(rumor("add", "s", "a", "2", "[1]")[1])["value"] == [2, "a", [1]]
    assert json.loads(rumor("remove", "s", "a")[1])["value"] == [2, [1]]
    assert json.loads(rumor("get", "c")[1])["value"] == 3
    assert [k["key"] for k in json.loads(rumor("keys")[1])] == ["c", "greeting", "s"]
    assert json.loads(rumor("keys", "--limit", "1")[1])["next"] == "c"
    assert json.loads(rumor("members")[1])[0]["id"] == "cli-node"
    assert rumor("del", "c")[0] == 0
    code, _, err = rumor("get", "c")
    assert code == 1 and "not found" in err
    code, _, err = rumor("get", "s", "--token", "wrong")
    assert code == 1 and "401" in err

    served.proc.send_signal(signal.SIGTERM)
    assert served.proc.wait(STARTUP_TIMEOUT_S) == 0


def test_serve_help_explains_every_option() -> None:
    result = subprocess.run([sys.executable, "-m", "rumor.server.cli", "serve", "--help"], capture_output=True, text=True,
                            timeout=STARTUP_TIMEOUT_S, check=True)
    for flag in ("--node-id", "--http-addr", "--gossip-addr", "--seed", "--data-dir", "--cluster-key", "--api-token",
                 "--timing", "--clock-offset-ms", "--max-body-bytes", "--in-memory", "--config"):
        assert flag in result.stdout
    assert "RUMOR_HTTP_ADDR" in result.stdout
