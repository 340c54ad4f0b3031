"""The running software's version: one place for `rumor --version`, `/health` and `rumor_build_info`."""

from __future__ import annotations

import platform
from importlib import metadata

try:
    VERSION = metadata.version("rumor")
except metadata.PackageNotFoundError:  # run from a source tree that was never installed
    VERSION = "0+unknown"

PYTHON = platform.python_version()
