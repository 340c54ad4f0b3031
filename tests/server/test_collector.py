"""The served node's collector policy (`server.collector`): young collections only, full ones on a schedule, every
collection timed. The process-wide settings are restored after each test."""

from __future__ import annotations

import asyncio
import gc
import json
import subprocess
import sys

import pytest

from rumor.server.collector import CollectionPauses, FullCollections
from rumor.server.config import ServerConfig
from rumor.server.errors import ConfigError
from rumor.server.metrics import Histogram


class Cycle:
    """A reference cycle: only the cyclic collector frees it."""

    def __init__(self) -> None:
        self.me = self


#: a fresh interpreter (the test process's own objects would change when CPython's policy goes full) runs a workload
#: that keeps some of what it allocates, as a node keeps decoded states, under the policy named by argv[1], and prints
#: the generations the collector started by itself. Young collections every 1000 allocations instead of 4,000: the
#: same policy, faster.
WORKLOAD = """
import gc, sys
from rumor.server.collector import YOUNG_THRESHOLD, NEVER, tune_collector
class Cycle:
    def __init__(self):
        self.me = self
gc.collect()
if sys.argv[1] == "tuned":
    tune_collector()
    young, middle, full = gc.get_threshold()
    assert young == YOUNG_THRESHOLD and middle == full == NEVER
    gc.set_threshold(1000, middle, full)
else:
    gc.set_threshold(1000, 10, 10)
started = []
gc.callbacks.append(lambda phase, info: started.append(info["generation"]) if phase == "start" else None)
kept = []
for _ in range(300):
    garbage = [Cycle() for _ in range(1000)]
    kept.extend(garbage[:200])
    del garbage
print(sorted(set(started)))
"""


def generations_started(policy: str) -> list[int]:
    done = subprocess.run([sys.executable, "-c", WORKLOAD, policy], capture_output=True, text=True, timeout=60,
                          check=True)
    return json.loads(done.stdout)


def test_tuned_collector_starts_young_collections_only() -> None:
    assert generations_started("cpython") == [0, 1, 2], "the workload must be one CPython's own policy collects fully"
    assert generations_started("tuned") == [0], "young collections run, middle and full ones never by themselves"


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
