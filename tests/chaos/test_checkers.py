"""The chaos checkers on small hand-made histories: each kind of violation is caught, a clean history passes."""

from __future__ import annotations

import itertools
import random

import pytest
from chaos_histories import NODES, Builder

from bench.chaos.checkers import check_counters, check_registers, check_sets, min_extra_copies, subset_sums
from bench.chaos.cluster_checkers import (
    check_availability,
    check_consistency_levels,
    check_convergence,
    check_membership,
    check_restarts,
    stale_after_heal,
)
from bench.chaos.nemesis import KINDS, make_schedule, partition_drops
from bench.chaos.report import run_checkers, summarize

CLEAN_FINAL = {"c": 4, "s": ["a1"], "r": "w2", "m": ["m1"], "p": {"f": "p1"}}


def clean() -> Builder:
    b = Builder()
    b.write("incr", "c", "i1", n=5)
    b.write("incr", "c", "i2", n=-1)
    b.read("c", 4)
    b.write("add", "s", "a1", element="a1")
    b.write("add", "s", "a2", element="a2", node="n2", client="c1")
    read = b.read("s", ["a1", "a2"], node="n2")
    b.write("remove", "s", "x1", element="a2", context="ctx", read_id=read["id"], read_node="n2", node="n2",
            client="c1")
    b.write("write", "r", "w1", value="w1")
    b.write("write", "r", "w2", value="w2")
    b.write("mvwrite", "m", "m1", value="m1")
    b.write("mapset", "p", "p1", field="f", value="p1")
    return b


def test_a_clean_history_passes_every_checker() -> None:
    history = clean().final(CLEAN_FINAL)
    verdicts = run_checkers(history)
    assert {v.name: v.problems for v in verdicts if not v.ok} == {}
    summary = summarize(history, verdicts, "h.jsonl", None)  # type: ignore[arg-type]
    assert summary["passed"] and summary["lost_acked"] == summary["phantoms"] == summary["double_applied"] == 0
    assert summary["convergence_s"] is not None and stale_after_heal(history) == 0


def test_a_lost_acked_add_is_caught() -> None:
    history = clean().final(CLEAN_FINAL | {"s": []})
    verdict = check_sets(history)
    assert not verdict.ok and verdict.counts["lost"] == 1 and "'a1' lost" in verdict.problems[0]


def test_an_add_with_an_unknown_outcome_may_be_missing() -> None:
    b = clean()
    b.write("add", "s", "a3", element="a3", status="unknown")
    assert check_sets(b.final(CLEAN_FINAL)).ok
    b2 = clean()
    b2.write("add", "s", "a3", element="a3", status="unknown")
    assert check_sets(b2.final(CLEAN_FINAL | {"s": ["a1", "a3"]})).ok


def test_a_phantom_element_is_caught_even_one_whose_add_was_refused() -> None:
    b = clean()
    b.write("add", "s", "a9", element="a9", status="fail", http=400)
    verdict = check_sets(b.final(CLEAN_FINAL | {"s": ["a1", "a9", "never"]}))
    assert not verdict.ok and verdict.counts["phantom"] == 2


def test_an_element_back_after_an_acked_remove_that_observed_it_is_caught() -> None:
    verdict = check_sets(clean().final(CLEAN_FINAL | {"s": ["a1", "a2"]}))
    assert not verdict.ok and verdict.counts["resurrected"] == 1 and "after acked remove" in verdict.problems[0]


def test_a_remove_that_could_not_have_observed_a_later_retry_does_not_count() -> None:
    b = Builder()
    first = b.write("add", "s", "a1", element="a1", status="unknown")
    read = b.read("s", ["a1"])
    b.write("remove", "s", "x1", element="a1", read_id=read["id"], read_node="n1", context="ctx")
    b.write("add", "s", "a1", element="a1", retry_of=first["id"])  # the retry was invoked after the read
    assert check_sets(b.final({"s": ["a1"]})).counts["resurrected"] == 0


def test_a_lost_acked_increment_is_caught() -> None:
    verdict, _ = check_counters(clean().final(CLEAN_FINAL | {"c": -1}))
    assert not verdict.ok and verdict.counts["lost_keys"] == len(NODES)


def test_unknown_increments_may_count_or_not_but_nothing_else() -> None:
    b = clean()
    b.write("incr", "c", "u1", n=3, status="unknown")
    b.write("incr", "c", "u2", n=-2, status="unknown")
    for final in (4, 7, 2, 5):
        assert check_counters(b.final(CLEAN_FINAL | {"c": final}))[0].ok, final
    verdict, _ = check_counters(b.final(CLEAN_FINAL | {"c": 8}))
    assert not verdict.ok and verdict.counts["phantom_keys"] == len(NODES)


def test_a_retried_increment_applied_twice_is_caught() -> None:
    b = clean()
    first = b.write("incr", "c", "i3", n=2, status="unknown")
    b.write("incr", "c", "i3", n=2, retry_of=first["id"])
    assert check_counters(b.final(CLEAN_FINAL | {"c": 6}))[1].ok
    counter, op_id = check_counters(b.final(CLEAN_FINAL | {"c": 8}))
    assert counter.ok and not op_id.ok and op_id.counts["double_applied"] == len(NODES)
    assert summarize(b.history(), run_checkers(b.history()), "h", None)["double_applied"] == len(NODES)  # type: ignore[arg-type]


def test_a_read_missing_its_own_nodes_acked_increment_is_caught_and_decrements_bound_both_ways() -> None:
    b = Builder()
    b.write("incr", "c", "i1", n=5)
    b.read("c", 5, node="n1")
    b.read("c", 0, node="n2")  # another node need not have it yet
    b.write("incr", "c", "i2", n=-3, status="unknown", node="n2")
    b.read("c", 2, node="n1")  # the unknown decrement may have reached n1
    assert check_counters(b.final({"c": 2}))[0].ok
    b.read("c", 0, node="n1")
    verdict, _ = check_counters(b.final({"c": 2}))
    assert not verdict.ok and verdict.counts["reads_out_of_bounds"] == 1 and "outside [2, 5]" in verdict.problems[0]


def test_a_stale_register_mvregister_sibling_or_map_field_is_caught() -> None:
    b = clean()
    b.write("mvwrite", "m", "m2", value="m2")
    b.write("mapset", "p", "p2", field="f", value="p2")
    final = CLEAN_FINAL | {"r": "w1", "m": ["m1", "m2"], "p": {"f": "p1"}}
    verdict = check_registers(b.final(final))
    assert not verdict.ok and verdict.counts["stale"] == 3 * len(NODES)
    assert check_registers(b.final(CLEAN_FINAL | {"m": ["m2"], "p": {"f": "p2"}})).ok


def test_concurrent_writes_of_other_clients_may_win_but_unwritten_values_may_not_appear() -> None:
    b = clean()
    b.write("write", "r", "w3", value="w3", client="c9", node="n3", status="unknown")
    b.write("mvwrite", "m", "m3", value="m3", client="c9", node="n3")
    assert check_registers(b.final(CLEAN_FINAL | {"r": "w3", "m": ["m1", "m3"]})).ok
    verdict = check_registers(b.final(CLEAN_FINAL | {"r": "zzz"}))
    assert not verdict.ok and verdict.counts["phantom"] == len(NODES)


def test_a_quorum_200_on_the_minority_side_is_caught_and_the_majority_side_is_fine() -> None:
    b = Builder()
    drops = [[a, c] for a in ("n1", "n2") for c in ("n3", "n4", "n5")]
    drops += [[c, a] for a, c in drops]
    b.nemesis("partition", 1.0, 5.0, drops=drops)
    b.write("incr", "c", "q1", n=1, w="quorum", node="n3", at=2.0)  # n3, n4, n5: a majority
    b.write("incr", "c", "q2", n=1, w="quorum", node="n1", at=2.5)  # n1, n2: a minority
    b.write("incr", "c", "q3", n=1, w="quorum", node="n1", at=3.0, http=202,
            response={"value": 2, "acks": 2, "required": 3})
    b.write("incr", "c", "q4", n=1, w="quorum", node="n1", at=0.5)  # before the partition
    b.write("incr", "c", "q5", n=1, w="quorum", node="n2", at=4.99, took=0.1)  # crosses the heal
    verdict = check_consistency_levels(b.history())
    assert not verdict.ok and verdict.counts["minority_quorum_200"] == 1
    assert "on n1" in verdict.problems[0] and verdict.counts["answered_202"] == 1


def test_dead_nodes_do_not_count_toward_a_quorum_and_a_202_must_say_its_acks() -> None:
    b = Builder()
    windows = [{"node": n, "stop_s": 1.0, "start_s": 6.0, "ready_s": 7.0} for n in ("n3", "n4", "n5")]
    b.nemesis("kill", 1.0, 7.0, windows=windows)
    b.write("write", "r", "w1", value="w1", w="quorum", node="n1", at=2.0)
    b.write("write", "r", "w2", value="w2", w="quorum", node="n1", at=3.0, http=202, response={"value": "w2"})
    verdict = check_consistency_levels(b.history())
    assert verdict.counts["minority_quorum_200"] == 1 and verdict.counts["bad_202"] == 1


def test_convergence_needs_equal_values_and_equal_contexts() -> None:
    assert check_convergence(clean().final(CLEAN_FINAL)).ok
    diverged = clean().final(CLEAN_FINAL, contexts={"n2": "other"})
    verdict = check_convergence(diverged)
    assert not verdict.ok and verdict.counts["diverged_keys"] == sorted(CLEAN_FINAL)
    assert stale_after_heal(diverged) == len(CLEAN_FINAL)


def test_membership_after_the_heal() -> None:
    assert check_membership(clean().final(CLEAN_FINAL)).ok
    verdict = check_membership(clean().final(CLEAN_FINAL, members_ok=False))
    assert not verdict.ok and "n1 sees n5 suspect" in verdict.problems[0]


def test_availability_leaves_out_requests_to_nodes_that_were_down() -> None:
    b = Builder()
    b.nemesis("kill", 1.0, 3.0, windows=[{"node": "n2", "stop_s": 1.0, "start_s": 2.0, "ready_s": 2.5}])
    b.read("c", 1, node="n1", at=1.5)
    b.op("read", "c", node="n2", status="fail", http=None, at=1.6, args={"r": "1"})
    b.op("read", "c", node="n1", status="unknown", at=1.7, args={"r": "1"})
    verdict = check_availability(b.history(), minimum=0.9)
    assert verdict.counts["eligible"] == 2 and verdict.counts["availability"] == 0.5 and not verdict.ok


@pytest.mark.parametrize("seed", range(20))
def test_the_schedule_fits_every_kind_into_a_minute_without_overlap(seed: int) -> None:
    schedule = make_schedule(random.Random(seed), list(KINDS), 60.0, NODES)
    assert {f.kind for f in schedule} == set(KINDS)
    for before, after in itertools.pairwise(schedule):
        assert before.at_s + before.duration_s < after.at_s
    assert schedule[-1].at_s + schedule[-1].duration_s <= 58.0
    assert max(f.duration_s for f in schedule if f.kind == "pause") > 10.0


def test_partition_shapes() -> None:
    rng = random.Random(1)
    drops, sides = partition_drops("oneway", NODES, rng)
    assert all((b, a) not in drops for a, b in drops) and len(drops) == 6
    drops, sides = partition_drops("bridge", NODES, rng)
    bridge = (set(sides[0]) & set(sides[1])).pop()
    assert all(bridge not in pair for pair in drops) and len(drops) == 8
    drops, _ = partition_drops("isolate", NODES, rng)
    assert len(drops) == 8


def test_subset_sums_and_extra_copies() -> None:
    assert subset_sums([2, -1]) == {0, 2, -1, 1}
    assert min_extra_copies(4, {0}, [(2, 2)]) == 2
    assert min_extra_copies(5, {0}, [(2, 2)]) is None


def test_a_node_that_would_not_restart_fails_the_run() -> None:
    b = clean()
    assert check_restarts(b.final(CLEAN_FINAL)).ok
    b.nemesis("start_failed", 3.0, 3.0, nodes=["n5"], error="node n5 did not start\n  [n5] rumor: cannot recover",
              windows=[{"node": "n5", "stop_s": 3.0, "start_s": 1e9, "ready_s": 1e9}])
    verdict = check_restarts(b.final(CLEAN_FINAL))
    assert not verdict.ok and "cannot recover" in verdict.problems[0]
