"""The supervisor on its own: restarts with backoff, one-shot reports, the health window, fatal failures, stop.

Time is a `FakeTime`: its `sleep` records the delay, moves the clock and only yields to the loop, so a backoff of
30 s costs nothing and the health window is crossed by moving `now`.
"""

from __future__ import annotations

import asyncio
import gc
import logging
from typing import Any

import pytest

from rumor.server.supervisor import Supervisor, SupervisorConfig, TaskReturnedError, describe

FAST = SupervisorConfig(backoff_initial_s=0.1, backoff_max_s=0.4, healthy_after_s=30.0, fatal_failures=100)


class FakeTime:
    def __init__(self) -> None:
        self.now = 1_000.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)


def supervisor(time: FakeTime, config: SupervisorConfig = FAST, **kwargs: Any) -> Supervisor:
    return Supervisor(config, clock=time.clock, sleep=time.sleep, **kwargs)


class Flaky:
    """A task body that fails `failures` times, then runs until cancelled (or returns, with `then_return`)."""

    def __init__(self, failures: int, then_return: bool = False) -> None:
        self.failures = failures
        self.then_return = then_return
        self.runs = 0
        self.running = asyncio.Event()

    async def __call__(self) -> None:
        self.runs += 1
        if self.runs <= self.failures:
            raise RuntimeError(f"boom {self.runs}")
        if self.then_return:
            return
        self.running.set()
        await asyncio.Event().wait()


def error_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.levelno >= logging.ERROR and r.name == "rumor.server.supervisor"]


async def test_a_failing_task_is_logged_once_per_failure_and_restarted_with_doubling_capped_backoff(
    caplog: pytest.LogCaptureFixture,
) -> None:
    time = FakeTime()
    sup = supervisor(time)
    work = Flaky(failures=4)
    sup.supervise("worker", work)
    async with asyncio.timeout(5):
        await work.running.wait()
    assert time.sleeps == [0.1, 0.2, 0.4, 0.4]
    assert sup.failure_counts() == {"worker": 4}
    assert sup.failing() == {"worker": "RuntimeError: boom 4"}
    records = error_records(caplog)
    assert len(records) == 4 and all(r.exc_info is not None for r in records)  # each with its traceback
    assert "worker failed: RuntimeError: boom 1; restarting in 0.1 s" in records[0].getMessage()
    time.now += 30.0
    assert sup.failing() == {}  # healthy again once the window passed without a failure
    await sup.stop()
    assert work.runs == 5


async def test_the_backoff_starts_afresh_after_a_long_healthy_run() -> None:
    time = FakeTime()
    sup = supervisor(time)
    runs = 0
    done = asyncio.Event()

    async def body() -> None:
        nonlocal runs
        runs += 1
        if runs == 3:
            time.now += 60.0  # this run went well for a long time before it failed
        if runs == 5:
            done.set()
            await asyncio.Event().wait()
        raise RuntimeError("again")

    sup.supervise("worker", body)
    async with asyncio.timeout(5):
        await done.wait()
    assert time.sleeps == [0.1, 0.2, 0.1, 0.2]
    await sup.stop()


async def test_a_task_that_returns_while_it_should_run_is_a_failure_but_a_finished_one_shot_is_not() -> None:
    time = FakeTime()
    sup = supervisor(time)
    returns = Flaky(failures=0, then_return=True)
    task = sup.supervise("loop", returns)
    async with asyncio.timeout(5):
        while returns.runs < 3:
            await asyncio.sleep(0)
    assert sup.failing() == {"loop": describe(TaskReturnedError("loop"))}
    await sup.stop()
    assert task.cancelled()

    join = Flaky(failures=2, then_return=True)
    task = sup.supervise("join", join, forever=False)
    async with asyncio.timeout(5):
        await task
    assert join.runs == 3 and sup.failure_counts()["join"] == 2


async def test_reported_and_watched_one_shot_failures_count_but_restart_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    time = FakeTime()
    sup = supervisor(time)
    sup.report("membership", ValueError("bad\ntick " + "x" * 500))
    reason = sup.failing()["membership"]
    assert reason.startswith("ValueError: bad tick xxx") and len(reason) == 200 and "\n" not in reason

    unretrieved: list[dict[str, Any]] = []
    asyncio.get_running_loop().set_exception_handler(lambda _loop, context: unretrieved.append(context))

    async def session() -> None:
        raise KeyError("a bug in a session")

    task = asyncio.get_running_loop().create_task(session())
    sup.watch("anti_entropy", task)
    await asyncio.wait([task])
    del task
    gc.collect()
    assert unretrieved == []  # no "Task exception was never retrieved"
    assert sup.failure_counts() == {"membership": 1, "anti_entropy": 1}
    assert sup.failing()["anti_entropy"] == "KeyError: 'a bug in a session'"
    assert len(error_records(caplog)) == 2 and time.sleeps == []

    cancelled = asyncio.get_running_loop().create_task(asyncio.Event().wait())
    sup.watch("anti_entropy", cancelled)
    cancelled.cancel()
    await asyncio.wait([cancelled])
    assert sup.failure_counts()["anti_entropy"] == 1  # cancelling is no failure


async def test_too_many_failures_within_the_window_are_fatal_once() -> None:
    time = FakeTime()
    fatal: list[tuple[str, str]] = []
    config = SupervisorConfig(fatal_failures=3, fatal_window_s=60.0)
    sup = supervisor(time, config, on_fatal=lambda name, exc: fatal.append((name, str(exc))))
    for _ in range(5):  # spread out: never three within a minute
        sup.report("membership", RuntimeError("slow"))
        time.now += 31.0
    assert fatal == [] and sup.fatal is None
    time.now += 30.0  # the last one is a minute old now
    sup.report("membership", RuntimeError("one"))
    sup.report("replication", RuntimeError("two"))
    assert fatal == []
    sup.report("replication", RuntimeError("three"))
    assert fatal == [("replication", "three")]
    assert sup.fatal == ("replication", "3 failures within 60 s, the last: RuntimeError: three")
    sup.report("replication", RuntimeError("four"))
    assert len(fatal) == 1  # called once


async def test_a_critical_component_is_fatal_at_its_first_failure_and_nothing_is_fatal_while_stopping() -> None:
    time = FakeTime()
    fatal: list[str] = []
    sup = supervisor(time, on_fatal=lambda name, exc: fatal.append(name))
    work = Flaky(failures=1)
    sup.supervise("storage-writer", work, critical=True)
    async with asyncio.timeout(5):
        await work.running.wait()
    assert fatal == ["storage-writer"]

    calm = supervisor(FakeTime(), SupervisorConfig(fatal_failures=1), on_fatal=lambda name, exc: fatal.append(name))
    await calm.stop()
    calm.report("membership", RuntimeError("during shutdown"))
    assert fatal == ["storage-writer"] and calm.failure_counts() == {"membership": 1}
    await sup.stop()


async def test_stop_cancels_every_supervised_task_even_one_waiting_out_its_backoff() -> None:
    gate = asyncio.Event()

    async def slow_sleep(seconds: float) -> None:
        await gate.wait()

    sup = Supervisor(FAST, sleep=slow_sleep)
    steady = Flaky(failures=0)
    failing = Flaky(failures=10)
    tasks = [sup.supervise("steady", steady), sup.supervise("failing", failing)]
    async with asyncio.timeout(5):
        await steady.running.wait()
        while failing.runs < 1:
            await asyncio.sleep(0)
    await sup.stop()
    assert all(t.cancelled() for t in tasks) and failing.runs == 1
