"""`Supervisor`: runs a node's background work so that none of it can die silently.

Without it, a background task that raises just ends: asyncio prints "Task exception was never retrieved" (or nothing,
if the task is kept), the work stops for good (a dead checkpointer lets the log grow until the disk fills) and
`/health` keeps answering 200. Under a supervisor every failure is

- logged once, with its traceback (here, and nowhere else: callers report instead of logging);
- counted per component (`failure_counts`, exported as `rumor_background_failures_total{component}`);
- visible: the component is *failing* (`failing()`, shown by `/health` as a 503) from the failure until
  `healthy_after_s` passed without another one;
- followed by a restart after an exponential backoff (long-running tasks, `supervise`), or nothing more (one-shot
  work such as an anti-entropy session or a membership tick, `report`/`watch`: the next one is a fresh attempt);
- or fatal, when a `critical` component fails or failures come too fast to be a passing fault: then `on_fatal` is
  called once, and `rumor serve` stops the node loudly rather than limping on.

Time and sleeping are injected (`clock`, `sleep`) so tests drive the backoff and the health window by hand.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from rumor.gossip.futures import retrieve_exception
from rumor.server.errors import ServerError

log = logging.getLogger(__name__)

Factory = Callable[[], Awaitable[Any]]
FatalHandler = Callable[[str, BaseException], None]

_MAX_REASON_CHARS = 200


@dataclass(frozen=True)
class SupervisorConfig:
    """How patient the supervisor is. Units are in the field names."""

    #: first delay before restarting a failed task; doubles after each failure in a row.
    backoff_initial_s: float = 0.1
    #: the doubling stops here: a task broken for good is retried this often, not hammered.
    backoff_max_s: float = 30.0
    #: a component is failing until this long passed without another failure; a task that ran this long without
    #: failing starts its backoff afresh.
    healthy_after_s: float = 30.0
    #: this many failures (all components together) within `fatal_window_s` are fatal: a bug that fires every tick
    #: would otherwise fill the log while the node pretends to work.
    fatal_failures: int = 20
    fatal_window_s: float = 60.0

    def __post_init__(self) -> None:
        if not (0 < self.backoff_initial_s <= self.backoff_max_s) or self.healthy_after_s < 0 \
                or self.fatal_failures < 1 or self.fatal_window_s <= 0:
            raise ValueError("need 0 < backoff_initial_s <= backoff_max_s, healthy_after_s >= 0, "
                             "fatal_failures >= 1, fatal_window_s > 0")


class AlreadySupervisedError(ServerError, RuntimeError):
    """`supervise` was asked to start a component whose task is still running."""


class TaskReturnedError(ServerError, RuntimeError):
    """A task meant to run until cancelled returned: whatever it did has stopped, which is a failure too."""

    def __init__(self, name: str) -> None:
        super().__init__(f"{name} returned while it should still run")
        self.name = name


def describe(exc: BaseException) -> str:
    """`TypeName: message` on one line, bounded: what `/health` shows for a failing component."""
    text = str(exc)
    line = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    line = " ".join(line.split())
    return line if len(line) <= _MAX_REASON_CHARS else line[: _MAX_REASON_CHARS - 3] + "..."


@dataclass
class _Component:
    critical: bool = False
    failures: int = 0
    last_failure_at: float | None = None
    reason: str = ""
    task: asyncio.Task[None] | None = None


class Supervisor:
    """Named background components of one node: long-running supervised tasks and reported one-shot failures."""

    def __init__(
        self,
        config: SupervisorConfig | None = None,
        *,
        on_fatal: FatalHandler | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.config = config or SupervisorConfig()
        #: called once, with the component and its exception, when a failure is fatal (set by whoever can stop
        #: the node; without one, fatal failures are logged and the node carries on restarting what failed).
        self.on_fatal = on_fatal
        self._clock = clock
        self._sleep = sleep
        self._components: dict[str, _Component] = {}
        self._recent: deque[float] = deque()  # times of the failures within the fatal window, oldest first
        self._fatal: tuple[str, str] | None = None
        self._stopping = False

    # -- running work ------------------------------------------------------------------------------------------------

    def supervise(self, name: str, factory: Factory, *, critical: bool = False,
                  forever: bool = True) -> asyncio.Task[None]:
        """Runs `await factory()` as component `name`, restarting it after each failure; returns the task (cancel it
        to stop the component). `forever=False` is for work that ends (joining a cluster): returning is success."""
        component = self._component(name, critical)
        if component.task is not None and not component.task.done():
            raise AlreadySupervisedError(f"{name} is already running")
        self._stopping = False
        task = asyncio.get_running_loop().create_task(self._run(name, factory, forever), name=f"supervised:{name}")
        component.task = task
        return task

    def watch(self, name: str, task: asyncio.Future[Any]) -> None:
        """Reports `task`'s exception as a failure of `name` when it ends with one (one-shot work: not restarted).

        The task should already handle what it expects (network errors, say): whatever escapes it is a bug. Its
        exception is retrieved here, so asyncio never prints "Task exception was never retrieved".
        """

        def done(finished: asyncio.Future[Any]) -> None:
            if (exc := retrieve_exception(finished)) is not None:
                self.report(name, exc)

        task.add_done_callback(done)

    def report(self, name: str, exc: BaseException) -> None:
        """Records a failure of one-shot work (logged once here, with its traceback); nothing is restarted."""
        self._failed(name, exc, restarting_in=None)

    async def stop(self) -> None:
        """Cancels every supervised task and waits for them; failures reported from now on are never fatal."""
        self._stopping = True
        tasks = [c.task for c in self._components.values() if c.task is not None and not c.task.done()]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _run(self, name: str, factory: Factory, forever: bool) -> None:
        delay = self.config.backoff_initial_s
        while True:
            started = self._clock()
            try:
                await factory()
            except Exception as exc:  # not BaseException: cancellation (and KeyboardInterrupt) must go through
                error: Exception = exc
            else:
                if not forever:
                    return
                error = TaskReturnedError(name)
            if self._clock() - started >= self.config.healthy_after_s:
                delay = self.config.backoff_initial_s  # it ran well for a long time: a new fault, not the same one
            if self._stopping:  # counted and logged, but never restarted nor fatal: the node is going down anyway
                self._failed(name, error, restarting_in=None)
                return
            self._failed(name, error, restarting_in=delay)
            await self._sleep(delay)
            delay = min(2 * delay, self.config.backoff_max_s)

    # -- bookkeeping --------------------------------------------------------------------------------------------------

    def _component(self, name: str, critical: bool = False) -> _Component:
        component = self._components.get(name)
        if component is None:
            component = self._components[name] = _Component()
        component.critical = component.critical or critical
        return component

    def _failed(self, name: str, exc: BaseException, restarting_in: float | None) -> None:
        now = self._clock()
        component = self._component(name)
        component.failures += 1
        component.last_failure_at = now
        component.reason = describe(exc)
        then = "" if restarting_in is None else f"; restarting in {restarting_in:.1f} s"
        log.error("%s failed: %s%s", name, component.reason, then, exc_info=exc)
        recent = self._recent
        recent.append(now)
        while recent and recent[0] <= now - self.config.fatal_window_s:
            recent.popleft()
        if self._stopping or self._fatal is not None:
            return
        if component.critical:
            self._declare_fatal(name, exc, component.reason)
        elif len(recent) >= self.config.fatal_failures:
            self._declare_fatal(name, exc, f"{len(recent)} failures within {self.config.fatal_window_s:g} s, "
                                           f"the last: {component.reason}")

    def _declare_fatal(self, name: str, exc: BaseException, reason: str) -> None:
        self._fatal = (name, reason)
        if self.on_fatal is None:
            log.error("fatal failure of %s (%s), but nothing is set to stop the node", name, reason)
            return
        try:
            self.on_fatal(name, exc)
        except Exception:  # the handler is the last line of defence: it must not take the reporter down with it
            log.exception("the fatal-failure handler failed")

    # -- what operators see -------------------------------------------------------------------------------------------

    def failing(self) -> dict[str, str]:
        """Components that failed within the last `healthy_after_s`, with the last failure's one-line reason."""
        since = self._clock() - self.config.healthy_after_s
        return {name: c.reason for name, c in sorted(self._components.items())
                if c.last_failure_at is not None and c.last_failure_at > since}

    def failure_counts(self) -> dict[str, int]:
        """Failures per component since the supervisor was made (for /metrics)."""
        return {name: c.failures for name, c in self._components.items()}

    @property
    def fatal(self) -> tuple[str, str] | None:
        """(component, reason) of the failure that was fatal, once one was."""
        return self._fatal


__all__ = ["AlreadySupervisedError", "Supervisor", "SupervisorConfig", "TaskReturnedError", "describe"]
