"""The convergence report on a real cluster of three processes (behind an API token): converged once writes have
settled (and then the data really is equal), diverged while a partition holds differing data, converged again
after the heal; `rumor status` prints the table and the JSON, with the token and refused without it."""

from __future__ import annotations

import asyncio
import json
import sys
import tempfile
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest
import pytest_asyncio

from rumor.server.local_cluster import LocalCluster

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]

TOKEN = "convergence-test-token"
NAMES = ("n1", "n2", "n3")


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def cluster() -> AsyncIterator[LocalCluster]:
    with tempfile.TemporaryDirectory(prefix="rumor-test-convergence-") as base:
        async with LocalCluster(3, Path(base), preset="local", api_token=TOKEN) as started:
            await started.wait_members(timeout_s=20)
            yield started


async def verdicts(cluster: LocalCluster, names: Sequence[str] = NAMES) -> dict[str, str]:
    reports = await asyncio.gather(*(cluster[name].api().convergence() for name in names))
    return {name: report["verdict"] for name, report in zip(names, reports, strict=True)}


async def wait_verdicts(cluster: LocalCluster, expected: dict[str, str], timeout_s: float = 20.0) -> None:
    async def check() -> bool:
        return await verdicts(cluster, list(expected)) == expected

    await cluster.wait_for(f"verdicts {expected}", check, timeout_s)


async def all_values(cluster: LocalCluster, keys: list[str]) -> list[dict[str, object]]:
    return list((await cluster.values(keys)).values())


async def test_converged_diverged_and_converged_again(cluster: LocalCluster) -> None:
    keys = [f"conv/{i}" for i in range(20)]
    for i, key in enumerate(keys):
        await cluster[NAMES[i % 2]].api().incr(key, i + 1)
    await wait_verdicts(cluster, dict.fromkeys(NAMES, "converged"))
    rows = await all_values(cluster, keys)
    assert all(row == rows[0] for row in rows) and rows[0]["conv/19"] == 20  # converged means equal
    report = await cluster["n1"].api().convergence()
    assert report["keys"] >= len(keys) and report["dirty_keys"] == 0
    assert {p["id"] for p in report["peers"]} == {"n2", "n3"}
    assert all(p["root_match"] and p["answered"] and p["differing_ranges"] == 0 for p in report["peers"])
    assert all(p["http_address"] == cluster[p["id"]].http_url.removeprefix("http://") for p in report["peers"])

    await cluster.partition(["n1", "n2"], ["n3"])
    try:
        await cluster["n1"].api().incr("conv/0", 100)
        await cluster["n3"].api().incr("conv/1", 1000)
        await wait_verdicts(cluster, {"n1": "diverged", "n3": "diverged"})
        rows = await all_values(cluster, ["conv/0", "conv/1"])
        assert rows[0] != rows[2]  # n1 and n3 really differ
        report = await cluster["n1"].api().convergence()
        n3 = next(p for p in report["peers"] if p["id"] == "n3")
        assert n3["root_match"] is False and n3["answered"] is False and n3["differing_ranges"] >= 1
        assert "n3" in report["summary"]
    finally:
        await cluster.heal()
    await wait_verdicts(cluster, dict.fromkeys(NAMES, "converged"), timeout_s=30)
    rows = await all_values(cluster, keys)
    assert all(row == rows[0] for row in rows) and rows[0]["conv/0"] == 101 and rows[0]["conv/1"] == 1002


async def rumor(*args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(sys.executable, "-m", "rumor.server.cli", *args,
                                                   stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_status_prints_a_table_and_json(cluster: LocalCluster) -> None:
    await cluster.wait_members(timeout_s=20)
    await wait_verdicts(cluster, {"n2": "converged"})
    url = cluster["n2"].http_url
    code, out, err = await rumor("status", "--node", url, "--token", TOKEN)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split() == ["member", "status", "inc", "gossip", "http", "data", "ranges", "exchange", "lag",
                                "backlog"]
    assert lines[1].startswith("n2 (this node)")
    for name in ("n1", "n3"):
        row = next(line for line in lines if line.startswith(name + " "))
        assert " alive " in row and cluster[name].gossip_addr in row and "agrees" in row
    assert lines[-1].partition(": ")[0] in ("converged", "diverged", "unknown") and lines[-2] == ""

    code, out, err = await rumor("status", "--node", url, "--token", TOKEN, "--json", "--check")
    assert code in (0, 3), err
    report = json.loads(out)
    assert (code == 0) == (report["verdict"] == "converged")  # --check: 3 unless converged
    assert report["node"] == "n2" and report["verdict"] in ("converged", "diverged", "unknown")
    assert sorted(p["id"] for p in report["peers"]) == ["n1", "n3"]

    code, out, err = await rumor("status", "--node", url)  # no token
    assert code == 1 and out == "" and "401" in err and "token" in err
