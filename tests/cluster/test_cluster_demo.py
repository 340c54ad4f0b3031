"""`rumor demo`, the README's main command, runs to completion (bounded) and leaves nothing behind."""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

DEMO_TIMEOUT_S = 90


def test_demo_runs_to_completion_and_cleans_up(tmp_path: Path) -> None:
    before = set(Path(tempfile.gettempdir()).glob("rumor-demo-*"))
    result = subprocess.run([sys.executable, "-m", "rumor.server.cli", "demo"], capture_output=True, text=True,
                            timeout=DEMO_TIMEOUT_S, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "replicas converged" in result.stdout
    assert "visits = " in result.stdout and "add wins" in result.stdout
    assert "n3 saw feed/n1" in result.stdout and "n3 saw feed/n2" in result.stdout  # the change feed step
    assert result.stderr == ""  # children's logs stay in their files
    assert set(Path(tempfile.gettempdir()).glob("rumor-demo-*")) <= before
