"""Replication between real node processes: concurrent updates of every type converge, op_id retries apply once,
and a causally later write wins although its node's clock is an hour behind."""

from __future__ import annotations

import asyncio

import pytest

from rumor.server.local_cluster import LocalCluster

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]


async def test_concurrent_updates_through_different_nodes_converge_for_every_type(
    skewed_cluster: LocalCluster,
) -> None:
    cluster = skewed_cluster
    names = [node.name for node in cluster.nodes]
    # Every mvregister write below carries the context of one converged read of "seed", so each replaces only
    # the seed, never another node's write, however fast replication is: the three writes are concurrent.
    await cluster["n1"].api().update("conv/mv", {"type": "mvregister", "value": "seed"})
    await cluster.wait_converged(["conv/mv"], timeout_s=15)
    seen = await cluster["n1"].api().get("conv/mv")
    assert seen is not None and seen["value"] == ["seed"]

    async def writes(i: int, name: str) -> None:
        api = cluster[name].api()
        await asyncio.gather(
            *(api.incr("conv/counter", i) for _ in range(5)),
            api.add("conv/set", f"from-{name}", i),
            api.remove("conv/set", "never-added"),
            api.put("conv/register", f"written by {name}"),
            api.update("conv/mv", {"type": "mvregister", "value": name, "context": seen["context"]}),
            api.update("conv/map", {"type": "map", "set": {name: i, "shared": name}}),
        )

    await asyncio.gather(*(writes(i, name) for i, name in enumerate(names, 1)))
    keys = ["conv/counter", "conv/set", "conv/register", "conv/mv", "conv/map"]
    await cluster.wait_converged(keys, timeout_s=15)

    final = (await cluster.values(keys))["n1"]
    assert final["conv/counter"] == 5 * sum(range(1, len(names) + 1))
    assert sorted(map(str, final["conv/set"])) == sorted(
        [str(i) for i in range(1, len(names) + 1)] + [f"from-{n}" for n in names])
    assert final["conv/register"] in {f"written by {n}" for n in names}
    assert sorted(final["conv/mv"]) == names  # three concurrent writes: every value kept, the seed replaced
    assert {k: v for k, v in final["conv/map"].items() if k != "shared"} == {n: i for i, n in enumerate(names, 1)}


async def test_op_id_retries_apply_once(skewed_cluster: LocalCluster) -> None:
    cluster = skewed_cluster
    api = cluster["n2"].api()
    first = await api.incr("retry/counter", 7, op_id="op-1")
    # the same request retried: sequentially, then concurrently (in flight together)
    again = await api.incr("retry/counter", 7, op_id="op-1")
    concurrent = await asyncio.gather(*(api.incr("retry/counter", 7, op_id="op-2") for _ in range(5)))
    assert first["value"] == again["value"] == 7
    assert {item["value"] for item in concurrent} == {14}
    await cluster.wait_converged(["retry/counter"], timeout_s=15)
    assert {row["retry/counter"] for row in (await cluster.values(["retry/counter"])).values()} == {14}


async def test_causally_later_write_wins_with_clock_an_hour_behind(skewed_cluster: LocalCluster) -> None:
    cluster = skewed_cluster
    await cluster["n1"].api().put("skew/register", "first (n1, correct clock)")
    await cluster.wait_converged(["skew/register"], timeout_s=15)
    # n3 has seen n1's write; its own physical clock is an hour behind, yet its next write follows causally.
    await cluster["n3"].api().put("skew/register", "second (n3, clock an hour behind)")
    await cluster.wait_converged(["skew/register"], timeout_s=15)
    values = await cluster.values(["skew/register"])
    assert {row["skew/register"] for row in values.values()} == {"second (n3, clock an hour behind)"}


async def test_a_batch_with_w_all_is_on_every_replica_when_it_answers(skewed_cluster: LocalCluster) -> None:
    """`w=all` applies to each update of a batch: when n2 answers 200, n1 and n3 hold every update already (read
    there at once, with no wait for gossip), and a batch read on n3 shows them all."""
    cluster = skewed_cluster
    keys = [f"batch/k{i}" for i in range(20)]
    updates = [{"key": key, "type": "counter", "increment": i + 1} for i, key in enumerate(keys)]
    answer = await cluster["n2"].api().batch(updates, w="all", timeout_ms=5000)
    assert answer["errors"] is False and {r["status"] for r in answer["results"]} == {200}
    read = await cluster["n3"].api().get_many(keys)
    assert [r["item"]["value"] for r in read["results"]] == list(range(1, 21))
    values = await cluster.values(keys, ["n1"])
    assert values["n1"] == {key: i + 1 for i, key in enumerate(keys)}
