"""`retrieve_exception`: the failure of a finished future, marked as seen so asyncio never reports it as lost."""

from __future__ import annotations

import asyncio
import gc
from typing import Any

from rumor.gossip.futures import retrieve_exception


async def test_it_returns_the_failure_and_none_for_success_or_cancellation() -> None:
    loop = asyncio.get_running_loop()
    failed, done, cancelled = loop.create_future(), loop.create_future(), loop.create_future()
    error = ValueError("boom")
    failed.set_exception(error)
    done.set_result(1)
    cancelled.cancel()
    assert retrieve_exception(failed) is error
    assert retrieve_exception(done) is None
    assert retrieve_exception(cancelled) is None


async def test_as_a_done_callback_it_keeps_asyncio_from_reporting_a_lost_exception() -> None:
    loop = asyncio.get_running_loop()
    reported: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _loop, context: reported.append(context))
    try:
        watched, ignored = loop.create_future(), loop.create_future()
        watched.add_done_callback(retrieve_exception)
        watched.set_exception(RuntimeError("nobody awaits this"))
        ignored.set_exception(RuntimeError("nor this"))
        await asyncio.sleep(0)  # done-callbacks run on the next loop iteration
        del watched, ignored
        gc.collect()
    finally:
        loop.set_exception_handler(None)
    assert [str(c.get("exception")) for c in reported] == ["nor this"]  # the control case is reported, ours is not
