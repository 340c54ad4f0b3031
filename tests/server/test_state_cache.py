"""Memory as a cache (`server.state_cache`): decoded states are bounded by an estimate of their size; what is over
budget and on disk is dropped to its bytes, least recently used first, and decoded again when next used; a state
changed since its last checkpoint is never dropped. Values, writes and restarts see no difference."""

from __future__ import annotations

from rumor.crdt import ORSet, encode
from rumor.crdt.encoding import compressed
from rumor.server.config import ServerConfig, with_overrides
from rumor.server.node import Node
from rumor.server.state_cache import Entry, StateCache
from rumor.server.updates import Increment, SetChange


def _entry(cache: StateCache, key: str, elements: int) -> Entry:
    state = ORSet()
    for i in range(elements):
        state.merge(state.add("r", i))
    entry = Entry("set", state, key=key, cache=cache)
    entry.stored(compressed(encode(state)))
    return entry


def test_the_least_recently_used_clean_states_go_first_and_come_back_equal() -> None:
    cache = StateCache(limit_bytes=None)
    a, b, c = (_entry(cache, key, 3) for key in "abc")
    before = a.state.copy()  # used: a is now the most recent (order b, c, a)
    cache.limit_bytes = cache.bytes - 1  # one state too many
    assert cache.shrink(max_evictions=10) == 1 and not b.decoded and a.decoded and c.decoded
    c.changed()  # changed since its checkpoint: no bytes to come back from
    cache.limit_bytes = 0
    assert cache.shrink(max_evictions=10) == 1 and not a.decoded and c.decoded  # c stays, whatever the budget
    assert len(cache) == 1 and cache.bytes == c.estimated_bytes()
    assert a.state == before and a.decoded and len(cache) == 2  # decoded again on use, and counted again


def test_a_cache_within_budget_drops_nothing() -> None:
    cache = StateCache(limit_bytes=10**9)
    entries = [_entry(cache, f"k{i}", 2) for i in range(5)]
    assert cache.shrink(100) == 0 and all(e.decoded for e in entries)
    assert StateCache(limit_bytes=None).shrink(100) == 0


async def test_a_node_keeps_decoded_states_within_its_budget_and_answers_the_same(disk_config: ServerConfig) -> None:
    config = with_overrides(disk_config, state_cache_bytes=64 * 1024)
    async with Node(config) as node:
        for i in range(200):
            await node.update(f"s{i:03d}", SetChange(add=(i, "x")))
            await node.update(f"c{i:03d}", Increment(amount=i + 1))
        node.checkpoint(len(node.checkpointer.dirty))
        node.checkpoint_round()
        cache = node.keyspace.cache
        assert cache.bytes <= 64 * 1024 and cache.evictions > 300
        decoded = [key for key in node.keyspace if node.keyspace.entry(key).decoded]  # type: ignore[union-attr]
        assert len(decoded) == len(cache) < 100
        assert (await node.read("s007")).value == [7, "x"]  # type: ignore[union-attr]
        await node.update("c010", Increment(amount=5))  # a write to an evicted key: decoded, then changed
        assert (await node.read("c010")).value == 16  # type: ignore[union-attr]
        assert [key for key, _ in node.keys(limit=1000).keys] == sorted(node.keyspace)
    async with Node(config) as node:
        assert (await node.read("c010")).value == 16  # type: ignore[union-attr]
        assert (await node.read("s199")).value == [199, "x"]  # type: ignore[union-attr]
