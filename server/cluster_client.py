"""The client for applications: several node URLs, failover between them, retries that are safe, typed results.

    async with Client(["http://10.0.0.1:7000", "http://10.0.0.2:7000"]) as rumor:
        await rumor.incr("visits", 5)          # carries an op_id the client made: a retry is applied once
        item = await rumor.get("visits")       # Item(key, type, value, context, acks, required) or None

    with SyncClient(["http://10.0.0.1:7000"]) as rumor:   # the same calls, blocking
        rumor.put("greeting", "hello")

**Failover.** A request goes to the node that answered last. When that node cannot be reached (connection refused,
reset or timed out) or answers 503 (not ready, storage failing), the client tries the next URL; a round tries every
URL once, and rounds repeat up to ``attempts`` times with a doubling pause between them (``backoff_s``).

**Which writes may move to another node.** Every write carries an op_id (the `Idempotency-Key` header) that the client
makes once and keeps across its retries, so a retry on the *same* node is applied once. A node deduplicates op_ids it
has seen itself; cluster-wide deduplication is not built yet, so a counter increment retried on *another* node after
its first node may have applied it would count twice. So an increment moves on only when its node surely never got
it (the connection could not be made); after a timeout, a dropped connection or a 503 it is retried on the same node,
and if that node stays away the client raises `OutcomeUnknownError` rather than guess. Every other write (set and
map changes, register writes, deletes) reaches the same value when applied twice, so it moves freely.

**Results.** Reads and writes return an `Item` (with ``acks``/``required``: ``complete`` is False for a 202, when
fewer replicas than asked answered in time) or None (absent; a write that left the key without a value). A write to
a key of another type raises `ConflictError` (409); an op_id reused for another request raises `RumorHTTPError` 422;
other refusals raise `RumorHTTPError` with the server's status and code.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, TypeVar

import aiohttp

from rumor.server.client import RumorClient, RumorHTTPError, _options, node_url
from rumor.server.errors import ServerError

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Item:
    """A key's value as a read or write answered it."""

    key: str
    type: str
    value: Any
    context: str
    acks: int = 1
    required: int = 1

    @property
    def complete(self) -> bool:
        """False for a 202: fewer replicas than the consistency level asked for answered in time."""
        return self.acks >= self.required

    @classmethod
    def of(cls, body: dict[str, Any] | None) -> Item | None:
        if body is None:
            return None
        return cls(body["key"], body["type"], body["value"], body["context"], body.get("acks", 1),
                   body.get("required", 1))


class ConflictError(RumorHTTPError):
    """409: the key holds another type (it keeps its type for good, even once emptied)."""


class NoNodeAvailableError(ServerError, ConnectionError):
    """No node of the list could be reached (or all answered 503), within every attempt."""


class OutcomeUnknownError(ServerError, ConnectionError):
    """A counter increment's node went away after it may have applied it, and did not come back in time: it may or
    may not have counted. Retry it yourself on that node with the same op_id (``op_id``) once it is back."""

    def __init__(self, message: str, op_id: str, node: str) -> None:
        super().__init__(message)
        self.op_id = op_id
        self.node = node


_UNREACHED = (aiohttp.ClientConnectorError,)  # the connection could not be made: the request never left
_MAYBE_APPLIED = (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError, asyncio.TimeoutError,
                  aiohttp.ClientPayloadError)


class Client:
    """Async client over ``urls`` (see the module docstring). One aiohttp session serves every node."""

    def __init__(self, urls: Sequence[str], *, token: str | None = None, timeout_s: float = 5.0,
                 attempts: int = 3, backoff_s: float = 0.1,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        if not urls:
            raise ValueError("give at least one node URL")
        self._urls = [node_url(u) for u in urls]
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout_s))
        self._nodes = [RumorClient(u, token=token, session=self._session) for u in self._urls]
        self._current = 0
        self.attempts = max(1, attempts)
        self.backoff_s = backoff_s
        self._sleep = sleep

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    async def close(self) -> None:
        await self._session.close()

    @property
    def current_url(self) -> str:
        """The node requests go to first (the one that answered last)."""
        return self._urls[self._current]

    async def _call(self, op: Callable[[RumorClient], Coroutine[Any, Any, T]], *, movable: bool,
                    op_id: str | None = None) -> T:
        """Runs ``op`` on the current node, failing over as the module docstring says."""
        pause = self.backoff_s
        pinned: int | None = None  # a non-movable write that may have been applied stays on its node
        last: BaseException | None = None
        for attempt in range(self.attempts):
            if attempt:
                await self._sleep(pause)
                pause *= 2
            order = [pinned] if pinned is not None else \
                [(self._current + i) % len(self._nodes) for i in range(len(self._nodes))]
            for index in order:
                try:
                    result = await op(self._nodes[index])
                except RumorHTTPError as exc:
                    if exc.status == 409:
                        raise ConflictError(exc.status, exc.code, exc.message) from None
                    if exc.status != 503:
                        raise
                    last = exc
                    if not movable:
                        pinned = index
                        break
                    continue
                except _UNREACHED as exc:
                    last = exc
                    continue
                except _MAYBE_APPLIED as exc:
                    last = exc
                    if not movable:
                        pinned = index
                        break
                    continue
                self._current = index
                return result
        if pinned is not None and op_id is not None:
            raise OutcomeUnknownError(f"{self._urls[pinned]} went away during a counter increment (op_id {op_id}) "
                                      f"and did not come back: {last!r}", op_id, self._urls[pinned])
        raise NoNodeAvailableError(f"no node answered ({', '.join(self._urls)}): {last!r}")

    # -- reads ----------------------------------------------------------------------------------------------------

    async def get(self, key: str, *, r: str | None = None, timeout_ms: int | None = None) -> Item | None:
        async def op(node: RumorClient) -> Item | None:
            try:
                _, body = await node.request("GET", node._key_path(key),
                                             params=_options(r=r, timeout_ms=timeout_ms))
            except RumorHTTPError as exc:
                if exc.status == 404 and exc.code == "not_found":
                    return None
                raise
            return Item.of(body)

        return await self._call(op, movable=True)

    async def get_many(self, keys: list[str], *, r: str | None = None) -> dict[str, Item | None]:
        """Many keys in one request: key -> item, None where absent."""
        answer = await self._call(lambda node: node.get_many(keys, r=r), movable=True)
        out: dict[str, Item | None] = {}
        for result in answer["results"]:
            if result["status"] >= 400 and result["status"] != 404:
                raise RumorHTTPError(result["status"], result["error"]["code"], result["error"]["message"])
            out[result["key"]] = Item.of(result.get("item"))
        return out

    # -- writes ---------------------------------------------------------------------------------------------------

    async def _write(self, method: str, key: str, *, body: Any = None, has_body: bool = False,
                     params: dict[str, str] | None = None, movable: bool = True) -> Item | None:
        op_id = uuid.uuid4().hex

        async def op(node: RumorClient) -> Item | None:
            status, answer = await node.request(method, node._key_path(key), body=body, has_body=has_body,
                                                params=params, op_id=op_id)
            return None if status == 204 else Item.of(answer)

        return await self._call(op, movable=movable, op_id=op_id)

    async def put(self, key: str, value: Any, *, context: str | None = None, w: str | None = None) -> Item | None:
        """Writes a last-writer-wins register."""
        return await self._write("PUT", key, body=value, has_body=True, params=_options(context=context, w=w))

    async def update(self, key: str, update: dict[str, Any], *, w: str | None = None) -> Item | None:
        """A typed update (the POST body, e.g. ``{"type": "set", "add": [1]}``)."""
        movable = update.get("type") != "counter"
        return await self._write("POST", key, body=update, params=_options(w=w), movable=movable)

    async def incr(self, key: str, amount: int = 1, *, w: str | None = None) -> Item | None:
        return await self.update(key, {"type": "counter", "increment": amount}, w=w)

    async def add(self, key: str, *elements: Any, w: str | None = None) -> Item | None:
        return await self.update(key, {"type": "set", "add": list(elements)}, w=w)

    async def remove(self, key: str, *elements: Any, context: str | None = None) -> Item | None:
        body: dict[str, Any] = {"type": "set", "remove": list(elements)}
        return await self.update(key, body | ({"context": context} if context else {}))

    async def delete(self, key: str, *, context: str | None = None, w: str | None = None) -> Item | None:
        """Observed-remove of the key; the surviving item (concurrent updates elsewhere) or None."""
        return await self._write("DELETE", key, params=_options(context=context, w=w))

    async def batch(self, updates: list[dict[str, Any]], *, w: str | None = None) -> list[dict[str, Any]]:
        """`POST /v1/batch`; each update gets an op_id unless it has one, so the whole batch may be retried (on
        another node only when it holds no counter increment). Returns the per-update results."""
        with_ids = [u if "op_id" in u else u | {"op_id": uuid.uuid4().hex} for u in updates]
        movable = all(u.get("type") != "counter" for u in updates)
        answer = await self._call(lambda node: node.batch(with_ids, w=w), movable=movable,
                                  op_id=with_ids[0]["op_id"] if with_ids else None)
        return list(answer["results"])


class SyncClient:
    """`Client`'s calls, blocking: an event loop of its own runs in a background thread."""

    def __init__(self, urls: Sequence[str], **options: Any) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="rumor-client", daemon=True)
        self._thread.start()

        async def make() -> Client:
            return Client(urls, **options)

        self._client = self._run(make())

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def __enter__(self) -> SyncClient:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        if self._thread.is_alive():
            self._run(self._client.close())
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join()
            self._loop.close()

    @property
    def current_url(self) -> str:
        return self._client.current_url

    def get(self, key: str, **options: Any) -> Item | None:
        return self._run(self._client.get(key, **options))

    def get_many(self, keys: list[str], **options: Any) -> dict[str, Item | None]:
        return self._run(self._client.get_many(keys, **options))

    def put(self, key: str, value: Any, **options: Any) -> Item | None:
        return self._run(self._client.put(key, value, **options))

    def update(self, key: str, update: dict[str, Any], **options: Any) -> Item | None:
        return self._run(self._client.update(key, update, **options))

    def incr(self, key: str, amount: int = 1, **options: Any) -> Item | None:
        return self._run(self._client.incr(key, amount, **options))

    def add(self, key: str, *elements: Any, **options: Any) -> Item | None:
        return self._run(self._client.add(key, *elements, **options))

    def remove(self, key: str, *elements: Any, **options: Any) -> Item | None:
        return self._run(self._client.remove(key, *elements, **options))

    def delete(self, key: str, **options: Any) -> Item | None:
        return self._run(self._client.delete(key, **options))

    def batch(self, updates: list[dict[str, Any]], **options: Any) -> list[dict[str, Any]]:
        return self._run(self._client.batch(updates, **options))
