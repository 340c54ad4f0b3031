"""The local health score saturates at both ends and stretches our own timeouts."""

import pytest

from rumor.gossip.awareness import Awareness


def test_score_saturates_between_zero_and_max_minus_one() -> None:
    a = Awareness(8)
    assert a.apply_delta(-1) == 0
    assert a.apply_delta(3) == 3
    assert a.apply_delta(100) == 7
    assert a.apply_delta(-2) == 5


def test_scale_multiplies_by_score_plus_one() -> None:
    a = Awareness(8)
    assert a.scale(0.5) == 0.5
    a.apply_delta(3)
    assert a.scale(0.5) == 2.0
    a.apply_delta(50)
    assert a.scale(1.0) == 8.0


def test_a_multiplier_below_one_is_rejected() -> None:
    with pytest.raises(ValueError, match="max_multiplier"):
        Awareness(0)
