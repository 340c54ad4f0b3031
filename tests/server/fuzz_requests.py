"""Generated HTTP requests for the fuzz suite, each with the verdict the API contract gives it.

A request starts valid (a read, a typed update, a listing) and usually has one part mutated: the key's bytes, a query
option, a header, the body (`fuzz_bodies`), the context. The mutation sets the verdict: `ACCEPT` (a 2xx, or the
404/409 a valid request can meet), `reject(...)` (a 4xx, with the status or error code where the contract names one)
or `ANY` (the contract is silent: only the invariants apply). Builders take hypothesis' `draw` and the session's
`Seen` (contexts read so far, idempotent writes that succeeded), so they can pass a context read from *another* key
and retry an earlier write; `fuzz_oracle` judges the answers. Long keys and big bodies come from a few small draws,
so a session fits hypothesis' data budget.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from fuzz_bodies import (
    ACCEPT,
    ANY,
    MAX_BODY_BYTES,
    SURROGATES,
    Draw,
    Expect,
    combine,
    encode,
    json_values,
    mutated_body,
    reject,
    texts,
    typed_update,
)
from hypothesis import strategies as st

__all__ = ["ACCEPT", "ANY", "MAX_BODY_BYTES", "Draw", "Expect", "FuzzRequest", "Read", "Seen", "combine", "reject"]

MAX_KEY_BYTES = 1024

#: Keys with a fixed type: every generated write to one uses its type (a deliberate conflict aside), so a context read
#: from one is bound to a known (key, type). The names exercise percent-encoding: UTF-8, "/", NUL, a literal "%41".
POOL: dict[str, str] = {
    "count": "counter", "tags": "set", "reg": "register", "mv": "mvregister", "prof": "map",
    "ключ": "set", "a/b": "counter", "🔑 map": "map", "\x00nul": "register", "%41": "mvregister",
}
TYPES = ("counter", "set", "register", "mvregister", "map")
WRITE_METHODS = frozenset({"PUT", "POST", "DELETE"})
JSON_TYPES = ("application/json", "application/json; charset=utf-8", "text/json", "Application/JSON")
MSGPACK_TYPES = ("application/msgpack", "application/x-msgpack", "application/vnd.msgpack")
BAD_TYPES = ("text/plain", "application/xml", "garbage", "application/json+evil", "multipart/form-data; boundary=x")
_UNRESERVED = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")


@dataclass(frozen=True)
class FuzzRequest:
    method: str
    target: str  # the raw request target: percent-encoded path, then "?query" if any
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes | None = None
    expect: Expect = ACCEPT
    label: str = "valid"  # the mutation, i.e. the contract clause probed
    key: str | None = None  # the key the path names, when it is a valid one
    type_name: str | None = None  # the type a write makes or needs
    context: str | None = None  # the context it passes, if any

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers if k.lower() == name.lower()), None)

    def describe(self) -> str:
        """One line to reproduce it by (header values over 60 characters shortened)."""
        headers = " ".join(f"-H {f'{k}: {v[:20]}'!r}...({len(v)} chars)" if len(v) > 60 else f"-H {f'{k}: {v}'!r}"
                           for k, v in self.headers)
        body = "" if self.body is None else f" --data-binary {self.body[:300]!r}" + "..." * (len(self.body) > 300)
        return f"{self.method} {self.target[:300]} {headers}{body}  [{self.label}]"


@dataclass(frozen=True)
class Read:
    key: str
    type_name: str
    context: str


@dataclass
class Seen:
    """What a session learned from answers: contexts (newest last) and idempotent writes that succeeded."""

    contexts: list[Read] = field(default_factory=list)
    idempotent: list[FuzzRequest] = field(default_factory=list)

    def remember(self, read: Read) -> None:
        self.contexts = [*self.contexts[-15:], read]


def percent_encode(data: bytes, *, keep_unreserved: bool = True) -> str:
    return "".join(chr(b) if keep_unreserved and b in _UNRESERVED else f"%{b:02X}" for b in data)


def decoded_key(data: bytes) -> str | None:
    """The key these bytes name, or None where the contract says 400 invalid_key."""
    if not 1 <= len(data) <= MAX_KEY_BYTES:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def idempotency_token(draw: Draw) -> str:
    if draw(st.integers(0, 9)) == 0:
        return "k" * 256  # the longest allowed
    return draw(st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=12))


# -- requests ----------------------------------------------------------------------------------------------------------

def key_segment(draw: Draw) -> tuple[str, str | None, str, Expect]:
    """(path segment, the key it names or None, label, expectation for the key alone)."""
    kind = draw(st.sampled_from(["pool", "pool", "text", "surrogate", "bad_utf8", "long", "slash", "malformed"]))
    keep = draw(st.booleans())  # unreserved characters as they are, or percent-encoded too
    if kind in ("pool", "text"):
        data = (draw(st.sampled_from(sorted(POOL))) if kind == "pool" else draw(st.text(min_size=1, max_size=16)))
        data = data.encode()
    elif kind == "surrogate":
        data = (draw(texts) + draw(SURROGATES) + draw(texts)).encode("utf-8", "surrogatepass")
    elif kind == "bad_utf8":
        bad = draw(st.sampled_from([b"\xff", b"\xc3", b"\xc0\xaf", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\x80",
                                    b"\xe2\x82", b"\xf8\x88\x80\x80\x80"]))
        data = draw(texts).encode() + bad + draw(texts).encode()
    elif kind == "long":
        size = draw(st.sampled_from([1023, 1024, 1025, 1100, 2600]))
        char = draw(st.sampled_from(["a", "é", "€", "𝄞"])).encode()
        data = char * (size // len(char)) + b"a" * (size % len(char))
    elif kind == "slash":  # "/" as it is or as %2F: the same key either way
        key = draw(st.sampled_from(["a/b", "/x", "x/", "a//b", "..", "./y", "%2F", "a?b", "a#b", "a b", "+"]))
        segment = percent_encode(key.encode(), keep_unreserved=keep)
        return (segment.replace("%2F", "/") if keep else segment), key, "key_slash", ACCEPT
    else:  # an escape that is no escape: the contract does not say, only the invariants apply
        segment = percent_encode(draw(texts).encode()) + draw(st.sampled_from(["%", "%z", "%G1", "%F", "%%"]))
        return segment, None, "key_malformed_escape", ANY
    key = decoded_key(data)
    expect = ACCEPT if key is not None else reject(400, "invalid_key")
    return percent_encode(data, keep_unreserved=keep), key, "valid" if kind in ("pool", "text") else f"key_{kind}", \
        expect


_LEVELS = ("1", "quorum", "all")
# not ASCII digits: superscript two and three, Arabic-Indic one and ten, fullwidth ten (str.isdigit() says yes)
_UNICODE_DIGITS = ("\u00b2", "\u00b3", "\u0661", "\u0661\u0660", "\uff11\uff10")
_BAD_LEVELS = ("2", "0", "ALL", "Quorum", "", "one", "1 ", *_UNICODE_DIGITS[:3])
_BAD_NUMBERS = ("0", "-1", "1e3", "+5", " 5", "9" * 400, "", "1.5", "0x10", "1_000", *_UNICODE_DIGITS)


def option_value(draw: Draw, name: str) -> str:
    if name in ("w", "r"):
        return draw(st.sampled_from(_LEVELS))
    if name == "timeout_ms":
        return str(draw(st.integers(1, 60_000)))
    if name == "limit":
        return str(draw(st.integers(1, 1000)))
    return draw(texts)


def query(draw: Draw, allowed: tuple[str, ...], mutate: bool, checked: bool = True) -> tuple[str, str | None, Expect]:
    """A query over the `allowed` options with valid values, or with one mutation (an unknown option, one given
    twice, a bad value); returns (query, label, expectation). `checked`: the route refuses unknown options."""
    chosen = draw(st.lists(st.sampled_from(allowed), unique=True, max_size=2)) if allowed else []
    pairs = [(name, option_value(draw, name)) for name in chosen]
    label, expect = None, ACCEPT
    if mutate:
        numeric = [n for n in allowed if n in ("timeout_ms", "limit", "w", "r")]
        kind = draw(st.sampled_from(["unknown", "duplicate", "value"] if numeric else ["unknown"]))
        if kind == "unknown":
            name = draw(st.sampled_from(["W", "consistency", "x", "limit", "r", "w", "prefix", "op", ""]))
            pairs.append(("bogus" if name in allowed else name, "1"))
        elif kind == "duplicate":
            name = draw(st.sampled_from(numeric))
            pairs += [(name, option_value(draw, name)), (name, option_value(draw, name))]
        else:
            name = draw(st.sampled_from(numeric))
            bad = draw(st.sampled_from(_BAD_LEVELS if name in ("w", "r") else _BAD_NUMBERS))
            pairs = [p for p in pairs if p[0] != name] + [(name, bad)]
        label, expect = f"query_{kind}", reject(400) if checked else ANY
    ordered = draw(st.permutations(pairs))
    text = "&".join(f"{percent_encode(n.encode())}={percent_encode(v.encode())}" for n, v in ordered)
    return text, label, expect


def with_query(path: str, text: str) -> str:
    return f"{path}?{text}" if text else path


def with_option(text: str, name: str, value: str) -> str:
    return "&".join(filter(None, [text, f"{name}={percent_encode(value.encode('utf-8', 'surrogatepass'))}"]))


_GARBAGE_CONTEXTS = ("!!!", "kwGjY3R4kpGSom4xAZ", "AAAA", "a" * 700, "kwGj\ud800", "====", "%FF", "null")


def context_for(draw: Draw, seen: Seen, key: str | None, type_name: str | None, *, foreign: bool,
                exact: bool) -> tuple[str | None, Expect]:
    """A context for a write of (key, type; type None for a DELETE): none or one read from that key, or (`foreign`)
    one read from another key, or garbage. `exact`: nothing else can refuse the write (a key of known type), so the
    contract's 400 bad_context is the only right answer to a foreign context."""
    def same(read: Read) -> bool:
        return read.key == key and type_name in (None, read.type_name)

    if not foreign:
        own = [r.context for r in seen.contexts if same(r)]
        return (draw(st.sampled_from(own)) if own and draw(st.booleans()) else None), ACCEPT
    other = [r.context for r in seen.contexts if r.key != key]
    if other and draw(st.integers(0, 2)):
        return draw(st.sampled_from(other)), reject(400, "bad_context") if exact else reject()
    return draw(st.sampled_from(_GARBAGE_CONTEXTS)), reject(400, label="garbage") if exact else reject(label="garbage")


def body_headers(draw: Draw, fmt: str) -> tuple[tuple[str, str], ...]:
    if fmt == "msgpack":
        return (("Content-Type", draw(st.sampled_from(MSGPACK_TYPES))),)
    choice = draw(st.sampled_from(["absent", *JSON_TYPES]))
    return () if choice == "absent" else (("Content-Type", choice),)


def accept_header(draw: Draw) -> tuple[tuple[str, str], ...]:
    value = draw(st.sampled_from([None, None, "application/json", "application/msgpack", "*/*", "garbage/x",
                                  "application/msgpack;q=0.5, application/json", "application/msgpack;q=abc", ""]))
    return () if value is None else (("Accept", value),)


_BAD_IDEMPOTENCY_KEYS = ("", "k" * 257, "a b", "a\tb", "é", "日本", "\u00a0x", "x" * 1000)


def idempotency_header(draw: Draw, method: str, mutate: bool) -> tuple[tuple[tuple[str, str], ...], Expect]:
    """Sometimes a valid Idempotency-Key; with `mutate` an invalid one (empty, too long, not visible ASCII)."""
    if mutate:
        bad = draw(st.sampled_from(_BAD_IDEMPOTENCY_KEYS))
        verdict = reject(400) if method in ("PUT", "POST") else reject() if method == "DELETE" else ANY
        return (("Idempotency-Key", bad),), verdict
    if draw(st.integers(0, 3)) == 0:
        return (("Idempotency-Key", idempotency_token(draw)),), ACCEPT
    return (), ACCEPT


_OPTIONS = {"GET": ("r", "timeout_ms"), "HEAD": ("r", "timeout_ms"), "PUT": ("w", "timeout_ms"),
            "POST": ("w", "timeout_ms"), "DELETE": ("w", "timeout_ms")}


def kv_request(draw: Draw, seen: Seen, mutation: str | None) -> FuzzRequest:
    """A request on /v1/kv/<key>: valid, or with one `mutation`: "key", "query", "headers", "body", "context" or
    "type_conflict" (a write of another type to a key seen to exist)."""
    method = draw(st.sampled_from(["GET", "HEAD", "PUT", "POST", "POST", "DELETE"]))
    label, parts = "valid", [ACCEPT]
    if mutation == "key":
        segment, key, label, key_expect = key_segment(draw)
        parts.append(key_expect)
    else:
        key = draw(st.sampled_from(sorted(POOL)))
        segment = percent_encode(key.encode(), keep_unreserved=draw(st.booleans()))
    pool_type = POOL.get(key or "")
    type_name = pool_type or draw(st.sampled_from(TYPES))
    if method == "PUT" and pool_type not in (None, "register"):
        method = "POST"
    known = sorted({(r.key, r.type_name) for r in seen.contexts})
    if mutation == "type_conflict" and known:
        key, actual = draw(st.sampled_from(known))
        segment = percent_encode(key.encode())
        type_name = draw(st.sampled_from([t for t in TYPES if t != actual]))
        method = "PUT" if type_name == "register" and draw(st.booleans()) else "POST"
        label, parts = "type_conflict", [reject(409, "type_mismatch")]
    if method == "PUT":
        type_name = "register"
    text, query_label, query_expect = query(draw, _OPTIONS[method], mutation == "query")
    parts.append(query_expect)
    label = query_label or label
    fmt = draw(st.sampled_from(["json", "json", "msgpack"]))
    headers = body_headers(draw, fmt) + accept_header(draw)
    bad_idempotency = mutation == "headers" and (method not in ("PUT", "POST") or draw(st.booleans()))
    idempotency, idempotency_expect = idempotency_header(draw, method, bad_idempotency)
    headers += idempotency
    parts.append(idempotency_expect)
    if bad_idempotency:
        label = "idempotency_bad_key"
    elif mutation == "headers":
        headers = (("Content-Type", draw(st.sampled_from(BAD_TYPES))), *accept_header(draw), *idempotency)
        parts.append(reject(415))
        label, fmt = "content_type", "json"
    context = None
    if method in WRITE_METHODS and mutation != "type_conflict":
        exact = key in POOL and method != "DELETE" and all(p == ACCEPT for p in parts)  # nothing else to refuse
        context, context_expect = context_for(draw, seen, key, None if method == "DELETE" else type_name,
                                              foreign=mutation == "context", exact=exact)
        parts.append(context_expect)
        if mutation == "context":
            label = "context_garbage" if context_expect.label == "garbage" else "context_foreign"
    body: bytes | None = None
    if method == "PUT" or (method == "DELETE" and context is not None and draw(st.booleans())):
        if context is not None:
            text = with_option(text, "context", context)
        if method == "PUT":
            body = encode(draw(json_values), fmt, ascii_json=draw(st.booleans()))
    elif method == "POST":
        body = encode(typed_update(draw, type_name, context, fmt), fmt, ascii_json=draw(st.booleans()))
    elif method == "DELETE" and context is not None:
        body = encode({"context": context}, fmt)
    if mutation == "body" and method in ("PUT", "POST"):
        body, label, body_expect = mutated_body(draw, method, type_name, fmt)
        parts.append(body_expect)
    return FuzzRequest(method, with_query(f"/v1/kv/{segment}", text), headers, body, combine(*parts), label, key,
                       type_name if method in ("PUT", "POST") else None, context)


def delete_body_request(draw: Draw, seen: Seen) -> FuzzRequest:
    """DELETE with a body: an object holding at most "context", or something else."""
    key = draw(st.sampled_from(sorted(POOL)))
    target = f"/v1/kv/{percent_encode(key.encode())}"
    choice = draw(st.sampled_from(["empty_object", "context", "foreign", "unknown", "array", "string"]))
    if choice in ("context", "foreign"):
        context, expect = context_for(draw, seen, key, None, foreign=choice == "foreign", exact=False)
        body = {} if context is None else {"context": context}
        return FuzzRequest("DELETE", target, (), encode(body, "json"), expect,
                           "delete_context" if choice == "foreign" else "valid", key, context=context)
    if choice == "empty_object":
        return FuzzRequest("DELETE", target, (), b"{}", ACCEPT, "valid", key)
    body = {"unknown": {"bogus": 1}, "array": [], "string": "ctx"}[choice]
    return FuzzRequest("DELETE", target, (), encode(body, "json"), reject(400), "delete_body", key)


#: route -> the query options it takes, and whether it refuses others (/health must stay lenient)
_ROUTES = {"/health": ((), False), "/metrics": ((), False), "/v1/members": ((), False), "/v1/cluster": ((), True),
           "/v1/kv": (("prefix", "after", "limit"), True)}


def route_request(draw: Draw) -> FuzzRequest:
    """The other routes (listing, cluster, health, metrics), other methods, and paths that are no route at all."""
    choice = draw(st.sampled_from(["route", "route", "method", "nowhere"]))
    if choice == "nowhere":
        path = draw(st.sampled_from(["/", "/v1", "/v1/", "/v1/kvx", "/v2/kv/a", "/v1/debug/partition",
                                     "/v1/cluster/x", "/v1/KV/a", "/health/x"]))
        tail = draw(texts.map(lambda t: percent_encode(t.encode("utf-8", "surrogatepass"))))
        method = draw(st.sampled_from(["GET", "POST", "PUT", "DELETE"]))
        return FuzzRequest(method, path + ("~" + tail if tail else ""), (), None, reject(404), "route_nowhere")
    if choice == "method":
        path = draw(st.sampled_from([*_ROUTES, "/v1/kv/reg", "/v1/cluster/leave"]))
        methods = ["PATCH", "OPTIONS"] + ([] if path.startswith("/v1/kv/") else ["PUT", "DELETE"])
        return FuzzRequest(draw(st.sampled_from(methods)), path, (), None, reject(405), "route_method")
    path = draw(st.sampled_from(sorted(_ROUTES)))
    allowed, checked = _ROUTES[path]
    text, label, expect = query(draw, allowed, draw(st.booleans()), checked)
    method = draw(st.sampled_from(["GET", "HEAD"]))
    return FuzzRequest(method, with_query(path, text), accept_header(draw), None, expect, label or "valid")


def retry_request(draw: Draw, seen: Seen) -> FuzzRequest | None:
    """An earlier idempotent write that succeeded, sent again as it was, or changed (another key or body) under the
    same Idempotency-Key. The oracle decides what must happen from what it saw the first time."""
    if not seen.idempotent:
        return None
    first = draw(st.sampled_from(seen.idempotent[-8:]))
    change = draw(st.sampled_from(["none", "none", "key", "body"]))
    if change == "none" or first.method == "DELETE" or first.type_name is None:
        return replace(first, label="idempotent_retry")
    if change == "key":
        others = sorted(k for k, t in POOL.items() if t == first.type_name and k != first.key)
        key = draw(st.sampled_from(others)) if others else f"other {first.key}"
        # its context was read from the first key: foreign to this one
        expect = ACCEPT if first.context is None else reject()
        target = with_query(f"/v1/kv/{percent_encode(key.encode())}", first.target.partition("?")[2])
        return replace(first, target=target, key=key, label="idempotency_other_key", expect=expect)
    fmt = "msgpack" if (first.header("Content-Type") or "").endswith("msgpack") else "json"
    value = draw(json_values) if first.method == "PUT" else typed_update(draw, first.type_name, first.context, fmt)
    return replace(first, body=encode(value, fmt), label="idempotency_other_body")


STEP_KINDS = ("valid", "valid", "valid", "valid", "key", "query", "headers", "body", "body", "body", "context", "route",
              "retry", "retry", "delete_body", "type_conflict")


def next_request(draw: Draw, seen: Seen) -> FuzzRequest:
    """One step of a session: about a third valid requests (so state evolves and contexts get read), the rest
    mutated."""
    kind = draw(st.sampled_from(STEP_KINDS))
    if kind == "route":
        return route_request(draw)
    if kind == "delete_body":
        return delete_body_request(draw, seen)
    if kind == "retry":
        retried = retry_request(draw, seen)
        if retried is not None:
            return retried
        kind = "valid"
    return kv_request(draw, seen, None if kind == "valid" else kind)


def raw_bytes(request: FuzzRequest, host: str) -> bytes:
    """The request as bytes on the wire (HTTP/1.1, one request per connection)."""
    head = [f"{request.method} {request.target} HTTP/1.1", f"Host: {host}", "Connection: close"]
    head += [f"{name}: {value}" for name, value in request.headers]
    if request.body is not None:
        head.append(f"Content-Length: {len(request.body)}")
    return ("\r\n".join(head) + "\r\n\r\n").encode("utf-8") + (request.body or b"")
