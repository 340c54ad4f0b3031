"""Clients: a few per node, each a sequential loop of random operations against its node, every one recorded.

Operations (``f`` in the history): ``read`` (any key, ``r`` = 1, quorum or all), ``incr`` (counter increments and
decrements), ``add`` (a set element no one else ever adds), ``remove`` (an element seen by a read just before, with
that read's context; now and then the read is made on another node), ``write`` (a register PUT), ``mvwrite``,
``mapset`` (one field of a map); every value written is unique, so the checkers can tell which write produced it.
Writes go with ``w`` = 1, quorum or all and an ``Idempotency-Key``: after a timeout the same request is sometimes
sent again (``retry_of`` names the first attempt), and now and then an acknowledged write is sent twice on purpose.

A request that could not connect is ``fail`` (it never left the client); one that timed out or lost its
connection afterwards is ``unknown``; a 5xx is ``unknown`` too (the node may have applied it before failing).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote

import aiohttp

from bench.chaos.history import HistoryWriter

KEYS: dict[str, str] = {
    **{f"counter/{i}": "counter" for i in range(3)},
    **{f"set/{i}": "set" for i in range(3)},
    **{f"reg/{i}": "register" for i in range(2)},
    **{f"mv/{i}": "mvregister" for i in range(2)},
    **{f"map/{i}": "map" for i in range(2)},
}
MAP_FIELDS = ("a", "b")
OP_WEIGHTS = {"read": 30, "incr": 15, "add": 14, "remove": 7, "write": 8, "mvwrite": 8, "mapset": 8}
LEVEL_WEIGHTS = {"1": 70, "quorum": 25, "all": 5}
NODE_TIMEOUT_MS = 1000


def _key_path(key: str) -> str:
    return "/v1/kv/" + quote(key, safe="")


class Client:
    def __init__(self, name: str, node: str, urls: dict[str, str], history: HistoryWriter, rng: random.Random,
                 *, op_timeout_s: float = 3.0, retry_p: float = 0.6, duplicate_p: float = 0.03) -> None:
        self.name = name
        self.node = node
        self.urls = urls
        self.history = history
        self.rng = rng
        self.op_timeout_s = op_timeout_s
        self.retry_p = retry_p
        self.duplicate_p = duplicate_p
        self.seq = 0
        self._session: aiohttp.ClientSession | None = None

    def _keys(self, kind: str) -> list[str]:
        return [k for k, t in KEYS.items() if t == kind]

    def _level(self) -> str:
        return self.rng.choices(list(LEVEL_WEIGHTS), weights=list(LEVEL_WEIGHTS.values()))[0]

    def _unique(self) -> str:
        self.seq += 1
        return f"{self.name}-{self.seq}"

    async def request(self, node: str, method: str, key: str, f: str, args: dict[str, Any], *,
                      body: Any = None, params: dict[str, str] | None = None, op_id: str | None = None,
                      retry_of: int | None = None, phase: str = "run", extra: dict[str, Any] | None = None,
                      ) -> dict[str, Any]:
        """One HTTP request, recorded; returns the record."""
        assert self._session is not None
        headers = {"Idempotency-Key": op_id} if op_id else {}
        record: dict[str, Any] = {"id": self.history.new_id(), "client": self.name, "node": node, "f": f,
                                  "key": key, "args": args, "phase": phase, **(extra or {})}
        if retry_of is not None:
            record["retry_of"] = retry_of
        record["invoke_s"] = self.history.now()
        try:
            async with self._session.request(method, self.urls[node] + _key_path(key), params=params,
                                             json=body, headers=headers) as resp:
                raw = await resp.read()
                record["http_status"] = resp.status
                record["replayed"] = resp.headers.get("X-Rumor-Replayed") == "true"
                response = json.loads(raw) if raw else None
                record["response"] = response
                if resp.status < 300 or (resp.status == 404 and f in ("read", "final_read")):
                    record["status"] = "ok"
                else:
                    record["status"] = "unknown" if resp.status >= 500 else "fail"
        except aiohttp.ClientConnectorError as exc:
            record.update(status="fail", http_status=None, response={"error": f"connect: {exc.os_error}"})
        except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as exc:
            record.update(status="unknown", http_status=None, response={"error": type(exc).__name__})
        record["complete_s"] = self.history.now()
        self.history.write(record)
        return record

    async def write(self, method: str, key: str, f: str, args: dict[str, Any], body: Any,
                    params: dict[str, str]) -> dict[str, Any]:
        """A write with an op_id; retried with the same op_id after an unknown outcome (sometimes after an ok)."""
        op_id = args["op_id"]
        first = await self.request(self.node, method, key, f, args, body=body, params=params, op_id=op_id)
        record = first
        for _ in range(2):
            again = (record["status"] == "unknown" and self.rng.random() < self.retry_p) or (
                record["status"] == "ok" and record is first and self.rng.random() < self.duplicate_p)
            if not again:
                break
            await asyncio.sleep(self.rng.uniform(0.1, 1.0))
            record = await self.request(self.node, method, key, f, args, body=body, params=params, op_id=op_id,
                                        retry_of=first["id"])
        return first

    async def step(self) -> None:
        f = self.rng.choices(list(OP_WEIGHTS), weights=list(OP_WEIGHTS.values()))[0]
        level = self._level()
        params = {"timeout_ms": str(NODE_TIMEOUT_MS)}
        if f == "read":
            key = self.rng.choice(list(KEYS))
            if level != "1":
                params["r"] = level
            await self.request(self.node, "GET", key, "read", {"r": level}, params=params)
            return
        if level != "1":
            params["w"] = level
        op_id = self._unique()
        args: dict[str, Any] = {"op_id": op_id, "w": level}
        if f == "incr":
            n = self.rng.choice([-3, -2, -1, 1, 2, 3, 4, 5])
            await self.write("POST", self.rng.choice(self._keys("counter")), f, args | {"n": n},
                             {"type": "counter", "increment": n}, params)
        elif f == "add":
            await self.write("POST", self.rng.choice(self._keys("set")), f, args | {"element": op_id},
                             {"type": "set", "add": [op_id]}, params)
        elif f == "remove":
            await self.remove(self.rng.choice(self._keys("set")), args, params)
        elif f == "write":
            await self.write("PUT", self.rng.choice(self._keys("register")), f, args | {"value": op_id}, op_id,
                             params)
        elif f == "mvwrite":
            await self.write("POST", self.rng.choice(self._keys("mvregister")), f, args | {"value": op_id},
                             {"type": "mvregister", "value": op_id}, params)
        else:
            field = self.rng.choice(MAP_FIELDS)
            await self.write("POST", self.rng.choice(self._keys("map")), f, args | {"field": field, "value": op_id},
                             {"type": "map", "set": {field: op_id}}, params)

    async def remove(self, key: str, args: dict[str, Any], params: dict[str, str]) -> None:
        """Observed-remove: read (usually on our node, sometimes on another), remove one element it saw."""
        read_node = self.node if self.rng.random() < 0.8 else self.rng.choice(sorted(self.urls))
        read = await self.request(read_node, "GET", key, "read", {"r": "1"}, params={"timeout_ms": "1000"})
        item = read.get("response") if read["status"] == "ok" else None
        if not isinstance(item, dict) or not item.get("value"):
            return
        element = self.rng.choice(item["value"])
        context = item["context"]
        await self.write("POST", key, "remove",
                         args | {"element": element, "context": context, "read_id": read["id"], "read_node": read_node},
                         {"type": "set", "remove": [element], "context": context}, params)

    async def run(self, stop: asyncio.Event, pause_s: tuple[float, float] = (0.0, 0.05)) -> None:
        async with self.opened():
            while not stop.is_set():
                await self.step()
                await asyncio.sleep(self.rng.uniform(*pause_s))

    @contextlib.asynccontextmanager
    async def opened(self) -> AsyncIterator[Client]:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.op_timeout_s)) as session:
            self._session = session
            try:
                yield self
            finally:
                self._session = None

    async def final_round(self, keys: list[str], round_no: int) -> list[dict[str, Any]]:
        """Every key on every node, concurrently (call inside `opened`)."""
        return list(await asyncio.gather(*(
            self.request(node, "GET", key, "final_read", {"r": "1"}, phase="final", extra={"round": round_no})
            for node in sorted(self.urls) for key in keys)))
