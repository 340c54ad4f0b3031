"""The application client's change feed: `Client.watch` follows `GET /v1/watch` across several nodes.

    async with Client(urls) as rumor, contextlib.aclosing(rumor.watch("user/")) as events:
        async for event in events:
            match event:
                case Change(key=key, deleted=True): view.pop(key, None)
                case Change(key=key, value=value): view[key] = value
                case Snapshot(items=items): view = {key: item.value for key, item in items.items()}

**Resume.** The iterator keeps the cursor of the last event. When the stream ends or drops, it reconnects to the same
node with that cursor, and the node replays every key changed after it: nothing is missed, and a change already seen
comes again only as its key's later state.

**Failover.** When the node cannot be reached (or answers 503), the iterator moves on to the next URL, as the other
calls do. A cursor names a position in one node's history (`v1.<epoch>.<seq>.<node>`), so the new node cannot resume
from it and answers with a reset; so does any node that cannot resume (a cursor too old, a watcher that fell too far
behind). With a fixed `since` from another node the first answer is a reset too.

**Resets, handled (the default, ``resync=True``).** On a reset from node N with cursor C, the iterator hangs up,
lists the prefix on N (`GET /v1/kv?prefix=`, every page) and reads those keys on N (`POST /v1/batch/get`), yields
them as one `Snapshot`, then watches N again from C. What this guarantees:

- The snapshot is N's state under the prefix at the time of the reads, all of it: a key absent from it holds no value
  on N (the caller drops what it had). Its reads come after C, so every change N made or received up to C is in it.
- Every change N makes or receives after C comes as a `Change` after the snapshot (the feed replays from C), and its
  state was read after the snapshot's, so a key never goes back to a state older than the snapshot's for it. A change
  both in the snapshot and after C comes twice, the second time as the same or a later state: applying events in
  order gives N's state.
- What it cannot give: a view no older than what the caller saw before. N may not have received yet what the
  previous node had shown (replication is asynchronous), so after a failover the snapshot can lack recent writes
  made elsewhere; they arrive as `Change` events once N gets them. And the snapshot is held in memory whole.
- If a read for the snapshot fails, the iterator goes on as after a dropped stream; if it then resumes on another
  node, that node's reset starts a new snapshot, so a snapshot is never skipped.

**Resets, surfaced (``resync=False``).** The caller gets the `Reset` (reason, cursor, the server's recipe) and
resyncs itself: list the prefix, read what it needs, then keep iterating (the stream carries on from the reset's
cursor). Changes the caller reads while it lists may show states older than what it listed; `Snapshot` avoids this by
reconnecting after its reads.

**Giving up.** When no node could be connected to for `give_up_s` in a row, the iterator raises
`NoNodeAvailableError`; rounds over every URL repeat meanwhile with a doubling pause (`retry_initial_s` to
`retry_max_s`). A 4xx answer (a malformed `since`, a wrong token) raises `RumorHTTPError` at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp

from rumor.server.client import Item, RumorClient, RumorHTTPError

#: keys listed and read per request while taking a snapshot (the server's limit for both)
SNAPSHOT_PAGE = 1000
#: how long a long-poll that only asks for the current cursor may wait
_HEAD_POLL_MS = 1

_UNREACHABLE = (aiohttp.ClientError, OSError, TimeoutError, ValueError)


@dataclass(frozen=True, slots=True)
class Change:
    """A key's state after a change, as the node showed it when it sent the event (`deleted`: it holds no value,
    `value` and `context` are None). `origin` is "local", "peer" or "unknown"; `node` the URL it came from."""

    key: str
    type: str
    value: Any
    context: str | None
    cursor: str
    origin: str
    deleted: bool
    node: str


@dataclass(frozen=True, slots=True)
class Reset:
    """The node cannot resume from the cursor it was given (`reason`); the feed carries on from `cursor`. `resync`
    is the server's recipe: list the prefix, read what you need, keep watching."""

    reason: str
    cursor: str
    resync: str
    node: str


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Every key under the prefix that holds a value on `node`, read after a reset (`reason`), as ``key -> Item``:
    the caller's whole view is replaced by it. Changes after `cursor` follow (see the module docstring)."""

    reason: str
    cursor: str
    items: dict[str, Item]
    node: str


ClusterWatchEvent = Change | Reset | Snapshot


async def snapshot(node: RumorClient, prefix: str, reason: str, cursor: str) -> Snapshot:
    """Every key under `prefix` that holds a value on `node`, listed page by page and read a page at a time."""
    items: dict[str, Item] = {}
    after: str | None = None
    while True:
        page = await node.keys(prefix, after=after, limit=SNAPSHOT_PAGE)
        keys = [entry["key"] for entry in page["keys"]]
        if keys:
            for result in (await node.get_many(keys))["results"]:
                item = Item.of(result.get("item")) if result["status"] == 200 else None
                if item is not None:
                    items[item.key] = item
        after = page["next"]
        if after is None:
            return Snapshot(reason, cursor, items, node.base_url)


def _change(data: dict[str, Any], node: str) -> Change:
    return Change(data["key"], data["type"], data["value"], data["context"], data["cursor"], data["origin"],
                  bool(data["deleted"]), node)


async def follow(nodes: Sequence[RumorClient], first: int, prefix: str, since: str | None, *, resync: bool,
                 give_up_s: float | None, retry_initial_s: float, retry_max_s: float,
                 sleep: Callable[[float], Awaitable[None]], on_node: Callable[[int], None],
                 no_node: Callable[[str], Exception]) -> AsyncGenerator[ClusterWatchEvent, None]:
    """The iterator behind `Client.watch` (see the module docstring). `on_node(index)` is told which node it
    follows after each connection; `no_node(message)` makes the error raised when it gives up."""
    loop = asyncio.get_running_loop()
    index, cursor = first, since
    resync_from: tuple[int, Reset] | None = None  # a reset whose snapshot is still owed, and its node
    pause = retry_initial_s
    outage_since: float | None = None
    failures_in_round = 0
    last_error: BaseException | None = None
    while True:
        node = nodes[index]
        progress = False  # whether this attempt yielded anything: one that did reconnects here at once
        try:
            if cursor is None:  # "from now": take the node's current cursor first, so a failover skips nothing
                answer = await node.poll_changes(prefix, timeout_ms=_HEAD_POLL_MS)
                cursor = answer["cursor"]
                for data in answer["events"]:
                    progress = True
                    yield _change(data, node.base_url)
            if resync_from is not None and resync_from[0] == index:
                reset = resync_from[1]
                taken = await snapshot(node, prefix, reset.reason, reset.cursor)
                resync_from, cursor, progress = None, reset.cursor, True
                yield taken
            async with node.open_watch(prefix, cursor) as events:
                on_node(index)
                outage_since, failures_in_round, pause = None, 0, retry_initial_s
                async for event in events:
                    progress = True
                    if event.kind == "change":
                        cursor = event.cursor
                        yield _change(event.data, node.base_url)
                        continue
                    reset = Reset(event.data["reason"], event.cursor, event.data["resync"], node.base_url)
                    cursor = reset.cursor
                    if not resync:
                        yield reset
                        continue
                    resync_from = (index, reset)
                    break  # hang up, take the snapshot, then watch again from the reset's cursor
            last_error = None  # the node ended the stream (it is stopping, say), or a snapshot is owed
        except RumorHTTPError as exc:
            if exc.status < 500:
                raise
            last_error = exc
        except _UNREACHABLE as exc:
            last_error = exc
        if progress:
            continue
        # nothing came from this node: on to the next; a whole round of that pauses before the next round
        if outage_since is None:
            outage_since = loop.time()
        index = (index + 1) % len(nodes)
        failures_in_round += 1
        if failures_in_round >= len(nodes):
            if give_up_s is not None and loop.time() - outage_since >= give_up_s:
                urls = ", ".join(n.base_url for n in nodes)
                raise no_node(f"no node answered the watch for {give_up_s:g}s ({urls}): {last_error!r}")
            failures_in_round = 0
            await sleep(pause)
            pause = min(2 * pause, retry_max_s)


__all__ = ["Change", "ClusterWatchEvent", "Reset", "Snapshot", "follow", "snapshot"]
