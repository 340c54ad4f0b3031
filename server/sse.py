"""Server-Sent Events framing (the WHATWG `text/event-stream` format), both ways: `frame` writes one event, and
`read_events` parses a stream back into (event name, data, id) triples.

Why a module of its own: the node's change feed writes the format (`server.watch_http`) and the client reads it
(`server.client.RumorClient.watch`), and both must agree on the same few rules. Only what the feed uses is written:
one `data:` line per event (its JSON never holds a raw newline: JSON escapes them inside strings), an `id:` when
there is a cursor, and comments (`: ...`) as keep-alives. The reader takes the whole format (multi-line data, CR,
CRLF or LF line ends, comments, fields without a space after the colon), so any conforming server parses too.

aiohttp's `StreamReader.readline` refuses lines past 128 KiB, and an event carries a whole value: the reader splits
the raw chunks itself, with no line limit but the size of the event the server sent.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass

CONTENT_TYPE = "text/event-stream"
KEEPALIVE = b": keep-alive\n\n"


@dataclass(frozen=True, slots=True)
class SSEvent:
    """One dispatched event: its name (`message` when the server named none), its data and its `id` (None: none)."""

    event: str
    data: str
    id: str | None = None


def frame(event: str, data: bytes, event_id: str | None = None) -> bytes:
    """One event as it goes on the wire. `data` must hold no line break, nor `event`/`event_id` (a cursor never does:
    `server.watch.Cursor` quotes everything but unreserved characters)."""
    head = f"event: {event}\n" if event_id is None else f"event: {event}\nid: {event_id}\n"
    return head.encode() + b"data: " + data + b"\n\n"


def comment(text: str) -> bytes:
    return f": {text}\n\n".encode()


async def read_events(chunks: AsyncIterable[bytes]) -> AsyncIterator[SSEvent]:
    """The events of a stream, as each completes (a blank line ends one); a partial event at the end is dropped, as
    the format says. A line spread over many chunks (a big value) is joined once, when its end arrives."""
    partial: list[bytes] = []  # the current line's chunks so far
    event, event_id, has_data = "", None, False
    data: list[str] = []
    async for chunk in chunks:
        if b"\n" not in chunk and b"\r" not in chunk:
            partial.append(chunk)
            continue
        text = b"".join((*partial, chunk))
        held = b"\r" if text.endswith(b"\r") else b""  # it may begin a CRLF whose LF is in the next chunk
        lines = text[: len(text) - len(held)].replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n")
        rest = lines.pop() + held
        partial = [rest] if rest else []
        for raw in lines:
            if not raw:
                if has_data:
                    yield SSEvent(event or "message", "\n".join(data), event_id)
                event, data, has_data = "", [], False
                continue
            if raw.startswith(b":"):
                continue
            name, _, value = raw.decode("utf-8", errors="replace").partition(":")
            value = value.removeprefix(" ")
            if name == "event":
                event = value
            elif name == "data":
                data.append(value)
                has_data = True
            elif name == "id" and "\0" not in value:
                event_id = value
