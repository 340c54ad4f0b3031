"""Retries safe on any node, end to end: a client times out on one node and retries the same increment (the same
Idempotency-Key) on a node on the other side of a partition; after the heal every node counts it once. Real
`rumor serve` processes on loopback, cut apart with their fault-injection hook."""

from __future__ import annotations

import pytest

from rumor.server.local_cluster import LocalCluster

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]


async def test_a_retry_across_a_partition_counts_once_after_the_heal(cluster3: LocalCluster) -> None:
    cluster = cluster3
    body = {"type": "counter", "increment": 7}
    await cluster.partition(["n1", "n2"], ["n3"])
    try:
        _, first = await cluster["n1"].api().request("POST", "/v1/kv/orders", body=body, op_id="checkout-1")
        _, retry = await cluster["n3"].api().request("POST", "/v1/kv/orders", body=body, op_id="checkout-1")
        assert first["value"] == 7 and retry["value"] == 7  # each side applied it: neither knew of the other
        plain = {"type": "counter", "increment": 1}  # and a plain one on n2 (whether n1's has reached it yet or not)
        await cluster["n2"].api().request("POST", "/v1/kv/orders", body=plain)
    finally:
        await cluster.heal()
    await cluster.wait_converged(["orders"], timeout_s=30)
    assert {row["orders"] for row in (await cluster.values(["orders"])).values()} == {8}
    # and a retry now, on any node, finds the op there: nothing changes
    status, again = await cluster["n2"].api().request("POST", "/v1/kv/orders", body=body, op_id="checkout-1")
    assert status == 200 and again["value"] == 8
