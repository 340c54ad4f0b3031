"""Loop work in slices bounded by time (`server.loop_slices`): a slice ends once its budget is spent, whatever its
count, and the loop runs other work between slices. Driven by hand clocks: a clock that never moves keeps a piece
of work in one slice; one that says every step used up a whole slice makes each step a slice of its own."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from functools import partial

from rumor.server.checkpointer import CHECKPOINT_STEP_KEYS, EVICTION_STEP
from rumor.server.config import ServerConfig, with_overrides
from rumor.server.loop_slices import SLICE_S, TimeSlices
from rumor.server.node import Node
from rumor.server.updates import Increment, SetChange


class ManualClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def slice_long_clock() -> Callable[[], float]:
    """A clock each reading of which is a whole slice after the last."""
    return partial(next, itertools.count(0.0, SLICE_S))


async def test_a_slice_ends_when_its_budget_is_spent_and_not_before() -> None:
    clock = ManualClock()
    slices = TimeSlices(0.002, clock)
    ran: list[str] = []
    asyncio.get_running_loop().call_soon(ran.append, "other work")
    clock.now = 0.0019
    assert not slices.due()
    await slices.checkpoint()
    assert slices.pauses == 0 and ran == [], "within its budget the work keeps the loop"
    clock.now = 0.002
    assert slices.due()
    await slices.checkpoint()
    assert slices.pauses == 1 and ran == ["other work"], "past it, whatever was ready ran first"
    assert not slices.due(), "the next slice starts at the pause"
    clock.now = 0.0039
    assert not slices.due()
    clock.now = 0.004
    assert slices.due()


async def test_a_checkpoint_round_gives_the_loop_back_after_each_spent_slice(disk_config: ServerConfig) -> None:
    async with Node(disk_config) as node:
        keys = 3 * CHECKPOINT_STEP_KEYS
        await node.update_batch([(f"k{i:03d}", Increment(amount=1), None) for i in range(keys)])
        checkpointer = node.checkpointer
        assert len(checkpointer.dirty) == keys
        checkpointer.slice_clock = slice_long_clock()
        seen: list[int] = []
        loop = asyncio.get_running_loop()
        loop.call_soon(lambda: loop.call_soon(lambda: seen.append(len(checkpointer.dirty))))
        assert await checkpointer.round_in_slices() == keys
        assert not checkpointer.dirty
        assert seen and seen[0] >= keys - 2 * CHECKPOINT_STEP_KEYS and seen[0] > 0, \
            "other work ran between the round's steps, not only after the round"


async def test_a_checkpoint_round_on_a_quick_clock_takes_one_slice(disk_config: ServerConfig) -> None:
    async with Node(disk_config) as node:
        keys = 3 * CHECKPOINT_STEP_KEYS
        await node.update_batch([(f"k{i:03d}", Increment(amount=1), None) for i in range(keys)])
        node.checkpointer.slice_clock = ManualClock()
        rounds = asyncio.get_running_loop().create_task(node.checkpointer.round_in_slices())
        await asyncio.sleep(0)
        assert rounds.done() and rounds.result() == keys


async def test_a_rounds_evictions_go_in_slices_past_states_that_must_stay(disk_config: ServerConfig) -> None:
    """The cache over its budget: a round drops decoded states a step at a time with the loop free between, and goes
    on past a step that could drop few (states changed since their checkpoint stay, and those are first in line)."""
    config = with_overrides(disk_config, state_cache_bytes=16 * 1024)
    async with Node(config) as node:
        keys = [f"k{i:04d}" for i in range(3 * EVICTION_STEP)]
        await node.update_batch([(key, SetChange(add=("x" * 40,)), None) for key in keys])
        checkpointer, cache = node.checkpointer, node.keyspace.cache
        checkpointer.checkpoint(len(keys), everything=True)
        await node.storage.flush()
        await asyncio.sleep(0)
        for key in keys:
            assert node.keyspace.item(key) is not None  # decoded into the cache, oldest first
        await node.update_batch([(key, SetChange(add=("y",)), None) for key in keys[:EVICTION_STEP // 2]])
        for key in keys[EVICTION_STEP // 2:]:
            assert node.keyspace.item(key) is not None  # the changed ones are now the least recently used
        assert cache.limit_bytes is not None and cache.bytes > cache.limit_bytes
        slices = TimeSlices(clock=slice_long_clock())
        await checkpointer._shrink(10 * EVICTION_STEP, slices)
        assert slices.pauses >= 2, "the loop ran between the steps"
        assert not any(node.keyspace.entry_in_memory(key) for key in keys[EVICTION_STEP // 2:]), \
            "every unchanged state left"
        assert all(node.keyspace.entry_in_memory(key) for key in keys[:EVICTION_STEP // 2]), "changed: they stay"
