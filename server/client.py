"""A small async client for one rumor node's HTTP API (used by the CLI, tests, the demo and benchmarks).

    async with RumorClient("http://127.0.0.1:7000") as client:
        await client.incr("visits", 5)
        item = await client.get("visits")   # {"key", "type", "value", "context"} or None

`watch(prefix, since)` follows the change feed (`GET /v1/watch` as Server-Sent Events) and resumes by itself after a
dropped connection, from the last cursor it saw.

Errors come back as `RumorHTTPError` carrying the status and the server's error code. The base URL may omit its
scheme (``127.0.0.1:7000`` means ``http://127.0.0.1:7000``); one that is no http(s) URL with a host raises
`InvalidNodeURLError` at once, before anything is sent.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any
from urllib.parse import quote

import aiohttp
import yarl

from rumor.server.errors import MalformedBodyError, ServerError
from rumor.server.negotiation import JSON, MSGPACK, decode_body, encode_body
from rumor.server.sse import CONTENT_TYPE as EVENT_STREAM
from rumor.server.sse import read_events


class RumorHTTPError(ServerError):
    """The node answered with an error status."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message


class MalformedResponseError(ServerError, ValueError):
    """The node (or something between) answered with a body that does not decode as its content type says."""


class InvalidNodeURLError(ServerError, ValueError):
    """A node URL that cannot be used: not http(s), no host, a bad port, a query or fragment."""

    code = "bad_node_url"

    def __init__(self, text: str, reason: str) -> None:
        super().__init__(f"not a node URL: {text!r} ({reason}); expected one like http://127.0.0.1:7000")
        self.text = text
        self.reason = reason


_HOST = re.compile(r"[A-Za-z0-9._~%:-]+")


def node_url(text: str) -> str:
    """The base URL of a node from what a user typed: ``host:port`` gets ``http://``, a trailing slash goes.

    Raises `InvalidNodeURLError` for anything that is not an http(s) URL with a host (and nothing after the path).
    """
    raw = text.strip()
    try:
        url = yarl.URL(raw if "://" in raw else f"http://{raw}")
        url.port  # noqa: B018 -- parses the port: "7x00" or 99999 raise here, not at the first request
    except (ValueError, TypeError) as exc:
        reason = str(exc).removeprefix("Invalid URL: ")
        raise InvalidNodeURLError(text, reason[:1].lower() + reason[1:]) from None
    if url.scheme not in ("http", "https"):
        raise InvalidNodeURLError(text, f"the scheme is {url.scheme!r}, not http or https")
    if not url.host or not _HOST.fullmatch(url.host):
        raise InvalidNodeURLError(text, "no valid host")
    if url.query_string or url.fragment:
        raise InvalidNodeURLError(text, "a node URL has no query or fragment")
    return str(url).rstrip("/")


@dataclass(frozen=True, slots=True)
class WatchEvent:
    """One event of the change feed: `kind` "change" (`data`: key, type, value, context, cursor, origin, deleted) or
    "reset" (`data`: reason, cursor, resync: list the prefix, then carry on from the reset's cursor)."""

    kind: str
    data: dict[str, Any]

    @property
    def cursor(self) -> str:
        return str(self.data["cursor"])


#: the server comments every 15 s on an idle stream: three missed in a row is a dead connection
WATCH_IDLE_TIMEOUT_S = 45.0


def _options(**options: Any) -> dict[str, str]:
    return {name: str(value) for name, value in options.items() if value is not None}


class RumorClient:
    def __init__(
        self,
        base_url: str,
        *,
        token: str | None = None,
        use_msgpack: bool = False,
        timeout_s: float = 10.0,
        session: aiohttp.ClientSession | None = None,
    ) -> None:
        self.base_url = node_url(base_url)
        self._format = MSGPACK if use_msgpack else JSON
        self._headers = {"Accept": self._format}
        if token is not None:
            self._headers["Authorization"] = f"Bearer {token}"
        self._own_session = session is None
        self._session = session or aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout_s))

    async def __aenter__(self) -> RumorClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        if self._own_session:
            await self._session.close()

    async def request(
        self, method: str, path: str, *, body: Any = None, has_body: bool = False, params: dict[str, str] | None = None,
        op_id: str | None = None,
    ) -> tuple[int, Any]:
        """One request; returns (status, decoded body or None). Raises RumorHTTPError for 4xx/5xx.

        `op_id` goes in the `Idempotency-Key` header: a retry with the same op_id is applied once."""
        headers = dict(self._headers)
        if op_id is not None:
            headers["Idempotency-Key"] = op_id
        data = None
        if has_body or body is not None:
            data = encode_body(body, self._format)
            headers["Content-Type"] = self._format
        async with self._session.request(method, self.base_url + path, data=data, params=params,
                                         headers=headers) as response:
            raw = await response.read()
            media = response.content_type
            if response.status >= 400:
                raise self._error(response.status, raw)
            if not raw:
                return response.status, None
            if media not in (MSGPACK, JSON):
                return response.status, raw.decode(errors="replace")
            try:
                return response.status, decode_body(raw, media)
            except MalformedBodyError as exc:
                raise MalformedResponseError(f"{method} {path}: the answer's {exc}") from None

    @staticmethod
    def _error(status: int, raw: bytes) -> RumorHTTPError:
        """Error bodies are always JSON `{"error": {"code", "message"}}` (proxies may answer with anything)."""
        try:
            error = json.loads(raw)["error"]
            return RumorHTTPError(status, str(error["code"]), str(error["message"]))
        except (ValueError, KeyError, TypeError):
            return RumorHTTPError(status, "http_error", raw.decode(errors="replace"))

    @staticmethod
    def _key_path(key: str) -> str:
        return "/v1/kv/" + quote(key, safe="")

    # -- key/value -------------------------------------------------------------------------------------------------

    async def get(self, key: str, *, r: str | None = None, timeout_ms: int | None = None) -> dict[str, Any] | None:
        """The item, or None when the key is absent."""
        try:
            _, item = await self.request("GET", self._key_path(key), params=_options(r=r, timeout_ms=timeout_ms))
        except RumorHTTPError as exc:
            if exc.status == 404 and exc.code == "not_found":
                return None
            raise
        return item

    async def put(
        self, key: str, value: Any, *, context: str | None = None, op_id: str | None = None, w: str | None = None
    ) -> dict[str, Any]:
        """Writes a last-writer-wins register."""
        _, item = await self.request("PUT", self._key_path(key), body=value, has_body=True,
                                     params=_options(context=context, w=w), op_id=op_id)
        return item

    async def update(self, key: str, update: dict[str, Any], *, w: str | None = None, timeout_ms: int | None = None,
                     op_id: str | None = None) -> dict[str, Any] | None:
        """A typed update (the POST body as documented), e.g. {"type": "set", "add": [1]}; None when it left the
        key without a value (204)."""
        _, item = await self.request("POST", self._key_path(key), body=update,
                                     params=_options(w=w, timeout_ms=timeout_ms), op_id=op_id)
        return item

    async def incr(self, key: str, amount: int = 1, *, op_id: str | None = None) -> dict[str, Any] | None:
        return await self.update(key, {"type": "counter", "increment": amount}, op_id=op_id)

    async def add(self, key: str, *elements: Any, op_id: str | None = None) -> dict[str, Any] | None:
        return await self.update(key, {"type": "set", "add": list(elements)}, op_id=op_id)

    async def remove(self, key: str, *elements: Any, context: str | None = None) -> dict[str, Any] | None:
        body: dict[str, Any] = {"type": "set", "remove": list(elements)}
        return await self.update(key, body | ({"context": context} if context else {}))

    async def delete(self, key: str, *, context: str | None = None, op_id: str | None = None) -> dict[str, Any] | None:
        """Observed-remove of the key; returns the surviving item (concurrent updates) or None."""
        _, item = await self.request("DELETE", self._key_path(key), params=_options(context=context), op_id=op_id)
        return item

    async def batch(self, updates: list[dict[str, Any]], *, w: str | None = None, timeout_ms: int | None = None,
                    items: bool = False) -> dict[str, Any]:
        """Many typed updates in one request: each a POST body plus its "key" (and an optional "op_id"). Returns
        {"results": [one per update, with its "status" (and "item" with `items`)], "errors": bool}."""
        _, answer = await self.request("POST", "/v1/batch", body={"updates": updates},
                                       params=_options(w=w, timeout_ms=timeout_ms, items="true" if items else None))
        return answer

    async def get_many(self, keys: list[str], *, r: str | None = None,
                       timeout_ms: int | None = None) -> dict[str, Any]:
        """Many reads in one request: {"results": [{"key", "status": 200 with "item", or 404}, ...], "errors"}."""
        _, answer = await self.request("POST", "/v1/batch/get", body={"keys": keys},
                                       params=_options(r=r, timeout_ms=timeout_ms))
        return answer

    async def keys(self, prefix: str = "", *, after: str | None = None, limit: int | None = None) -> dict[str, Any]:
        """One page: {"keys": [{"key", "type"}], "next": cursor or None}."""
        _, page = await self.request("GET", "/v1/kv", params=_options(prefix=prefix or None, after=after, limit=limit))
        return page

    async def all_keys(self, prefix: str = "", *, page_size: int = 1000) -> list[dict[str, str]]:
        keys: list[dict[str, str]] = []
        after = None
        while True:
            page = await self.keys(prefix, after=after, limit=page_size)
            keys.extend(page["keys"])
            after = page["next"]
            if after is None:
                return keys

    # -- change feed -----------------------------------------------------------------------------------------------

    async def poll_changes(self, prefix: str = "", since: str | None = None, *,
                           timeout_ms: int | None = None) -> dict[str, Any]:
        """One long-poll of the change feed: {"events", "cursor" (pass it as `since` next), "reset"}. With a tiny
        `timeout_ms` and no `since` it answers at once with the current cursor: a place to watch from."""
        _, answer = await self.request("GET", "/v1/watch",
                                       params=_options(prefix=prefix or None, since=since, timeout_ms=timeout_ms))
        return answer

    async def watch(self, prefix: str = "", since: str | None = None, *,
                    on_retry: Callable[[BaseException | None, str | None], None] | None = None,
                    retry_initial_s: float = 0.1, retry_max_s: float = 5.0) -> AsyncGenerator[WatchEvent, None]:
        """Every change under `prefix` (after the cursor `since`, or from now), as it happens, until the caller stops.

        A dropped connection (or a node restarting) is retried with a doubling delay, resuming from the last cursor
        seen: no change is missed, and one seen already comes again only as its key's later state. Resets come
        through as events too: the caller resyncs (list the prefix, read what it needs) and carries on iterating,
        since the feed continues from the reset's cursor. `on_retry(error or None for a stream the node ended,
        cursor)` is called before each reconnection. A 4xx answer (a malformed `since`, a wrong token) raises
        `RumorHTTPError`. Iterate inside `contextlib.aclosing` to hang up as soon as the loop ends.
        """
        cursor = since
        delay = retry_initial_s
        headers = self._headers | {"Accept": EVENT_STREAM}
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=10.0, sock_read=WATCH_IDLE_TIMEOUT_S)
        while True:
            error: BaseException | None = None
            try:
                async with self._session.get(self.base_url + "/v1/watch", headers=headers, timeout=timeout,
                                             params=_options(prefix=prefix or None, since=cursor)) as response:
                    if response.status >= 400:
                        failure = self._error(response.status, await response.read())
                        if response.status < 500:
                            raise failure
                        error = failure
                    else:
                        async for sse in read_events(response.content.iter_any()):
                            if sse.event not in ("change", "reset"):
                                continue
                            event = WatchEvent(sse.event, json.loads(sse.data))
                            cursor = event.cursor
                            delay = retry_initial_s
                            yield event
            except (aiohttp.ClientError, OSError, TimeoutError, ValueError) as exc:
                error = exc
            if on_retry is not None:
                on_retry(error, cursor)
            await asyncio.sleep(delay)
            delay = min(2 * delay, retry_max_s)

    # -- node ------------------------------------------------------------------------------------------------------

    async def members(self) -> list[dict[str, Any]]:
        _, body = await self.request("GET", "/v1/members")
        return body["members"]

    async def convergence(self) -> dict[str, Any]:
        """Whether the node holds the same data as every member now: `GET /v1/cluster/convergence`."""
        _, body = await self.request("GET", "/v1/cluster/convergence")
        return body

    async def health(self) -> dict[str, Any]:
        _, body = await self.request("GET", "/health")
        return body

    async def metrics(self) -> str:
        _, text = await self.request("GET", "/metrics")
        return text
