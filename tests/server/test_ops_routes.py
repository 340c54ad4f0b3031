"""The operator routes on one node (no cluster): the dashboard's files are public and locked down, the convergence
report and the event stream take the token, bad options are a 400 that changes nothing, the stream's snapshots count
writes per second; membership events are recorded as changes of status only, bounded."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

from rumor.gossip.member import Member, MemberStatus
from rumor.server.member_events import MemberEvents
from rumor.server.sse import read_events
from rumor.server.status_view import status_table
from rumor.server.updates import Increment

TOKEN = "ops-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


async def test_dashboard_files_are_public_and_locked_down(make_api: Callable[..., Any]) -> None:
    _, client = await make_api(api_token=TOKEN)
    for path, media in (("/ui", "text/html"), ("/ui/app.js", "text/javascript"), ("/ui/style.css", "text/css")):
        response = await client.get(path)
        assert response.status == 200 and response.content_type == media, path
        assert "default-src 'self'" in response.headers["Content-Security-Policy"]
        assert len(await response.read()) > 500
    page = await (await client.get("/ui")).text()
    assert 'src="/ui/app.js"' in page and "://" not in page  # nothing loaded from elsewhere


async def test_convergence_and_snapshot_take_the_token(make_api: Callable[..., Any]) -> None:
    node, client = await make_api(api_token=TOKEN)
    for path in ("/v1/cluster/convergence", "/v1/ui/events"):
        assert (await client.get(path)).status == 401
    await node.update("k", Increment(amount=2))
    report = await (await client.get("/v1/cluster/convergence", headers=AUTH)).json()
    assert report["verdict"] == "alone" and report["node"] == "n1" and report["keys"] == 1 and report["peers"] == []
    assert status_table(report).splitlines()[-1] == "alone: not a cluster member: nothing to converge with"
    snapshot = await (await client.get("/v1/ui/events", headers=AUTH)).json()
    assert snapshot["node"] == "n1" and snapshot["keys"] == 1 and snapshot["writes_per_s"] is None
    assert [m["id"] for m in snapshot["members"]] == ["n1"] and snapshot["convergence"]["verdict"] == "alone"


async def test_bad_options_are_refused(make_api: Callable[..., Any]) -> None:
    node, client = await make_api()
    for path in ("/v1/cluster/convergence?x=1", "/v1/ui/events?interval_ms=10", "/v1/ui/events?interval_ms=abc",
                 "/v1/ui/events?interval_ms=20000", "/v1/ui/events?other=1"):
        response = await client.get(path, headers={"Accept": "text/event-stream"})
        assert response.status == 400, path
        assert (await response.json())["error"]["code"] == "invalid_option"
    assert len(node.keyspace) == 0


async def test_the_stream_sends_snapshots_with_the_write_rate(make_api: Callable[..., Any]) -> None:
    node, client = await make_api()
    response = await client.get("/v1/ui/events?interval_ms=250", headers={"Accept": "text/event-stream"})
    assert response.status == 200 and response.content_type == "text/event-stream"
    snapshots: list[dict[str, Any]] = []
    async with asyncio.timeout(10):
        async for event in read_events(response.content.iter_any()):
            assert event.event == "snapshot"
            snapshots.append(json.loads(event.data))
            if len(snapshots) == 1:
                for _ in range(5):
                    await node.update("hits", Increment(amount=1))
            if len(snapshots) == 2:
                break
    response.close()
    first, second = snapshots
    assert first["writes_per_s"] is None and second["writes"] - first["writes"] == 5
    assert second["writes_per_s"] > 0 and second["keys"] == 1


def member(status: MemberStatus, incarnation: int = 0) -> Member:
    return Member("n2", ("127.0.0.1", 7001), incarnation, status)


def test_membership_events_are_changes_of_status_bounded() -> None:
    now = [100.0]
    events = MemberEvents(lambda: "n1", kept=3, wall_clock=lambda: now[0])
    events.record(None, member(MemberStatus.ALIVE))
    events.record(member(MemberStatus.ALIVE), member(MemberStatus.ALIVE, 1))  # a refresh, no change of status
    now[0] = 105.0
    events.record(member(MemberStatus.ALIVE), member(MemberStatus.SUSPECT))
    assert [(e["t"], e["status"], e["was"]) for e in events.latest()] == [(100.0, "alive", None),
                                                                          (105.0, "suspect", "alive")]
    for status in (MemberStatus.DEAD, MemberStatus.ALIVE, MemberStatus.LEFT):
        events.record(member(MemberStatus.SUSPECT), member(status))
    assert [e["status"] for e in events.latest()] == ["dead", "alive", "left"] and events.seen == 5
    assert all(e["self"] is False and e["member"] == "n2" for e in events.latest())


def test_status_check_passes_only_a_converged_or_lone_node() -> None:
    from rumor.server.status_view import check_status

    assert [check_status({"verdict": v}, 3) for v in ("converged", "alone", "diverged", "unknown")] == [0, 0, 3, 3]
    assert check_status({}, 3) == 3
