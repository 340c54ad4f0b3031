"""An operator's mistake is one line on stderr that says what to do: ports in use, a data directory another node holds,
a `--node` without a scheme or unparseable, a reader that closes the pipe early. Real processes, bounded waits."""

from __future__ import annotations

import json
import re
import select
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from rumor.server import cli

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
WAIT_S = 15.0
RUMOR = [sys.executable, "-m", "rumor.server.cli"]


def serve(*args: str) -> subprocess.CompletedProcess[str]:
    """`rumor serve` that is expected to fail at startup."""
    return subprocess.run([*RUMOR, "serve", *args], capture_output=True, text=True, timeout=WAIT_S, cwd=ROOT)


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    return result.stderr.strip().splitlines()[-1]


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A port with a TCP listener on it (what another node's HTTP or gossip socket looks like)."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        yield listener.getsockname()[1]


@pytest.fixture
def node(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], str]]:
    proc = subprocess.Popen([*RUMOR, "serve", "--http-addr", "127.0.0.1:0", "--gossip-addr", "127.0.0.1:0",
                             "--data-dir", str(tmp_path)],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=ROOT)
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], WAIT_S)
    match = re.search(r"listening on http://(127\.0\.0\.1:\d+)", proc.stdout.readline() if ready else "")
    try:
        assert match is not None, "the node did not start"
        yield proc, match.group(1)
    finally:
        proc.kill()
        proc.wait(WAIT_S)


def test_an_http_port_in_use(taken_port: int) -> None:
    line = one_line_error(serve("--http-addr", f"127.0.0.1:{taken_port}", "--gossip-addr", "127.0.0.1:0",
                                "--in-memory"))
    assert line == (f"rumor: cannot listen on 127.0.0.1:{taken_port}: address already in use "
                    "(is another node running? pick another --http-addr)")


def test_a_gossip_port_in_use(taken_port: int) -> None:
    line = one_line_error(serve("--http-addr", "127.0.0.1:0", "--gossip-addr", f"127.0.0.1:{taken_port}",
                                "--in-memory"))
    assert line == (f"rumor: cannot listen on 127.0.0.1:{taken_port}: address already in use "
                    "(is another node running? pick another --gossip-addr)")


def test_a_data_directory_in_use_and_client_urls(
        tmp_path: Path, node: tuple[subprocess.Popen[str], str], capsys: pytest.CaptureFixture[str]) -> None:
    proc, host_port = node
    line = one_line_error(serve("--http-addr", "127.0.0.1:0", "--gossip-addr", "127.0.0.1:0",
                                "--data-dir", str(tmp_path)))
    assert line == (f"rumor: data directory {tmp_path} is in use by another rumor node (pid {proc.pid}): "
                    "give each node its own --data-dir")

    assert cli.main(["put", "k", "1", "--node", host_port]) == 0, "host:port alone means http://host:port"
    assert json.loads(capsys.readouterr().out)["value"] == 1
    assert cli.main(["get", "k", "--node", "http://"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err == ("rumor: --node: not a node URL: 'http://' (no valid host); expected one like "
                                 "http://127.0.0.1:7000\n")

    # a reader that is gone before the answer is printed (`rumor keys | head -1`): quiet, status 141
    keys = subprocess.Popen([*RUMOR, "keys", "--node", host_port], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, cwd=ROOT)
    assert keys.stdout is not None and keys.stderr is not None
    keys.stdout.close()
    assert keys.wait(WAIT_S) == 141
    assert keys.stderr.read() == ""
    keys.stderr.close()
