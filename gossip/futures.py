"""Retrieving a finished future's exception: what every done-callback on background work needs first.

asyncio logs "exception was never retrieved" for a failed future whose exception nobody asked for, at garbage
collection time, far from the cause. A done-callback that reports the failure, or that deliberately drops it (a write
nobody awaits, whose failure storage health already reports), calls `retrieve_exception`; passed as the callback
itself it just marks the exception as seen.
"""

from __future__ import annotations

import asyncio
from typing import Any


def retrieve_exception(future: asyncio.Future[Any]) -> BaseException | None:
    """The exception a finished ``future`` ended with, now marked as retrieved; None if it succeeded or was
    cancelled."""
    return None if future.cancelled() else future.exception()


__all__ = ["retrieve_exception"]
