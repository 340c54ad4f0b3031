"""Real clusters on loopback: the asyncio driver over UDP/TCP, in one process and as separate processes.

Waits are event-driven (`Memberlist.wait_until` wakes on every membership change; subprocess events are read line by
line) and always bounded by a deadline. Timers are shortened so failure detection takes about a second.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from loopback import ipv6_available

from rumor.gossip.address import format_address
from rumor.gossip.config import Config
from rumor.gossip.delegate import Delegate
from rumor.gossip.errors import PacketTooLargeError, UnknownMemberError
from rumor.gossip.member import MemberStatus
from rumor.gossip.memberlist import AppRequestError, JoinError, Memberlist
from rumor.gossip.security import Keyring
from rumor.gossip.transport import PeerTimeoutError
from rumor.gossip.transport_asyncio import AsyncioTransport

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
FAST = Config.lan(probe_interval_s=0.2, probe_timeout_s=0.08, gossip_interval_s=0.05, stream_timeout_s=1.0,
                  join_retry_base_s=0.1, join_max_attempts=2, push_pull_interval_s=5.0, reconnect_interval_s=5.0)
KEY = bytes(range(16))
OTHER_KEY = bytes(range(16, 32))
WAIT_S = 15.0


class RecordingDelegate(Delegate):
    """Keeps app messages and answers requests; ``fail`` makes ``handle_request`` raise."""

    def __init__(self) -> None:
        self.messages: list[tuple[bytes, str]] = []
        self.arrived = asyncio.Event()
        self.fail = False

    def notify_message(self, payload: bytes, sender: str) -> None:
        self.messages.append((payload, sender))
        self.arrived.set()

    async def handle_request(self, payload: bytes, sender: str) -> bytes:
        if self.fail:
            raise ValueError("refusing on purpose")
        return b"re:" + payload + b" from " + sender.encode()



@asynccontextmanager
async def cluster(n: int, host: str = "127.0.0.1", keyrings: list[Keyring | None] | None = None,
                  config: Config = FAST, join: bool = True) -> AsyncIterator[list[Memberlist]]:
    """``n`` started memberlists (ids m0..), each joined through m0 unless ``join`` is False."""
    async with AsyncExitStack() as stack:
        nodes = []
        for i in range(n):
            keyring = keyrings[i] if keyrings else None
            transport = AsyncioTransport((host, 0), keyring, config.max_packet_bytes, config.max_stream_bytes)
            node = Memberlist(config, f"m{i}", transport, RecordingDelegate())
            nodes.append(await stack.enter_async_context(node))
        if join:
            for node in nodes[1:]:
                await node.join([nodes[0].transport.local_address])
        yield nodes


def statuses(node: Memberlist) -> dict[str, MemberStatus]:
    return {m.id: m.status for m in node.members()}


async def converge(nodes: list[Memberlist]) -> None:
    ids = {n.local_member.id for n in nodes}
    for node in nodes:
        await node.wait_until(lambda node=node: {m.id for m in node.alive_members()} == ids, WAIT_S)


async def all_see(nodes: list[Memberlist], subject: str, status: MemberStatus) -> None:
    for node in nodes:
        await node.wait_until(lambda node=node: statuses(node).get(subject) is status, WAIT_S)


async def test_five_members_converge_and_detect_a_crash() -> None:
    async with cluster(5) as nodes:
        await converge(nodes)
        victim = nodes[-1]
        await victim.shutdown()  # no goodbye: its sockets just close, as in a crash
        await all_see(nodes[:-1], "m4", MemberStatus.DEAD)
        for node in nodes[:-1]:
            assert statuses(node)["m4"] is MemberStatus.DEAD
            assert {m.id for m in node.alive_members()} == {"m0", "m1", "m2", "m3"}
            assert node.stats.packets_out > 0 and node.stats.bytes_in > 0
            assert node.stats.transport.bytes_sent >= node.stats.bytes_out


async def test_graceful_leave_is_seen_as_left_not_dead(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="rumor.gossip.memberlist")
    async with cluster(3) as nodes:
        await converge(nodes)
        await nodes[2].leave(timeout_s=2.0)
        await all_see(nodes[:2], "m2", MemberStatus.LEFT)
        assert nodes[2].local_member.status is MemberStatus.LEFT
    # operators read membership changes from the log: one line per status change, per observer
    for observer in ("m0", "m1"):
        assert any(record.getMessage().startswith(f"{observer}: member m2 is left") for record in caplog.records)


async def test_app_channel_messages_and_requests() -> None:
    async with cluster(2) as (a, b):
        await converge([a, b])
        delegate_b = b.delegate
        assert isinstance(delegate_b, RecordingDelegate)
        a.send_to("m1", b"hello")
        async with asyncio.timeout(WAIT_S):
            await delegate_b.arrived.wait()
        assert delegate_b.messages == [(b"hello", "m0")]
        assert await a.request("m1", b"q", timeout_s=WAIT_S) == b"re:q from m0"
        assert b.stats.app_requests_in == 1
        delegate_b.fail = True
        with pytest.raises(AppRequestError) as info:
            await a.request("m1", b"q", timeout_s=WAIT_S)
        assert "refusing on purpose" in info.value.error
        with pytest.raises(UnknownMemberError):
            a.send_to("nobody", b"x")
        with pytest.raises(PacketTooLargeError):
            a.send_to("m1", bytes(FAST.max_packet_bytes))


async def test_request_to_a_hung_member_times_out() -> None:
    release = asyncio.Event()

    class Stuck(Delegate):
        async def handle_request(self, payload: bytes, sender: str) -> bytes:
            await release.wait()
            return b""

    async with cluster(2) as (a, b):
        await converge([a, b])
        b.delegate = Stuck()
        try:
            with pytest.raises(PeerTimeoutError):
                await a.request("m1", b"q", timeout_s=0.3)
        finally:
            release.set()


async def test_garbage_datagrams_are_dropped_and_counted_by_reason() -> None:
    async with cluster(2) as (a, b):
        await converge([a, b])
        a.transport.send_packet(b.transport.local_address, b"\x7fnot a message")
        await b.wait_until(lambda: sum(b.stats.dropped.values()) >= 1, WAIT_S)
        assert b.stats.dropped["unknown_type"] == 1
        assert len(b.alive_members()) == 2


async def test_encrypted_cluster_works_and_rotation_keeps_it_together() -> None:
    rotated = Keyring(OTHER_KEY, extra=[KEY])  # already sealing with the new key, still opening the old one
    async with cluster(3, keyrings=[Keyring(KEY, extra=[OTHER_KEY]), Keyring(KEY), rotated]) as nodes:
        await converge(nodes)
        assert nodes[0].stats.transport.dropped == {}
        assert nodes[2].stats.transport.dropped == {}


async def test_wrong_key_cannot_join_and_is_counted() -> None:
    async with cluster(2, keyrings=[Keyring(KEY), Keyring(OTHER_KEY)], join=False) as (a, intruder):
        with pytest.raises(JoinError):
            await intruder.join([a.transport.local_address])
        assert a.stats.transport.dropped["decrypt_no_matching_key"] >= 1
        assert [m.id for m in a.members()] == ["m0"]


@pytest.mark.parametrize("sealed_seed", [True, False])
async def test_plain_and_sealed_nodes_refuse_each_other(sealed_seed: bool) -> None:
    keyrings = [Keyring(KEY), None] if sealed_seed else [None, Keyring(KEY)]
    async with cluster(2, keyrings=keyrings, join=False) as (seed, joiner):
        with pytest.raises(JoinError):
            await joiner.join([seed.transport.local_address])
        reason = "plaintext_refused" if sealed_seed else "sealed_refused"
        assert seed.stats.transport.dropped[reason] >= 1
        assert len(seed.members()) == 1


@pytest.mark.skipif(not ipv6_available(), reason="this host has no IPv6 loopback (::1)")
async def test_ipv6_loopback_cluster() -> None:
    async with cluster(3, host="::1") as nodes:
        await converge(nodes)
        assert nodes[1].member("m0").address == nodes[0].transport.local_address  # type: ignore[union-attr]


async def test_member_ids_default_to_the_bound_address() -> None:
    transport = AsyncioTransport(("127.0.0.1", 0))
    async with Memberlist(FAST, "", transport) as node:
        assert node.local_member.id == format_address(transport.local_address)
        assert node.local_member.address == transport.local_address


# ---------------------------------------------------------------------------------------------- separate processes


class NodeProcess:
    """``python -m gossip`` in its own process; its JSON-line stdout becomes events we wait on."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.events: list[dict[str, Any]] = []
        self._new = asyncio.Event()
        self._reader = asyncio.get_running_loop().create_task(self._read())

    @classmethod
    async def spawn(cls, *args: str) -> NodeProcess:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "rumor.gossip", "--preset", "lan", "--probe-interval", "0.3", "--probe-timeout", "0.1",
            "--run-for", "60", *args, cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        return cls(proc)

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        async for line in self.proc.stdout:
            try:
                self.events.append(json.loads(line))
            except ValueError:
                continue
            self._new.set()
        self._new.set()

    async def wait_for(self, predicate: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
        seen = 0
        async with asyncio.timeout(WAIT_S):
            while True:
                for event in self.events[seen:]:
                    if predicate(event):
                        return event
                seen = len(self.events)
                if self._reader.done():
                    raise AssertionError(f"node exited with {self.proc.returncode} before the event: {self.events}")
                self._new.clear()
                await self._new.wait()

    def status(self, member: str) -> str | None:
        found = [e["status"] for e in self.events if e.get("ev") == "status" and e.get("member") == member]
        return found[-1] if found else None

    async def stop(self, sig: int = signal.SIGKILL) -> None:
        if self.proc.returncode is None:
            self.proc.send_signal(sig)
        async with asyncio.timeout(WAIT_S):
            await self.proc.wait()
            await self._reader


@asynccontextmanager
async def process_cluster(n: int, *extra: str) -> AsyncIterator[tuple[list[NodeProcess], list[str]]]:
    nodes: list[NodeProcess] = []
    try:
        seed = await NodeProcess.spawn("--bind", "127.0.0.1:0", *extra)
        nodes.append(seed)
        ready = await seed.wait_for(lambda e: e["ev"] == "ready")
        for _ in range(n - 1):
            nodes.append(await NodeProcess.spawn("--bind", "127.0.0.1:0", "--join", ready["address"], *extra))
        names = [(await node.wait_for(lambda e: e["ev"] == "ready"))["id"] for node in nodes]
        yield nodes, names
    finally:
        for node in nodes:
            await node.stop()


async def wait_all_see(nodes: list[NodeProcess], names: list[str], subject: str, statuses: set[str]) -> None:
    for node, name in zip(nodes, names, strict=True):
        if name != subject:
            await node.wait_for(lambda e: e["ev"] == "status" and e["member"] == subject and e["status"] in statuses)


async def test_processes_detect_a_sigkilled_member_everywhere() -> None:
    async with process_cluster(4) as (nodes, names):
        for name in names:
            await wait_all_see(nodes, names, name, {"alive"})
        await nodes[-1].stop(signal.SIGKILL)
        await wait_all_see(nodes[:-1], names[:-1], names[-1], {"dead"})
        assert all(node.status(names[-1]) == "dead" for node in nodes[:-1])


async def test_processes_see_a_sigterm_as_a_graceful_leave() -> None:
    async with process_cluster(3) as (nodes, names):
        for name in names:
            await wait_all_see(nodes, names, name, {"alive"})
        await nodes[-1].stop(signal.SIGTERM)
        assert any(e["ev"] == "stopped" for e in nodes[-1].events)
        await wait_all_see(nodes[:-1], names[:-1], names[-1], {"left"})


async def test_processes_with_a_shared_key_and_an_intruder() -> None:
    async with process_cluster(3, "--key", KEY.hex()) as (nodes, names):
        for name in names:
            await wait_all_see(nodes, names, name, {"alive"})
        seed_address = next(e for e in nodes[0].events if e["ev"] == "ready")["address"]
        intruder = await NodeProcess.spawn("--bind", "127.0.0.1:0", "--join", seed_address, "--key", OTHER_KEY.hex(),
                                           "--set", "join_max_attempts=2", "--set", "join_retry_base_s=0.1",
                                           "--set", "stream_timeout_s=1")
        try:
            failed = await intruder.wait_for(lambda e: e["ev"] in ("join_failed", "joined"))
            assert failed["ev"] == "join_failed"
        finally:
            await intruder.stop()
        assert all(node.status(names[0]) != "dead" for node in nodes[1:])

