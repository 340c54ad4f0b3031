"""The served node's collector policy (`server.collector`): young collections only, full ones on a schedule, every
collection timed. The process-wide settings are restored after each test."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Iterator
from typing import Any

import pytest

from rumor.server.collector import NEVER, YOUNG_THRESHOLD, CollectionPauses, FullCollections, tune_collector
from rumor.server.config import ServerConfig
from rumor.server.errors import ConfigError
from rumor.server.metrics import Histogram


@pytest.fixture
def restored_collector() -> Iterator[None]:
    thresholds = gc.get_threshold()
    try:
        yield
    finally:
        gc.set_threshold(*thresholds)
        gc.unfreeze()


class Cycle:
    """A reference cycle: only the cyclic collector frees it."""

    def __init__(self) -> None:
        self.me = self


#: young collections every this many net allocations in these tests (the policy's own 20,000 only makes them slower)
SMALL_YOUNG = 1000


def generations_collected_by_a_growing_workload() -> list[int]:
    """The generations the collector starts on its own while a program keeps some of what it allocates (as a node
    keeps decoded states) and drops the rest: enough young collections (with `SMALL_YOUNG`) for CPython's own
    policy to go full."""
    started: list[int] = []

    def record(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            started.append(info["generation"])

    kept: list[Cycle] = []
    gc.callbacks.append(record)
    try:
        for _ in range(150):
            garbage = [Cycle() for _ in range(SMALL_YOUNG)]
            kept.extend(garbage[:100])
            del garbage
    finally:
        gc.callbacks.remove(record)
    return started


def test_tuned_collector_never_starts_a_full_collection_by_itself(restored_collector: None) -> None:
    _, middle, cpython_full = gc.get_threshold()
    gc.set_threshold(SMALL_YOUNG, middle, cpython_full)
    control = generations_collected_by_a_growing_workload()
    assert 2 in control, "the workload must be one CPython's own policy collects fully"
    tune_collector()
    young, middle, full = gc.get_threshold()
    assert young == YOUNG_THRESHOLD and full == NEVER
    gc.set_threshold(SMALL_YOUNG, middle, full)
    started = generations_collected_by_a_growing_workload()
    assert 0 in started and 1 in started, "young collections still run"
    assert 2 not in started


def test_every_collection_is_timed_by_generation() -> None:
    ticks = iter([10.0, 10.004, 20.0, 20.25])
    histogram = Histogram("t_gc_pause_seconds", "test", ("generation",), buckets=(0.01, 0.5))
    pauses = CollectionPauses(histogram, clock=lambda: next(ticks))
    pauses("start", {"generation": 0})
    pauses("stop", {"generation": 0, "collected": 3})
    pauses("start", {"generation": 2})
    pauses("stop", {"generation": 2, "collected": 0})
    assert histogram.count("0") == 1 and histogram.count("2") == 1
    rendered = "\n".join(histogram.samples())
    assert 't_gc_pause_seconds_bucket{generation="0",le="0.01"} 1' in rendered
    assert 't_gc_pause_seconds_bucket{generation="2",le="0.01"} 0' in rendered
    assert 't_gc_pause_seconds_bucket{generation="2",le="0.5"} 1' in rendered


def test_installed_timing_sees_a_real_collection_and_can_be_removed() -> None:
    histogram = Histogram("t_gc_real_seconds", "test", ("generation",))
    remove = CollectionPauses(histogram).install()
    try:
        gc.collect(0)
    finally:
        remove()
    assert histogram.count("0") == 1
    gc.collect(0)
    assert histogram.count("0") == 1


async def test_full_collections_run_at_their_interval_and_reclaim_cycles() -> None:
    slept: list[float] = []
    rounds = 3

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        if len(slept) > rounds:
            raise asyncio.CancelledError
        Cycle()  # garbage only a full collection (or this test's collect) can find

    collections = FullCollections(30.0, sleep=sleep, collect=gc.collect)
    with pytest.raises(asyncio.CancelledError):
        await collections.run()
    assert slept == [30.0] * (rounds + 1)
    assert collections.collections == rounds
    assert collections.found >= rounds  # each round found at least its cycle


def test_full_interval_is_validated() -> None:
    assert ServerConfig(gc_full_interval_s=0).gc_full_interval_s == 0
    with pytest.raises(ConfigError):
        ServerConfig(gc_full_interval_s=-1)
    with pytest.raises(ValueError):
        FullCollections(0)


def test_pauses_nest_across_threads_and_resume_only_when_the_last_ends() -> None:
    import threading

    from rumor.server.collector import collector_paused

    assert gc.isenabled()
    first_in = threading.Event()
    release = threading.Event()
    seen: list[bool] = []

    def worker() -> None:
        with collector_paused():
            first_in.set()
            release.wait(timeout=10)
            seen.append(gc.isenabled())

    thread = threading.Thread(target=worker)
    thread.start()
    assert first_in.wait(timeout=10)
    with collector_paused():
        assert not gc.isenabled()
    assert not gc.isenabled(), "the worker's pause still holds"
    release.set()
    thread.join(timeout=10)
    assert seen == [False]
    assert gc.isenabled()
    gc.disable()
    try:
        with collector_paused():
            pass
        assert not gc.isenabled(), "a collector the program had disabled stays disabled"
    finally:
        gc.enable()
