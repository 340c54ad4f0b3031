"""Hand-made histories for the checker tests: a tiny builder that writes records the way the harness does."""

from __future__ import annotations

from typing import Any

from bench.chaos.history import History, parse

NODES = ["n1", "n2", "n3", "n4", "n5"]
KEYS = {"c": "counter", "s": "set", "r": "register", "m": "mvregister", "p": "map"}


class Builder:
    def __init__(self, nodes: list[str] | None = None) -> None:
        self.nodes = nodes or NODES
        self.records: list[dict[str, Any]] = [{"meta": {
            "nodes": self.nodes, "keys": KEYS, "seed": 7, "partition_mode": "netns",
            "majority": len(self.nodes) // 2 + 1, "quiet_s": 1, "converge_timeout_s": 10,
            "members_timeout_s": 10, "duration_s": 10}}]
        self.next_id = 0
        self.t = 0.0

    def op(self, f: str, key: str, *, node: str = "n1", client: str = "c0", args: dict[str, Any] | None = None,
           status: str = "ok", http: int | None = 200, response: Any = None, at: float | None = None,
           took: float = 0.01, **extra: Any) -> dict[str, Any]:
        self.next_id += 1
        start = self.t if at is None else at
        self.t = start + took + 0.001
        record = {"id": self.next_id, "client": client, "node": node, "f": f, "key": key, "args": args or {},
                  "phase": "run", "invoke_s": start, "complete_s": start + took, "status": status,
                  "http_status": http if status != "unknown" else None, "response": response, **extra}
        self.records.append(record)
        return record

    def write(self, f: str, key: str, op_id: str, *, status: str = "ok", w: str = "1", http: int | None = 200,
              retry_of: int | None = None, response: Any = None, **args: Any) -> dict[str, Any]:
        node = args.pop("node", "n1")
        client = args.pop("client", "c0")
        at = args.pop("at", None)
        took = args.pop("took", 0.01)
        extra = {"retry_of": retry_of} if retry_of is not None else {}
        return self.op(f, key, node=node, client=client, args={"op_id": op_id, "w": w, **args}, status=status,
                       http=http, at=at, took=took, response=response, **extra)

    def read(self, key: str, value: Any, *, node: str = "n1", context: str = "ctx", r: str = "1",
             at: float | None = None, http: int = 200) -> dict[str, Any]:
        item = None if value is None else {"key": key, "type": KEYS[key], "value": value, "context": context}
        return self.op("read", key, node=node, args={"r": r}, response=item, at=at, http=http)

    def nemesis(self, kind: str, start: float, end: float, **extra: Any) -> None:
        self.records.append({"nemesis": kind, "start_s": start, "end_s": end, "nodes": self.nodes} | extra)

    def final(self, values: dict[str, Any], *, per_node: dict[str, dict[str, Any]] | None = None,
              contexts: dict[str, str] | None = None, round_no: int = 0, members_ok: bool = True) -> History:
        """Heal mark, one members round and one final-read round (``per_node`` overrides one node's values)."""
        self.t = max(self.t, 20.0) + round_no
        self.records.append({"mark": "healed", "t_s": 20.0})
        for node in self.nodes:
            view = {peer: "alive" for peer in self.nodes}
            if not members_ok and node == self.nodes[0]:
                view[self.nodes[-1]] = "suspect"
            self.op("members", None, node=node, client="final", response=view, phase="final", round=round_no)
        for node in self.nodes:
            for key in KEYS:
                value = (per_node or {}).get(node, {}).get(key, values.get(key))
                context = (contexts or {}).get(node, "ctx")
                item = None if value is None else {"key": key, "type": KEYS[key], "value": value, "context": context}
                self.op("final_read", key, node=node, client="final", response=item, phase="final", round=round_no,
                        http=200 if item else 404)
        return self.history()

    def history(self) -> History:
        return parse(list(self.records))
