"""The run's history: one JSON object a line, written as things happen, read back whole by the checkers.

Record kinds (told apart by their first key):
- ``{"meta": {...}}``: the run's parameters (nodes, keys and their types, seed, partition mode);
- an operation: ``{"id", "client", "node", "f", "key", "args", "invoke_s", "complete_s", "status", "http_status",
  "response", ...}`` with ``status`` ``ok`` (2xx), ``fail`` (a definite refusal: 4xx) or ``unknown`` (timeout,
  connection error, 5xx: the request may have been applied). Writes carry ``op_id`` in ``args``; a retry of an op
  carries ``retry_of`` (the id of its first attempt). Final reads have ``phase: "final"`` and a ``round``;
- ``{"nemesis": kind, "start_s", "end_s", "nodes", ...}``: one fault, written when it ends;
- ``{"mark": name, "t_s"}``: phases of the run (``nemesis_done``, ``healed``, ``final_reads``).

Times are seconds since the run started, from the monotonic clock. The checkers read only this file, so a history
kept from a failed run can be checked again (and the checkers unit-tested with hand-made histories).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO


class HistoryWriter:
    """Appends records; ``now()`` is the run's clock. Each line is flushed, so a crashed run leaves a usable file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file: TextIO = path.open("w", encoding="utf-8")
        self._t0 = time.monotonic()
        self._next_id = 0

    def now(self) -> float:
        return round(time.monotonic() - self._t0, 6)

    def new_id(self) -> int:
        self._next_id += 1
        return self._next_id

    def write(self, record: dict[str, Any]) -> None:
        self._file.write(json.dumps(record, separators=(",", ":"), default=str) + "\n")
        self._file.flush()

    def mark(self, name: str, **extra: Any) -> None:
        self.write({"mark": name, "t_s": self.now(), **extra})

    def close(self) -> None:
        self._file.close()


@dataclass
class History:
    """A parsed history: the checkers' only input."""

    meta: dict[str, Any] = field(default_factory=dict)
    ops: list[dict[str, Any]] = field(default_factory=list)
    nemesis: list[dict[str, Any]] = field(default_factory=list)
    marks: dict[str, float] = field(default_factory=dict)

    @property
    def nodes(self) -> list[str]:
        return list(self.meta.get("nodes", []))

    @property
    def keys(self) -> dict[str, str]:
        """key -> type name."""
        return dict(self.meta.get("keys", {}))

    def run_ops(self) -> list[dict[str, Any]]:
        return [op for op in self.ops if op.get("phase", "run") == "run"]

    def final_ops(self, f: str = "final_read") -> list[dict[str, Any]]:
        return [op for op in self.ops if op.get("phase") == "final" and op["f"] == f]

    def last_final_reads(self) -> dict[str, dict[str, dict[str, Any]]]:
        """key -> node -> the final read of the last round (the state the checkers judge)."""
        reads = self.final_ops()
        if not reads:
            return {}
        last = max(op["round"] for op in reads)
        out: dict[str, dict[str, dict[str, Any]]] = {}
        for op in reads:
            if op["round"] == last:
                out.setdefault(op["key"], {})[op["node"]] = op
        return out


def parse(lines: list[str] | list[dict[str, Any]]) -> History:
    """From JSON lines (or already decoded records, as the unit tests write them)."""
    history = History()
    for line in lines:
        record = json.loads(line) if isinstance(line, str) else line
        if "meta" in record:
            history.meta = record["meta"]
        elif "nemesis" in record:
            history.nemesis.append(record)
        elif "mark" in record:
            history.marks[record["mark"]] = record["t_s"]
        else:
            history.ops.append(record)
    history.ops.sort(key=lambda op: (op["invoke_s"], op["id"]))
    history.nemesis.sort(key=lambda event: event["start_s"])
    return history


def load(path: Path) -> History:
    with path.open(encoding="utf-8") as lines:
        return parse([line for line in lines if line.strip()])


def item_of(op: dict[str, Any]) -> dict[str, Any] | None:
    """The item an ok operation answered with (None for a 404 read or a 204)."""
    response = op.get("response")
    return response if isinstance(response, dict) and "value" in response else None
