"""The root probe and the convergence verdict, without a network: PROBE/PROBED parsed strictly (hostile input is
refused and counted, nothing changes), answers that say where a replica stands, the lag of a peer's groups, the
verdict's rules, and `ConvergenceMonitor` over in-process replicas with a stand-in memberlist (a peer that is
silent, an older version, or answering garbage never makes a report say converged)."""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import Coroutine
from typing import Any

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st
from replication_helpers import Replica, states

from rumor.gossip.clock import ManualClock
from rumor.gossip.member import Member, MemberStatus
from rumor.gossip.transport import PeerUnreachableError
from rumor.server.replication.convergence import ConvergenceMonitor, OwnState, PeerView, judge
from rumor.server.replication.errors import ReplicationProtocolError
from rumor.server.replication.member_meta import ROOT_PROBE, advertised, reads_probe
from rumor.server.replication.probe import (
    ProbeAnswer,
    differing_ranges,
    parse_probe,
    parse_probed,
    probe_message,
    probed_message,
)
from rumor.server.replication.replica import sync_pair
from rumor.server.replication.wire import Kind, pack
from rumor.server.updates import Increment, SetChange

ROOT = bytes(16)
OTHER_ROOT = bytes([1]) * 16
GOOD = {"a": 0.5, "b": 10, "d": 0, "g": 1, "h": bytes(32), "k": 3, "r": ROOT, "u": 0}


def answer(root: bytes = ROOT, dirty: int = 0, keys: int = 3) -> ProbeAnswer:
    return ProbeAnswer(root=root, ranges=bytes(64 * 16), dirty=dirty, keys=keys, backlog_groups=0, backlog_bytes=0,
                       unsealed_keys=0, oldest_unheld_age_s=None)


# -- the messages ---------------------------------------------------------------------------------------------------


def test_probe_and_probed_round_trip() -> None:
    assert parse_probe(probe_message(7, 42)) == (7, 42)
    sent = ProbeAnswer(OTHER_ROOT, bytes(range(32)), 1, 2, 3, 4, 5, 0.75)
    assert parse_probed(probed_message(sent)) == sent


@pytest.mark.parametrize("change", [
    {"r": bytes(15)},                      # a root is 16 bytes
    {"h": bytes(17)},                      # range hashes come in 16-byte units
    {"h": bytes(257 * 16)},                # at most a 256-node level
    {"d": -1}, {"k": -5}, {"g": -1}, {"b": -1}, {"u": -1},
    {"a": math.nan}, {"a": math.inf}, {"a": -0.5}, {"a": 1e12},
    {"a": "soon"}, {"d": 1.5}, {"k": True}, {"r": "00" * 16},
    {"extra": 1},                          # exact field set: nothing unknown
])
def test_a_malformed_answer_is_refused(change: dict[str, Any]) -> None:
    body = GOOD | change
    with pytest.raises(ReplicationProtocolError):
        parse_probed(pack(Kind.PROBED, body))


def test_an_answer_missing_a_field_or_of_another_kind_is_refused() -> None:
    body = {k: v for k, v in GOOD.items() if k != "d"}
    with pytest.raises(ReplicationProtocolError):
        parse_probed(pack(Kind.PROBED, body))
    with pytest.raises(ReplicationProtocolError):
        parse_probed(pack(Kind.PROBE, GOOD))
    for bad in ({"e": -1, "s": 0}, {"e": 0, "s": -1}, {"e": 0}, {"e": "x", "s": 0}, {"e": 0, "s": 0, "x": 1}):
        with pytest.raises(ReplicationProtocolError):
            parse_probe(pack(Kind.PROBE, bad))


@given(st.binary(max_size=200))
def test_any_bytes_parse_or_raise_the_protocol_error(data: bytes) -> None:
    for parse in (parse_probe, parse_probed):
        for payload in (data, bytes([Kind.PROBE]) + data, bytes([Kind.PROBED]) + data):
            with contextlib.suppress(ReplicationProtocolError):
                parse(payload)


def test_hostile_probes_are_counted_and_change_nothing() -> None:
    replica = Replica("a")
    replica.keyspace.apply_local("k", Increment(amount=3))
    before = states(replica.keyspace)
    hostile = [b"", bytes([Kind.PROBE]), bytes([Kind.PROBE]) + b"\xc1", pack(Kind.PROBE, {"e": -1, "s": 0}),
               pack(Kind.PROBE, {"e": 0, "s": 2**63}), bytes([Kind.PROBE]) + msgpack.packb([1, 2]),
               pack(Kind.PROBED, GOOD)]  # an answer sent as a request: not a request we serve
    for payload in hostile:
        with pytest.raises(ReplicationProtocolError):
            replica.core.handle_request(payload, "mallory", 1.0)
    assert sum(replica.core.stats.rejected.values()) == len(hostile)
    assert states(replica.keyspace) == before


def test_metadata_says_who_answers_probes() -> None:
    assert reads_probe(msgpack.packb(advertised()))
    assert ROOT_PROBE in advertised()["reads"]
    for older in (b"", b"\xc1", msgpack.packb({"reads": ["ae-cx"]}), msgpack.packb({"reads": "cv-probe"})):
        assert not reads_probe(older)


# -- what a replica answers -------------------------------------------------------------------------------------------


def test_answers_agree_exactly_when_the_data_does() -> None:
    a, b = Replica("a"), Replica("b", seed=1)
    a.keyspace.apply_local("x", Increment(amount=1))
    b.keyspace.apply_local("y", SetChange(add=("e",)))
    first_a, first_b = a.core.probe_answer(0, 0, 1.0), b.core.probe_answer(0, 0, 1.0)
    assert first_a.dirty == first_b.dirty == 0  # answering rehashed what was stale
    assert first_a.root != first_b.root
    assert differing_ranges(first_a.ranges, first_b.ranges) in (1, 2)  # x and y, in one range or two
    sync_pair(a.core, b.core, 2.0)
    assert states(a.keyspace) == states(b.keyspace)
    after_a, after_b = a.core.probe_answer(0, 0, 3.0), b.core.probe_answer(0, 0, 3.0)
    assert after_a.root == after_b.root and differing_ranges(after_a.ranges, after_b.ranges) == 0
    assert after_a.keys == after_b.keys == 2
    assert a.core.last_exchange == {"b": 2.0} and b.core.last_exchange == {"a": 2.0}  # DONE dates it on b


def test_lag_is_the_age_of_the_oldest_group_the_asker_lacks() -> None:
    replica = Replica("a")
    core, epoch = replica.core, replica.core.origin[1]
    replica.keyspace.apply_local("x", Increment(amount=1))
    core.disseminator.tick(10.0, ["a", "b"], core.rng)  # group 1, made at 10 s
    core.disseminator.next_push_at = 0.0
    replica.keyspace.apply_local("x", Increment(amount=1))
    core.disseminator.tick(12.0, ["a", "b"], core.rng)  # group 2, made at 12 s
    assert core.probe_answer(epoch, 0, 15.0).oldest_unheld_age_s == 5.0
    assert core.probe_answer(epoch, 1, 15.0).oldest_unheld_age_s == 3.0
    assert core.probe_answer(epoch, 2, 15.0).oldest_unheld_age_s is None
    assert core.probe_answer(epoch - 1, 2, 15.0).oldest_unheld_age_s == 5.0  # an older epoch holds none of these
    assert core.probe_answer(epoch, 2, 15.0).unsealed_keys == 0


# -- the verdict ---------------------------------------------------------------------------------------------------


def peer(name: str, reply: ProbeAnswer | None, *, fresh: bool = True, ours: bytes = ROOT) -> PeerView:
    view = PeerView(name, "alive", 0, "127.0.0.1:1", answer=reply, fresh=fresh and reply is not None,
                    note="" if fresh else "suspect")
    if reply is not None:
        view.root_match = reply.root == ours
        view.differing_ranges = 0 if view.root_match else 1
    return view


STEADY = OwnState(ROOT, bytes(64 * 16), 0)


def test_verdicts() -> None:
    assert judge(STEADY, STEADY, [])[0] == "alone"
    assert judge(STEADY, STEADY, [peer("b", answer()), peer("c", answer())]) == (
        "converged", "converged: 3 nodes hold the same 3 keys")
    verdict, summary = judge(STEADY, STEADY, [peer("b", answer(OTHER_ROOT)), peer("c", answer())])
    assert verdict == "diverged" and "1 key range differs with 1 peer (b)" in summary
    # a peer that cannot be asked now: unknown, or diverged when its last answer differs from our data now
    assert judge(STEADY, STEADY, [peer("b", answer(), fresh=False)])[0] == "unknown"
    assert judge(STEADY, STEADY, [peer("b", None, fresh=False)])[0] == "unknown"
    assert judge(STEADY, STEADY, [peer("b", answer(OTHER_ROOT), fresh=False)])[0] == "diverged"


def test_never_converged_while_anything_is_unsettled() -> None:
    changed = OwnState(OTHER_ROOT, bytes(64 * 16), 0)
    dirty = OwnState(ROOT, bytes(64 * 16), 2)
    both = [peer("b", answer())]
    assert judge(STEADY, changed, [peer("b", answer(OTHER_ROOT), ours=OTHER_ROOT)])[0] == "unknown"  # we changed
    assert judge(dirty, STEADY, both)[0] == "unknown"
    assert judge(STEADY, dirty, both)[0] == "unknown"
    assert judge(STEADY, STEADY, [peer("b", answer(dirty=1))])[0] == "unknown"  # the peer's root may be stale


# -- the monitor, with a stand-in memberlist -----------------------------------------------------------------------


class FakeMemberlist:
    """Members as given; `request` answers from `replies[member]`: a replica to ask, bytes, or an exception."""

    def __init__(self, members: list[Member], replies: dict[str, Any]) -> None:
        self._members = members
        self.replies = replies
        self.asked: list[str] = []

    def members(self) -> list[Member]:
        return self._members

    async def request(self, member_id: str, payload: bytes, timeout_s: float) -> bytes:
        self.asked.append(member_id)
        reply = self.replies[member_id]
        if isinstance(reply, Exception):
            raise reply
        if isinstance(reply, Replica):
            return reply.core.handle_request(payload, "a", 1.0)
        return bytes(reply)


class FakeReplication:
    def __init__(self, replica: Replica, memberlist: FakeMemberlist) -> None:
        self.core = replica.core
        self.memberlist = memberlist
        self.clock = ManualClock(100.0)

    def spawn(self, coro: Coroutine[Any, Any, Any], component: str) -> asyncio.Task[Any]:
        return asyncio.get_running_loop().create_task(coro)

    async def flush_digests(self) -> None:
        self.core.digests.flush(self.core.config.digest_batch_keys)


def member(name: str, status: MemberStatus = MemberStatus.ALIVE, meta: bytes | None = None) -> Member:
    return Member(name, ("127.0.0.1", 7000 + ord(name[0])), 0, status,
                  msgpack.packb(advertised()) if meta is None else meta)


def monitor_of(a: Replica, members: list[Member], replies: dict[str, Any]) -> ConvergenceMonitor:
    replication = FakeReplication(a, FakeMemberlist([member("a"), *members], replies))
    return ConvergenceMonitor(replication, min_interval_s=0.0)  # type: ignore[arg-type]


async def test_monitor_reports_converged_only_once_the_data_is_equal() -> None:
    a, b = Replica("a"), Replica("b", seed=1)
    a.keyspace.apply_local("x", Increment(amount=1))
    monitor = monitor_of(a, [member("b")], {"b": b})
    report = await monitor.report()
    assert report["verdict"] == "diverged" and report["peers"][0]["root_match"] is False
    sync_pair(a.core, b.core, 2.0)
    report = await monitor.report()
    assert report["verdict"] == "converged", report
    assert report["peers"][0] | {"last_exchange_s_ago": None} == report["peers"][0] | {
        "answered": True, "root_match": True, "differing_ranges": 0, "keys": 1, "dirty_keys": 0, "lag_s": 0.0,
        "last_exchange_s_ago": None}


@pytest.mark.parametrize("why", ["suspect", "older", "unreachable", "garbage", "truncated"])
async def test_a_peer_without_a_good_answer_is_never_converged(why: str) -> None:
    a, b = Replica("a"), Replica("b", seed=1)
    sync_pair(a.core, b.core, 1.0)  # the data is equal: only the answer is missing
    peer_member = {"suspect": member("b", MemberStatus.SUSPECT), "older": member("b", meta=b"")}.get(why, member("b"))
    good = b.core.handle_request(probe_message(0, 0), "a", 1.0)
    replies = {"unreachable": PeerUnreachableError(("127.0.0.1", 1), "refused"), "garbage": b"\x6a\xc1\x00",
               "truncated": good[: len(good) // 2]}
    monitor = monitor_of(a, [peer_member], {"b": replies.get(why, b)})
    report = await monitor.report()
    assert report["verdict"] == "unknown", report
    assert report["peers"][0]["answered"] is False and report["peers"][0]["note"]
    if why in ("garbage", "truncated"):
        assert sum(v for k, v in a.core.stats.rejected.items() if k.startswith("probe_answer_")) == 1
    if why in ("suspect", "older"):
        assert monitor.replication.memberlist.asked == []  # type: ignore[attr-defined]


async def test_left_members_are_not_waited_for() -> None:
    a = Replica("a")
    monitor = monitor_of(a, [member("b", MemberStatus.LEFT)], {})
    assert (await monitor.report())["verdict"] == "alone"
