"""Lifeguard's shrinking suspicion timeout, checked against memberlist's own table of expectations."""

import pytest

from rumor.gossip.suspicion import Suspicion, remaining_suspicion_time


@pytest.mark.parametrize(
    ("n", "k", "elapsed", "expected"),
    [(0, 3, 0.0, 30.0), (1, 3, 2.0, 14.0), (2, 3, 3.0, 4.810), (3, 3, 4.0, -2.0), (4, 3, 5.0, -3.0),
     (5, 3, 10.0, -8.0)],
)
def test_remaining_time_matches_memberlist(n: int, k: int, elapsed: float, expected: float) -> None:
    assert remaining_suspicion_time(n, k, elapsed, 2.0, 30.0) == pytest.approx(expected, abs=1e-9)


def test_a_lone_suspicion_waits_the_maximum() -> None:
    s = Suspicion("accuser", 1, k=3, min_s=2.0, max_s=30.0, now=100.0)
    assert s.deadline == 130.0


def test_the_accuser_and_repeat_confirmations_do_not_count() -> None:
    s = Suspicion("accuser", 1, k=3, min_s=2.0, max_s=30.0, now=0.0)
    assert not s.confirm("accuser", 1.0)
    assert s.confirm("b", 2.0)
    assert not s.confirm("b", 2.5)
    assert s.n == 1
    assert s.deadline == pytest.approx(16.0)


def test_confirmations_drive_the_deadline_to_the_minimum_and_stop_counting_at_k() -> None:
    s = Suspicion("a", 1, k=2, min_s=5.0, max_s=30.0, now=0.0)
    deadlines = [s.deadline]
    for source in ("b", "c"):
        assert s.confirm(source, 1.0)
        deadlines.append(s.deadline)
    assert deadlines == sorted(deadlines, reverse=True)
    assert s.deadline == pytest.approx(5.0)
    assert not s.confirm("d", 1.0)


def test_with_no_confirmations_wanted_the_minimum_applies_at_once() -> None:
    assert Suspicion("a", 1, k=0, min_s=5.0, max_s=30.0, now=10.0).deadline == 15.0


def test_postpone_never_brings_a_deadline_closer() -> None:
    s = Suspicion("a", 1, k=0, min_s=5.0, max_s=30.0, now=0.0)
    s.postpone(3.0)
    assert s.deadline == 5.0
    s.postpone(9.0)
    assert s.deadline == 9.0
