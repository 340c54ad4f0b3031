"""Unexpected failures inside the asyncio driver are counted and reported (`on_error`) or logged at ERROR, never
silent; a delegate's deliberate refusal is counted and warned about, rate-limited. Two members on loopback."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

import pytest

from rumor.gossip.config import Config
from rumor.gossip.delegate import Delegate
from rumor.gossip.memberlist import AppRequestError, Memberlist, RequestRefusedError
from rumor.gossip.transport_asyncio import AsyncioTransport

pytestmark = pytest.mark.integration

FAST = Config.local(gossip_interval_s=0.05)
WAIT_S = 5.0


class Answering(Delegate):
    """Answers requests per `mode`: "bug" raises a plain exception, "refuse" refuses on purpose; a datagram whose
    payload is b"bug" makes `notify_message` raise."""

    def __init__(self) -> None:
        self.mode = "bug"
        self.heard: list[bytes] = []

    async def handle_request(self, payload: bytes, sender: str) -> bytes:
        if self.mode == "refuse":
            raise RequestRefusedError("bad_key: not UTF-8")
        raise ZeroDivisionError("a bug in the handler")

    def notify_message(self, payload: bytes, sender: str) -> None:
        if payload == b"bug":
            raise KeyError("a bug in notify_message")
        self.heard.append(payload)


@asynccontextmanager
async def two() -> AsyncIterator[tuple[Memberlist, Memberlist]]:
    async with AsyncExitStack() as stack:
        members = []
        for i in range(2):
            transport = AsyncioTransport(("127.0.0.1", 0), None, FAST.max_packet_bytes, FAST.max_stream_bytes)
            members.append(await stack.enter_async_context(Memberlist(FAST, f"m{i}", transport, Answering())))
        await members[1].join([members[0].transport.local_address])
        yield members[0], members[1]


async def test_a_delegate_bug_is_counted_and_logged_once_and_a_refusal_is_counted_and_warned_about(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with two() as (asking, answering):
        with pytest.raises(AppRequestError, match="ZeroDivisionError: a bug in the handler"):
            await asking.request("m1", b"q", timeout_s=WAIT_S)
        assert answering.stats.dropped["delegate_error"] == 1
        logged = [r for r in caplog.records if r.name == "rumor.gossip.memberlist" and r.levelno == logging.ERROR]
        assert len(logged) == 1 and logged[0].exc_info is not None

        delegate = answering.delegate
        assert isinstance(delegate, Answering)
        delegate.mode = "refuse"
        for _ in range(3):
            with pytest.raises(AppRequestError) as refused:
                await asking.request("m1", b"q", timeout_s=WAIT_S)
            assert refused.value.error == "bad_key: not UTF-8"
        assert answering.stats.dropped["delegate_error"] == 1
        assert answering.stats.dropped["request_refused"] == 3
        assert len([r for r in caplog.records if r.levelno >= logging.ERROR]) == 1
        warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert warned == ["m1: refused an app request from m0: bad_key: not UTF-8"]  # once a minute per requester


async def test_a_delegate_bug_on_a_datagram_is_counted_and_logged_and_later_datagrams_go_through(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with two() as (sending, receiving):
        delegate = receiving.delegate
        assert isinstance(delegate, Answering)
        sending.send_to("m1", b"bug")
        await receiving.wait_until(lambda: receiving.stats.dropped["packet_error"] == 1, WAIT_S)
        logged = [r for r in caplog.records if r.name == "rumor.gossip.memberlist" and r.levelno == logging.ERROR]
        assert len(logged) == 1 and logged[0].exc_info is not None
        assert "packet failed: KeyError: 'a bug in notify_message'" in logged[0].getMessage()
        sending.send_to("m1", b"fine")
        await receiving.wait_until(lambda: delegate.heard == [b"fine"], WAIT_S)


async def test_tick_and_task_failures_go_to_the_hook_and_the_timer_keeps_running(
    caplog: pytest.LogCaptureFixture,
) -> None:
    heard: list[tuple[str, str]] = []
    reported = asyncio.Event()
    unhandled: list[object] = []
    asyncio.get_running_loop().set_exception_handler(lambda _loop, context: unhandled.append(context))
    async with two() as (_first, member):
        def hook(what: str, exc: BaseException) -> None:
            heard.append((what, str(exc)))
            reported.set()

        member.on_error = hook
        membership = member.membership
        real_tick = membership.tick
        ticks = 0

        def tick_failing_once(now: float) -> object:
            nonlocal ticks
            ticks += 1
            if ticks == 1:
                raise RuntimeError("tick bug")
            return real_tick(now)

        membership.tick = tick_failing_once  # type: ignore[method-assign]
        async with asyncio.timeout(WAIT_S):
            await reported.wait()
        reported.clear()
        await member.wait_until(lambda: ticks >= 2, WAIT_S)  # re-armed after the failure: later ticks run

        async def stream_bug() -> None:
            raise KeyError("task bug")

        member._spawn(stream_bug())
        async with asyncio.timeout(WAIT_S):
            await reported.wait()
        assert heard == [("tick", "tick bug"), ("task", "'task bug'")]
        assert member.stats.dropped["tick_error"] == 1 and member.stats.dropped["task_error"] == 1
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]  # the hook's owner logs, not the driver
    assert unhandled == []
