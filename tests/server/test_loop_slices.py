"""Loop work in slices bounded by time (`server.loop_slices`): a slice ends once its budget is spent, whatever its
count, and the loop runs other work between slices. Driven by hand clocks: a clock that never moves keeps a piece
of work in one slice; one that says every step used up a whole slice makes each step a slice of its own."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from functools import partial

from rumor.server.checkpointer import CHECKPOINT_STEP_KEYS
from rumor.server.config import ServerConfig
from rumor.server.loop_slices import SLICE_S, TimeSlices
from rumor.server.node import Node
from rumor.server.updates import Increment


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
