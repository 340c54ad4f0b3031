"""bench/scale_probe.py's reading of the loop-lag histogram: a phase's p99 and max from two scrapes of /metrics."""

from __future__ import annotations

from bench.scale_probe import LagReading, lag_between, parse_metrics, update_for
from rumor.server.metrics import Metrics


def reading(lags: list[float], metrics: Metrics | None = None) -> tuple[LagReading, Metrics]:
    metrics = metrics or Metrics()
    for lag in lags:
        metrics.loop_lag.observe(lag)
        metrics.loop_lag_max.set(max(metrics.loop_lag_max.get(), lag))
    return LagReading.from_metrics(parse_metrics(metrics.render())), metrics


def test_a_phase_counts_only_its_own_ticks_and_a_new_max_is_exact() -> None:
    before, metrics = reading([0.0005] * 50 + [0.3])
    after, _ = reading([0.0005] * 98 + [0.015, 0.45], metrics)
    phase = lag_between(before, after)
    assert phase["ticks"] == 100
    assert phase["max_ms"] == 450.0 and phase["max_exact"]
    assert phase["p99_bucket_ms"] == 20.0  # the 99th of 100 ticks is the 15 ms one
    assert 10.0 < phase["p99_ms"] <= 20.0


def test_a_quiet_phase_after_a_stall_gets_a_bucket_bound_not_the_old_max() -> None:
    before, metrics = reading([0.9])
    after, _ = reading([0.0015] * 200, metrics)
    phase = lag_between(before, after)
    assert phase["max_ms"] == 2.0 and not phase["max_exact"]
    assert phase["p99_ms"] <= 2.0


def test_no_ticks_no_figures() -> None:
    before, _ = reading([0.001])
    assert lag_between(before, before)["p99_ms"] is None


def test_load_mixes_the_three_types() -> None:
    assert [update_for(i)["type"] for i in range(3)] == ["counter", "set", "register"]
