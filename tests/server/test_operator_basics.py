"""What an operator expects of any server: its version everywhere it is asked for, help with the real defaults,
logs at a chosen level and in JSON for a shipper, an optional access log, and the standard process metrics."""

from __future__ import annotations

import json
import logging
import os
import re
import select
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient

from rumor.server import cli
from rumor.server.config import ServerConfig
from rumor.server.logs import JSONFormatter, configure_logging
from rumor.server.version import VERSION

STARTUP_TIMEOUT_S = 15


def test_version_flag_prints_the_installed_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        cli.main(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out.strip().startswith(f"rumor {VERSION} ")
    assert re.fullmatch(r"\d+\.\d+\.\d+.*", VERSION)  # installed by CI and the README's setup


def test_serve_help_shows_the_real_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.main(["serve", "--help"])
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    defaults = ServerConfig()
    for shown in (f"default: {defaults.http_addr}", f"default: {defaults.gossip_addr}",
                  f"default: {defaults.max_body_bytes}", f"default: {defaults.data_dir}", "default: info",
                  "default: text", "default: lan", "default: off"):
        assert shown in text
    assert "default: None" not in text


async def test_health_says_which_version_runs(api: TestClient) -> None:
    body = await (await api.get("/health")).json()
    assert body["version"] == VERSION


def test_json_logs_are_one_object_a_line_with_the_exception(caplog: pytest.LogCaptureFixture) -> None:
    formatter = JSONFormatter()
    try:
        raise ValueError("boom")
    except ValueError:
        record = logging.getLogger("rumor.test").makeRecord("rumor.test", logging.ERROR, __file__, 1,
                                                            "failed: %s", ("x",), sys.exc_info())
    line = formatter.format(record)
    entry = json.loads(line)
    assert "\n" not in line
    assert (entry["level"], entry["logger"], entry["message"]) == ("error", "rumor.test", "failed: x")
    assert "ValueError: boom" in entry["exception"] and entry["time"].endswith("Z")


def test_the_log_level_is_the_operators() -> None:
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        configure_logging(ServerConfig(log_level="warning", log_format="json"))
        assert root.level == logging.WARNING and isinstance(root.handlers[0].formatter, JSONFormatter)
    finally:
        root.handlers[:], root.level = saved[0], saved[1]
    with pytest.raises(Exception, match="log_level"):
        ServerConfig(log_level="verbose")


@pytest.mark.integration
def test_a_served_node_logs_json_and_one_access_line_per_request(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "rumor.server.cli", "serve", "--http-addr", "127.0.0.1:0", "--gossip-addr", "127.0.0.1:0",
         "--in-memory", "--log-format", "json", "--access-log", "--node-id", "ops"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=dict(os.environ),
    )
    try:
        assert proc.stdout is not None and proc.stderr is not None
        ready, _, _ = select.select([proc.stdout], [], [], STARTUP_TIMEOUT_S)
        line = proc.stdout.readline() if ready else ""
        url = re.search(r"listening on (http://127\.0\.0\.1:\d+)", line)
        assert url is not None, line
        with urllib.request.urlopen(url.group(1) + "/health", timeout=5) as response:
            assert json.loads(response.read())["version"] == VERSION
        with urllib.request.urlopen(url.group(1) + "/metrics", timeout=5) as response:
            metrics = response.read().decode()
        assert f'rumor_build_info{{version="{VERSION}"' in metrics and "process_resident_memory_bytes" in metrics
        proc.terminate()
        _, err = proc.communicate(timeout=STARTUP_TIMEOUT_S)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    entries = [json.loads(line) for line in err.splitlines() if line.strip()]  # every line is one JSON object
    access = [e for e in entries if e["logger"] == "rumor.access"]
    assert [(e["method"], e["path"], e["status"]) for e in access] == [("GET", "/health", 200),
                                                                      ("GET", "/metrics", 200)]
