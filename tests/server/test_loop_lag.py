"""The event-loop lag monitor: lag = wake-up minus due time, into the histogram and the max gauge, with a fake clock
whose `sleep` wakes late by scripted amounts (no real waiting); and the running node exporting it."""

from __future__ import annotations

import asyncio

import pytest

from rumor.server.config import ServerConfig
from rumor.server.loop_lag import LoopLagMonitor
from rumor.server.metrics import Metrics
from rumor.server.node import Node
from rumor.server.supervisor import AlreadySupervisedError


class LateSleeper:
    """A clock whose sleeps each overshoot by the next scripted lag; after the script, the monitor is stopped."""

    def __init__(self, lags: list[float]) -> None:
        self.now = 500.0
        self.lags = list(lags)
        self.asked: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        if not self.lags:
            raise asyncio.CancelledError
        self.asked.append(seconds)
        self.now += seconds + self.lags.pop(0)
        await asyncio.sleep(0)


def monitor(metrics: Metrics, time: LateSleeper) -> LoopLagMonitor:
    return LoopLagMonitor(metrics.loop_lag, metrics.loop_lag_max, interval_s=0.05, clock=time.clock,
                          sleep=time.sleep)


async def test_each_tick_records_how_late_it_woke() -> None:
    metrics = Metrics()
    time = LateSleeper([0.0004, 0.003, 0.25, 0.0, 0.012])
    with pytest.raises(asyncio.CancelledError):
        await monitor(metrics, time).run()
    assert time.asked == [0.05] * 5
    text = metrics.render()
    assert "rumor_event_loop_lag_seconds_count 5" in text
    assert 'rumor_event_loop_lag_seconds_bucket{le="0.001"} 2' in text  # 0.4 ms and 0
    assert 'rumor_event_loop_lag_seconds_bucket{le="0.005"} 3' in text  # + 3 ms
    assert 'rumor_event_loop_lag_seconds_bucket{le="0.02"} 4' in text   # + 12 ms
    assert 'rumor_event_loop_lag_seconds_bucket{le="0.2"} 4' in text
    assert 'rumor_event_loop_lag_seconds_bucket{le="0.5"} 5' in text    # the 250 ms stall
    assert metrics.loop_lag_max.get() == pytest.approx(0.25)


def test_max_only_rises_and_an_early_wake_is_no_lag() -> None:
    metrics = Metrics()
    lag = monitor(metrics, LateSleeper([]))
    assert lag.observe(10.0, 10.1) == pytest.approx(0.1)
    assert lag.observe(20.0, 20.03) == pytest.approx(0.03)
    assert lag.observe(30.0, 29.999) == 0.0
    assert metrics.loop_lag_max.get() == pytest.approx(0.1)
    assert metrics.loop_lag.count() == 3


def test_interval_must_be_positive() -> None:
    metrics = Metrics()
    with pytest.raises(ValueError):
        LoopLagMonitor(metrics.loop_lag, metrics.loop_lag_max, interval_s=0)


async def test_a_started_node_supervises_the_monitor() -> None:
    async with Node(ServerConfig(in_memory=True, node_id="n")) as node:
        assert "rumor_event_loop_lag_max_seconds 0" in node.metrics.render()
        with pytest.raises(AlreadySupervisedError):  # running under the node's supervisor already
            node.supervisor.supervise("loop_lag", asyncio.Event().wait)
