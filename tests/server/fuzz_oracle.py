"""Judging a fuzzed node's answers: the invariants every answer must keep, and the contract's word on each request.

Invariants, for every request: no 5xx; an error (>= 400, HEAD aside) has exactly the body
`{"error": {"code": str, "message": str}}` as JSON; a rejected request (4xx) changes no key (`snapshot` before and
after: every key's encoded state). Contract, where the generator knew it (`Expect`): a valid request is answered 2xx
(or 404/409), an invalid one 4xx with the status and error code the contract names. Idempotency is judged against what
the session saw: a retry of a write that succeeded under the same `Idempotency-Key` replays its first answer (same
status and body, `X-Rumor-Replayed: true`, no change), another request under it is 422 `op_id_conflict`.

Each kind of violation is its own exception class, so hypothesis reports (and shrinks) each kind separately.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import re
import socket
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgpack
from aiohttp import ClientSession
from aiohttp.test_utils import TestClient, TestServer
from fuzz_requests import (
    ANY,
    MAX_BODY_BYTES,
    WRITE_METHODS,
    Draw,
    Expect,
    FuzzRequest,
    Read,
    Seen,
    next_request,
    reject,
)
from yarl import URL

from rumor.crdt import encode
from rumor.server.config import ServerConfig
from rumor.server.http_api import create_app
from rumor.server.node import Node

_VISIBLE_ASCII = re.compile(r"[\x21-\x7e]{1,256}")
_SAMPLE = re.compile(r'^rumor_http_requests_total\{route="([^"]*)",method="([^"]*)",status="(\d+)"\} (\S+)$', re.M)


@dataclass(frozen=True)
class Answer:
    status: int
    headers: dict[str, str]  # lower-case names
    body: bytes

    def json(self) -> Any:
        if self.headers.get("content-type", "").startswith("application/msgpack"):
            return msgpack.unpackb(self.body, raw=False)
        return json.loads(self.body)


class Violation(AssertionError):
    """A broken invariant or contract clause; `kind` names which."""

    kind = "violation"


_CLASSES: dict[str, type[Violation]] = {}


def violation(kind: str, request: FuzzRequest | None, answer: Answer | None, detail: str,
              history: list[str] = ()) -> Violation:  # type: ignore[assignment]
    cls = _CLASSES.get(kind)
    if cls is None:
        name = "".join(part.title() for part in re.split(r"[^a-zA-Z0-9]+", kind) if part) + "Violation"
        cls = _CLASSES[kind] = type(name, (Violation,), {"kind": kind})
    if request is None:
        return cls(f"{kind}: {detail}")
    shown = "no answer" if answer is None else f"{answer.status} {answer.body[:300]!r}"
    before = "".join(f"\n    {line}" for line in history)
    return cls(f"{kind}: {detail}\n  request: {request.describe()}\n  answer:  {shown}"
               + (f"\n  after (status, request):{before}" if before else ""))


UNENCODABLE = b"\0unencodable: "


def snapshot(node: Node) -> dict[str, bytes]:
    """Every key's encoded state; a state that does not encode (so could be neither stored nor gossiped) is marked."""
    keyspace = node.keyspace
    states = {}
    for key in keyspace:
        try:
            states[key] = encode(keyspace.entry(key).state)  # type: ignore[union-attr]
        except Exception as exc:  # what is wrong with it is the finding
            states[key] = UNENCODABLE + f"{type(exc).__name__}: {exc}".encode("utf-8", "replace")
    return states


def changed_keys(before: dict[str, bytes], after: dict[str, bytes]) -> list[str]:
    return sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))


def error_shape_problem(answer: Answer) -> str | None:
    if not answer.headers.get("content-type", "").startswith("application/json"):
        return f"content type {answer.headers.get('content-type')!r}, not JSON"
    try:
        body = json.loads(answer.body)
    except ValueError:
        return "body is not JSON"
    if not (isinstance(body, dict) and set(body) == {"error"} and isinstance(body["error"], dict)
            and set(body["error"]) == {"code", "message"}
            and all(isinstance(body["error"][k], str) for k in ("code", "message"))):
        return "not exactly {'error': {'code': str, 'message': str}}"
    return None


def error_code(answer: Answer) -> str | None:
    try:
        return json.loads(answer.body)["error"]["code"]
    except (ValueError, KeyError, TypeError):
        return None


def same_bytes(a: FuzzRequest, b: FuzzRequest) -> bool:
    return (a.method, a.target, a.headers, a.body) == (b.method, b.target, b.headers, b.body)


def meaning(request: FuzzRequest) -> str | None:
    """What an idempotent write asks for, whatever its encoding: key, update kind, fields (the context included,
    `w` and the like not), as canonical JSON; None when it cannot be told. Two writes of different meaning under one
    Idempotency-Key are a conflict; of the same meaning, a retry (the node may re-encode, reorder, dedupe)."""
    if request.key is None:
        return None
    query = dict(pair.partition("=")[::2] for pair in request.target.partition("?")[2].split("&") if pair)
    try:
        msgpack_body = (request.header("Content-Type") or "").endswith("msgpack")
        body = None if not request.body else \
            msgpack.unpackb(request.body, raw=False) if msgpack_body else json.loads(request.body)
    except (ValueError, RecursionError, msgpack.UnpackException):
        return None
    if request.method == "PUT":
        update: Any = {"type": "register", "value": body, "context": query.get("context")}
    elif request.method == "DELETE":
        in_body = body.get("context") if isinstance(body, dict) else None
        update = {"type": "clear", "context": query.get("context", in_body)}
    elif isinstance(body, dict):
        update = {"context": None} | body
        for name in ("add", "remove"):  # the node dedupes elements and removed fields
            if isinstance(update.get(name), list):
                update[name] = list({json.dumps(v, sort_keys=True): v for v in update[name]}.values())
    else:
        return None
    try:
        return json.dumps([request.key, update], sort_keys=True)
    except (TypeError, ValueError, RecursionError):
        return None


class Oracle:
    """Judges one session's answers; `strict` raises the first violation (tests), else records them (soak)."""

    def __init__(self, node: Node | None = None, *, strict: bool = True) -> None:
        self.node = node
        self.strict = strict
        self.seen = Seen()
        self.first_use: dict[str, tuple[FuzzRequest, Answer]] = {}
        self.tainted: set[str] = set()  # idempotency keys whose first use was refused: the contract is silent
        self.statuses: Counter[str] = Counter()
        self.violations: list[Violation] = []
        self.history: list[str] = []  # the session so far, one line a request: shown with a violation

    def expectation(self, request: FuzzRequest) -> tuple[Expect, str | None]:
        """The request's own expectation, adjusted by its Idempotency-Key's history: ("replay" | "conflict" | None)."""
        token = (request.header("Idempotency-Key") or "").strip()
        if request.method not in WRITE_METHODS or not _VISIBLE_ASCII.fullmatch(token):
            return request.expect, None
        if token in self.first_use:
            first, _ = self.first_use[token]
            if same_bytes(first, request):
                return request.expect, "replay"
            first_meaning, this_meaning = meaning(first), meaning(request)
            if first_meaning is None or this_meaning is None or first_meaning == this_meaning:
                return (reject() if request.expect.outcome == "reject" else ANY), None  # a retry, re-encoded
            return (reject(422, "op_id_conflict") if request.expect.outcome == "accept" else reject()), "conflict"
        if token in self.tainted:  # a refused first use: whether the node kept it, the contract does not say
            return (reject() if request.expect.outcome == "reject" else ANY), None
        return request.expect, None

    def judge(self, request: FuzzRequest, answer: Answer, before: dict[str, bytes] | None = None,
              after: dict[str, bytes] | None = None) -> list[Violation]:
        expect, mode = self.expectation(request)
        status = answer.status
        self.statuses[f"{status // 100}xx"] += 1
        found: list[Violation] = []

        def fail(kind: str, detail: str) -> None:
            found.append(violation(kind, request, answer, detail, self.history[-12:]))

        changed = changed_keys(before, after) if before is not None and after is not None else []
        if status >= 500:
            fail("server_error", f"status {status}" + (f"; keys changed: {changed!r}" if changed else ""))
        if status >= 400 and request.method != "HEAD" and (problem := error_shape_problem(answer)):
            fail("error_shape", problem)
        if 400 <= status < 500 and changed:
            fail("changed_on_reject", f"a {status} changed {changed!r}")
        broken = [k for k in changed if (after or {}).get(k, b"").startswith(UNENCODABLE)]
        if broken:
            fail("unencodable_state", f"the state of {broken!r} no longer encodes: {after[broken[0]]!r}")
        code = error_code(answer) if status >= 400 else None
        if mode == "replay":
            first = self.first_use[(request.header("Idempotency-Key") or "").strip()][1]
            partial = first.status == 202  # fewer acks than w asked: the replay may say 200 (or 202) with the item
            allowed = {200, 202} if partial else {first.status}
            if answer.headers.get("x-rumor-replayed") != "true" or status not in allowed:
                fail("idempotent_retry", f"expected a replay of {first.status} with X-Rumor-Replayed: true")
            elif request.method != "HEAD" and not partial and answer.body != first.body:
                fail("idempotent_retry", f"replayed body differs from the first answer {first.body[:200]!r}")
            if changed:
                fail("idempotent_retry", f"the retry changed {changed!r}")
        elif expect.outcome == "accept" and not (status < 300 or status in (404, 409)):
            fail(f"contract_{request.label}", f"a valid request got {status} {code}")
        elif expect.outcome == "reject":
            if not 400 <= status < 500:
                fail(f"contract_{mode or request.label}", f"expected a 4xx{_named(expect)}, got {status}")
            elif (expect.status is not None and status != expect.status) or \
                    (request.method != "HEAD" and expect.code not in (None, code)):
                fail(f"contract_{mode or request.label}", f"expected{_named(expect)}, got {status} {code}")
        if status >= 400 and request.method != "HEAD":
            message = _message(answer)
            if message is not None and message.rstrip().endswith(":"):  # "body is not valid msgpack: " and no reason
                fail("error_reason", f"the message gives no reason: {message!r}")
        if 200 <= status < 300 and status != 204 and request.method != "HEAD" and request.key is not None:
            item = _item(answer)
            if item is not None and item.get("key") != request.key:
                fail("item_key", f"the item names key {item.get('key')!r}, the path {request.key!r}")
        self._learn(request, answer, mode)
        self.history.append(f"{answer.status} {request.describe()[:240]}")
        self.violations += found
        if found and self.strict:
            raise found[0]
        return found

    def _learn(self, request: FuzzRequest, answer: Answer, mode: str | None) -> None:
        item = _item(answer) if 200 <= answer.status < 300 and request.method != "HEAD" else None
        if item is not None and request.key is not None and item.get("key") == request.key \
                and isinstance(item.get("type"), str) and isinstance(item.get("context"), str):
            self.seen.remember(Read(request.key, item["type"], item["context"]))
        token = (request.header("Idempotency-Key") or "").strip()
        if request.method not in WRITE_METHODS or not _VISIBLE_ASCII.fullmatch(token) or mode is not None \
                or token in self.first_use:
            return
        if 200 <= answer.status < 300:  # the node keeps this answer for the key (after a refused use too)
            self.first_use[token] = (request, answer)
            self.seen.idempotent.append(request)
        else:
            self.tainted.add(token)


def _named(expect: Expect) -> str:
    return "".join(f" {part}" for part in (expect.status, expect.code) if part is not None)


def _message(answer: Answer) -> str | None:
    try:
        return json.loads(answer.body)["error"]["message"]
    except (ValueError, KeyError, TypeError):
        return None


def _item(answer: Answer) -> dict[str, Any] | None:
    try:
        body = answer.json()
    except (ValueError, RecursionError, msgpack.UnpackException):
        return None
    return body if isinstance(body, dict) and "key" in body and "type" in body else None


# -- sending -----------------------------------------------------------------------------------------------------------

async def send(session: ClientSession, base: str, request: FuzzRequest) -> Answer:
    """Through aiohttp's client, the target exactly as generated (no re-quoting, no added Content-Type)."""
    url = URL(base + request.target, encoded=True)
    async with session.request(request.method, url, headers=list(request.headers), data=request.body,
                               skip_auto_headers=["Content-Type"]) as response:
        body = await response.read()
        return Answer(response.status, {k.lower(): v for k, v in response.headers.items()}, body)


def exchange(host: str, port: int, data: bytes, *, timeout_s: float = 5.0,
             close_after_send: bool = False) -> Answer | None:
    """Raw bytes over one TCP connection; the answer, or None when the server closed without one (or we hung up)."""
    with socket.create_connection((host, port), timeout=timeout_s) as sock:
        try:
            sock.sendall(data)
        except OSError:
            return None
        if close_after_send:
            return None
        chunks = []
        try:
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        except OSError:
            pass
    return parse_answer(b"".join(chunks))


def parse_answer(raw: bytes) -> Answer | None:
    head, sep, rest = raw.partition(b"\r\n\r\n")
    if not sep:
        return None
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[1].isdigit():
        return None
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = headers.get("content-length")
    return Answer(int(parts[1]), headers, rest[: int(length)] if length and length.isdigit() else rest)


def http_counts(metrics_text: str) -> dict[tuple[str, str, str], float]:
    """`rumor_http_requests_total` samples from /metrics: (route, method, status) -> count."""
    return {(route, method, status): float(n) for route, method, status, n in _SAMPLE.findall(metrics_text)}


# -- what else must hold -----------------------------------------------------------------------------------------------

def background_trouble(node: Node, *, durable: bool) -> dict[str, str]:
    """Whatever says a background task died or failed, found defensively across versions of the node: its
    `failing()` (storage, supervised components), the supervisor's failure counts and fatal flag, and for a durable
    node a live checkpointer task (the supervisor's "supervised:checkpointer", or the older `_checkpointer`)."""
    trouble: dict[str, str] = {}
    failing = getattr(node, "failing", None)
    if callable(failing):
        trouble.update(failing())
    supervisor = getattr(node, "supervisor", None)
    if supervisor is not None:
        counts = getattr(supervisor, "failure_counts", None)
        trouble.update({f"{name} failures": str(n) for name, n in (counts() if callable(counts) else {}).items() if n})
        if getattr(supervisor, "fatal", None):
            trouble["fatal"] = str(supervisor.fatal)
    if durable:
        legacy = getattr(node, "_checkpointer", None)
        live = {t.get_name() for t in asyncio.all_tasks() if not t.done()}
        if not ((isinstance(legacy, asyncio.Task) and not legacy.done()) or "supervised:checkpointer" in live):
            trouble["checkpointer"] = "no live checkpointer task"
    if not node.ready:
        trouble.setdefault("node", "not ready")
    return trouble


class ErrorRecords(logging.Handler):
    """Collects log records at ERROR and above (an unhandled error is logged even when the client never sees it)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(f"{record.name}: {record.getMessage()}"[:500])


@contextmanager
def error_records() -> Iterator[ErrorRecords]:
    handler = ErrorRecords()
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield handler
    finally:
        root.removeHandler(handler)


def record_loop_exceptions(loop: asyncio.AbstractEventLoop) -> list[str]:
    """Routes the loop's unhandled exceptions ("Task exception was never retrieved", ...) into a list."""
    seen: list[str] = []
    loop.set_exception_handler(lambda _loop, context: seen.append(
        f"{context.get('message')}: {context.get('exception')!r}"[:500]))
    return seen


# -- one session -------------------------------------------------------------------------------------------------------

def fuzz_config(data_dir: Path | None) -> ServerConfig:
    """The fuzzed node: a small body limit (oversized bodies stay cheap); durable with a busy checkpointer, or in
    memory."""
    if data_dir is None:
        return ServerConfig(in_memory=True, node_id="fuzz", max_body_bytes=MAX_BODY_BYTES)
    return ServerConfig(data_dir=data_dir, node_id="fuzz", max_body_bytes=MAX_BODY_BYTES, checkpoint_interval_s=0.01,
                        checkpoint_batch_keys=2)


async def fuzz_session(draw: Draw, steps: int, *, data_dir: Path | None = None, strict: bool = True) -> Oracle:
    """A fresh node, `steps` generated requests judged one by one, then what must hold after them: /health is 200,
    no background task failed, nothing logged at ERROR, no unhandled loop exception; for a durable node, a restart
    shows the same keys with the same states. Returns the oracle (its violations when not `strict`)."""
    loop_errors = record_loop_exceptions(asyncio.get_running_loop())
    with error_records() as logged:
        async with Node(fuzz_config(data_dir)) as node, TestClient(TestServer(create_app(node))) as client:
            oracle = Oracle(node, strict=strict)
            base = str(client.make_url("")).rstrip("/")
            for _ in range(steps):
                request = next_request(draw, oracle.seen)
                before = snapshot(node)
                answer = await send(client.session, base, request)
                oracle.judge(request, answer, before, snapshot(node))
            health = await send(client.session, base, FuzzRequest("GET", "/health"))
            final = snapshot(node)
            problems = [] if health.status == 200 else [("health", f"/health answered {health.status} {health.body!r}")]
            if trouble := background_trouble(node, durable=data_dir is not None):
                problems.append(("background", f"background trouble: {trouble}"))
        if data_dir is not None:
            async with Node(fuzz_config(data_dir)) as again:
                if (restarted := snapshot(again)) != final:
                    problems.append(("restart", f"after a restart these keys differ: {changed_keys(final, restarted)}"))
        gc.collect()  # a task that died unobserved reports itself when collected
        await asyncio.sleep(0)
    problems += [("error_log", f"logged at ERROR: {line}") for line in logged.lines]
    problems += [("loop_exception", line) for line in loop_errors]
    for kind, detail in problems:
        oracle.violations.append(violation(kind, None, None, detail))
        if strict:
            raise oracle.violations[-1]
    return oracle
