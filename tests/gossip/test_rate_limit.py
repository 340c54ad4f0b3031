"""The limiter behind per-peer warnings: one per key per interval, with a count of what it held back."""

from rumor.gossip.rate_limit import RateLimiter


def test_one_per_key_per_interval_and_the_count_of_what_was_held_back() -> None:
    limiter = RateLimiter(60.0)
    assert limiter.allow("a", 0.0) and limiter.suppressed("a") == 0
    assert not limiter.allow("a", 1.0) and not limiter.allow("a", 59.9)
    assert limiter.allow("b", 1.0), "keys are independent"
    assert limiter.allow("a", 60.0)
    assert limiter.suppressed("a") == 2 and limiter.suppressed("a") == 0, "read once, then reset"


def test_memory_stays_bounded_under_key_churn() -> None:
    limiter = RateLimiter(60.0, max_keys=8)
    for i in range(1000):
        assert limiter.allow(i, float(i) / 100)
    assert len(limiter._last) <= 8
    assert not limiter.allow(999, 10.0), "a recent key is still remembered"
