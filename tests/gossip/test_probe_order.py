"""Randomized round-robin: everyone once per round, nobody starved for more than 2N - 1 periods."""

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from rumor.gossip.probe_order import ProbeOrder


def test_every_member_is_probed_once_per_round() -> None:
    order = ProbeOrder(random.Random(1))
    ids = [f"m{i}" for i in range(10)]
    for member_id in ids:
        order.add(member_id)
    for _ in range(5):
        round_ = [order.next(lambda _m: True) for _ in ids]
        assert sorted(round_) == ids  # type: ignore[type-var]


def test_rounds_are_reshuffled() -> None:
    order = ProbeOrder(random.Random(7))
    for i in range(20):
        order.add(f"m{i}")
    rounds = {tuple(order.next(lambda _m: True) for _ in range(20)) for _ in range(5)}
    assert len(rounds) > 1


def test_ineligible_and_removed_members_are_skipped() -> None:
    order = ProbeOrder(random.Random(3))
    for i in range(5):
        order.add(f"m{i}")
    order.remove("m2")
    seen = {order.next(lambda m: m != "m4") for _ in range(20)}
    assert seen == {"m0", "m1", "m3"}
    assert ProbeOrder(random.Random(0)).next(lambda _m: True) is None
    assert order.next(lambda _m: False) is None


@settings(max_examples=50)
@given(seed=st.integers(0, 2**32), n=st.integers(1, 30), joins=st.lists(st.integers(0, 200), max_size=10))
def test_no_member_waits_more_than_2n_minus_1_periods(seed: int, n: int, joins: list[int]) -> None:
    order = ProbeOrder(random.Random(seed))
    members = [f"m{i}" for i in range(n)]
    for member_id in members:
        order.add(member_id)
    last_probe = {m: -1 for m in members}
    pending_joins = sorted(joins)
    for period in range(300):
        while pending_joins and pending_joins[0] == period:
            pending_joins.pop(0)
            newcomer = f"j{period}-{len(members)}"
            members.append(newcomer)
            last_probe[newcomer] = period - 1
            order.add(newcomer)
        probed = order.next(lambda _m: True)
        assert probed is not None
        last_probe[probed] = period
        bound = 2 * len(members) - 1
        starved = {m: period - p for m, p in last_probe.items() if period - p > bound}
        assert starved == {}, f"seed={seed}"
