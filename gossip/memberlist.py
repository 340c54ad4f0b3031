"""The asyncio driver: runs the pure `Membership` state machine over a real `Transport`.

Everything the protocol decides happens in `Membership`; this module only moves bytes and time. One timer is armed
at ``next_deadline()`` and re-armed after every input; datagrams go straight into ``receive``; stream requests the
protocol asks for run as tasks whose outcome is reported back with ``stream_response``. Keeping the driver this thin
is what lets the simulator exercise exactly the same protocol code with no sockets and no sleeps.

It also carries the application channel the replication layer needs: `send_to` (best-effort datagram), `request`
(stream request/response) and, on the receiving side, the delegate's ``handle_request``.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from rumor.gossip.address import format_address
from rumor.gossip.clock import Address, Clock, MonotonicClock
from rumor.gossip.config import Config, retransmit_limit
from rumor.gossip.delegate import Delegate
from rumor.gossip.errors import GossipError, PacketDecodeError
from rumor.gossip.futures import retrieve_exception
from rumor.gossip.id_conflict import ConflictingClaim
from rumor.gossip.joining import JoinError, NodeIdConflictError, failure_reason
from rumor.gossip.member import Member
from rumor.gossip.membership import JoinStatus, Membership, MembershipStats
from rumor.gossip.messages import decode_app_response, encode_app_error, encode_app_response
from rumor.gossip.outgoing import Outgoing, Packet, StreamRequest
from rumor.gossip.rate_limit import RateLimiter
from rumor.gossip.transport import (
    CountingTransport,
    KeyMismatchError,
    PeerTimeoutError,
    Transport,
    TransportError,
)

log = logging.getLogger(__name__)

_MAX_ERROR_CHARS = 200
_CONFLICT_WARNING_INTERVAL_S = 60.0
_REFUSAL_WARNING_INTERVAL_S = 60.0

__all__ = ["AppRequestError", "JoinError", "Memberlist", "MemberlistStats", "NodeIdConflictError", "NotRunningError",
           "RequestRefusedError", "StreamDeclinedError"]


class NotRunningError(GossipError, RuntimeError):
    """The memberlist was used before `start()` or after `shutdown()`."""


class AppRequestError(GossipError):
    """The peer's ``handle_request`` raised; ``error`` is its short explanation."""

    def __init__(self, member_id: str, error: str) -> None:
        super().__init__(f"request to {member_id!r} failed remotely: {error}")
        self.member_id = member_id
        self.error = error


class StreamDeclinedError(GossipError):
    """An incoming stream message needs no answer (a stream probe for another node); the requester gets an error."""


class RequestRefusedError(GossipError):
    """Raised by a delegate's ``handle_request`` to refuse a request on purpose (malformed, or it cannot serve it now).

    The requester gets the message as its `AppRequestError`; the refusal is counted as ``dropped["request_refused"]``
    and logged as a WARNING at most once a minute per requester. Any other `GossipError` is a refusal too
    (`NoRequestHandlerError`); every other exception is a bug in the delegate: counted as ``dropped["delegate_error"]``
    and reported (see `Memberlist.on_error`).
    """


@dataclass
class MemberlistStats:
    """Traffic as the protocol sees it (plaintext), plus the transport's wire counters and the protocol's own.

    ``dropped`` counts by reason every input refused above the transport (undecodable packets, refused streams,
    app requests the delegate refused, ``*_error`` for the failures `Memberlist.on_error` hears of);
    ``stream_failures`` counts outgoing stream requests that ended without a reply.
    """

    packets_in: int = 0
    bytes_in: int = 0
    packets_out: int = 0
    bytes_out: int = 0
    streams_in: int = 0
    streams_out: int = 0
    app_messages_out: int = 0
    app_requests_out: int = 0
    app_requests_in: int = 0
    dropped: Counter[str] = field(default_factory=Counter)
    stream_failures: Counter[str] = field(default_factory=Counter)
    transport: Any = None
    protocol: MembershipStats | None = None

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            name: getattr(self, name)
            for name in ("packets_in", "bytes_in", "packets_out", "bytes_out", "streams_in", "streams_out",
                         "app_messages_out", "app_requests_out", "app_requests_in")
        }
        out["dropped"] = dict(self.dropped)
        out["stream_failures"] = dict(self.stream_failures)
        if self.transport is not None:
            out["transport"] = self.transport.as_dict()
        if self.protocol is not None:
            out["protocol"] = {k: getattr(self.protocol, k) for k in self.protocol.__slots__}  # type: ignore[attr-defined]
        return out


class Memberlist:
    """One cluster member on a real network. Use as ``async with Memberlist(...) as ml: await ml.join(seeds)``.

    ``node_id`` may be empty: the member is then named after the address the transport bound (``host:port``).

    Refused claims to a node id that is alive elsewhere (`gossip.id_conflict`) and app requests the delegate refused
    (`RequestRefusedError`) are logged as rate-limited WARNINGs.

    ``on_error(what, exc)`` hears of every unexpected failure inside the driver: ``"tick"`` (a protocol timer),
    ``"task"`` (a stream task it spawned), ``"delegate"`` (``handle_request`` raised something that is no
    refusal) and ``"packet"`` (handling a datagram raised: the delegate's ``notify_message``, or the protocol).
    Each is also counted in ``stats.dropped[f"{what}_error"]``. With a hook the hook logs it (a node's
    supervisor, which also shows it in /health); without one it is logged here, at ERROR with its traceback.

    ``member_listeners`` are called with ``(old, new)`` on every change of a member's entry (``old`` None for a new
    member), synchronously: keep them cheap. One that raises is reported as ``"listener"``.
    """

    _join_failures: dict[Address, BaseException] | None = None  # while `join` waits: each seed's last failure
    _conflict_warnings: RateLimiter  # set by `start`, with the membership it listens to
    _refusal_warnings: RateLimiter  # set by `start`

    def __init__(self, config: Config, node_id: str, transport: Transport, delegate: Delegate | None = None,
                 clock: Clock | None = None, rng: random.Random | None = None, meta: bytes = b"",
                 on_error: Callable[[str, BaseException], None] | None = None) -> None:
        self.config = config
        self.on_error = on_error
        self.transport = transport
        self.delegate = delegate or Delegate()
        self._node_id = node_id
        self._clock = clock or MonotonicClock()
        self._rng = rng or random.Random()
        self._meta = meta
        self.stats = MemberlistStats()
        self.member_listeners: list[Callable[[Member | None, Member], None]] = []
        if isinstance(transport, CountingTransport):
            self.stats.transport = transport.stats
        self._membership: Membership | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._changed = asyncio.Event()
        self._stopped = False

    # -- lifecycle -------------------------------------------------------------------------------------------------

    async def start(self) -> None:
        if self._membership is not None or self._stopped:
            raise NotRunningError("a memberlist starts once")
        await self.transport.start(self._on_packet, self._on_request)
        address = self.transport.local_address
        node_id = self._node_id or format_address(address)
        self._membership = Membership(self.config, node_id, address, self._rng, self._clock.now(),
                                      delegate=self.delegate, meta=self._meta)
        self._membership.observer = self._on_member_change
        self._membership.on_conflict = self._on_conflict
        self._conflict_warnings = RateLimiter(_CONFLICT_WARNING_INTERVAL_S)
        self._refusal_warnings = RateLimiter(_REFUSAL_WARNING_INTERVAL_S)
        self.stats.protocol = self._membership.stats
        self._arm()

    async def join(self, seeds: list[Address]) -> int:
        """Contact ``seeds`` by push-pull (the protocol retries with exponential backoff); return how many answered.

        Raises `NodeIdConflictError` if a seed answered that our node id is alive at another address, else
        `JoinError` if every attempt failed; its message gives each seed's last failure (timeout, refused
        connection, cluster key mismatch). A key mismatch with every seed fails the join at once.
        """
        membership = self._running()
        seeds = list(seeds)
        failures: dict[Address, BaseException] = {}
        self._join_failures = failures
        try:
            self._dispatch(membership.join(seeds, self._clock.now()))
            self._arm()
            status = await self._wait_join()
        finally:
            if self._join_failures is failures:
                self._join_failures = None
        if status.conflict is not None:
            raise NodeIdConflictError(membership.id, status.conflict, seeds, status.attempts)
        if not status.done or status.failed:
            raise JoinError(seeds, status.attempts, {a: failure_reason(a, e) for a, e in failures.items()})
        return status.contacted

    async def leave(self, timeout_s: float) -> None:
        """Announce that we leave, and keep gossiping until the news has been sent out (or ``timeout_s`` passed)."""
        membership = self._running()
        if membership.has_left:
            return
        peers = membership.num_alive() - 1
        self._dispatch(membership.leave(self._clock.now()))
        self._arm()
        if peers <= 0 or timeout_s <= 0:
            return
        # The Left message is retransmitted this many times, gossip_nodes at a time, once per gossip interval.
        rounds = math.ceil(retransmit_limit(self.config.retransmit_mult, peers + 1) / max(1, self.config.gossip_nodes))
        await asyncio.sleep(min(timeout_s, (rounds + 1) * self.config.gossip_interval_s))

    async def shutdown(self) -> None:
        """Stop timers and tasks and close the transport (no goodbye: call `leave` first for a graceful exit)."""
        if self._stopped:
            return
        self._stopped = True
        if self._timer is not None:
            self._timer.cancel()
        current = asyncio.current_task()
        pending = [t for t in self._tasks if t is not current]
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
        await self.transport.close()
        self._changed.set()

    async def __aenter__(self) -> Memberlist:
        await self.start()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.shutdown()

    # -- queries ---------------------------------------------------------------------------------------------------

    @property
    def local_member(self) -> Member:
        return self._running().local_member

    @property
    def membership(self) -> Membership:
        """The state machine itself, for inspection (do not drive it directly while the memberlist runs)."""
        return self._running()

    def members(self) -> list[Member]:
        """Every known member including ourselves, dead and left ones too until reaped."""
        return self._running().members()

    def alive_members(self) -> list[Member]:
        """Alive or suspected members, ourselves included."""
        return self._running().alive_members()

    def member(self, member_id: str) -> Member | None:
        return self._running().member(member_id)

    def update_meta(self, meta: bytes) -> None:
        """Publish new metadata for ourselves (spreads by gossip with a new incarnation)."""
        self._running().update_meta(meta, self._clock.now())
        self._arm()

    async def wait_until(self, predicate: Callable[[], bool], timeout_s: float) -> None:
        """Return once ``predicate()`` holds; `TimeoutError` after ``timeout_s``.

        Event-driven: the predicate is re-evaluated after every member change and every input (datagram, stream
        reply), never on a polling interval.
        """
        async with asyncio.timeout(timeout_s):
            while not predicate():
                if self._stopped:
                    raise NotRunningError("memberlist stopped while waiting")
                self._changed.clear()
                await self._changed.wait()

    # -- application channel ---------------------------------------------------------------------------------------

    def send_to(self, member_id: str, payload: bytes) -> None:
        """Best-effort datagram to a live member; its delegate gets ``notify_message(payload, our_id)``.

        Raises `UnknownMemberError` for an unknown or gone member, `PacketTooLargeError` if it cannot fit a packet.
        """
        packet = self._running().app_message(member_id, payload)
        self.stats.app_messages_out += 1
        self._send(packet)

    async def request(self, member_id: str, payload: bytes, timeout_s: float) -> bytes:
        """Ask a live member's ``delegate.handle_request`` over a stream and return its answer.

        Raises `PeerTimeoutError`, `PeerUnreachableError`/`TransportError`, `AppRequestError` (the handler raised),
        `UnknownMemberError`, or `PacketDecodeError` for a malformed reply.
        """
        address, data = self._running().app_request(member_id, payload)
        self.stats.app_requests_out += 1
        self.stats.streams_out += 1
        raw = await self.transport.request(address, data, timeout_s)
        response = decode_app_response(raw, self.config.max_stream_bytes)
        if response.error:
            raise AppRequestError(member_id, response.error)
        return response.payload

    # -- driving the state machine ---------------------------------------------------------------------------------

    def _running(self) -> Membership:
        if self._membership is None or self._stopped:
            raise NotRunningError("memberlist is not running (call start() or use it as an async context manager)")
        return self._membership

    def _arm(self) -> None:
        """(Re)schedule the single protocol timer at the state machine's next deadline."""
        if self._stopped or self._membership is None:
            return
        if self._timer is not None:
            self._timer.cancel()
        delay = max(0.0, self._membership.next_deadline() - self._clock.now())
        self._timer = asyncio.get_running_loop().call_later(delay, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        if self._stopped or self._membership is None:
            return
        try:
            self._dispatch(self._membership.tick(self._clock.now()))
        except Exception as exc:
            # A bug in a tick must not silently stop failure detection: count it, report it, keep the timer going.
            self._failed("tick", exc)
        self._arm()

    def _dispatch(self, outgoing: list[Outgoing]) -> None:
        for item in outgoing:
            if isinstance(item, Packet):
                self._send(item)
            elif isinstance(item, StreamRequest):
                self._spawn(self._stream(item))

    def _send(self, packet: Packet) -> None:
        self.stats.packets_out += 1
        self.stats.bytes_out += len(packet.data)
        self.transport.send_packet(packet.address, packet.data)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        """A stream task handles the network's errors itself: whatever escapes it is a bug, reported (and so
        retrieved: asyncio never prints "Task exception was never retrieved")."""
        self._tasks.discard(task)
        if (exc := retrieve_exception(task)) is not None:
            self._failed("task", exc)

    def _failed(self, what: str, exc: BaseException) -> None:
        """Counts an unexpected failure and hands it to `on_error`, or logs it if there is no hook: once either way."""
        self.stats.dropped[f"{what}_error"] += 1
        if self.on_error is None:
            log.error("membership %s failed: %s: %s", what, type(exc).__name__, exc, exc_info=exc)
            return
        try:
            self.on_error(what, exc)
        except Exception:  # a broken hook must not take the timer or the stream server down with it
            log.exception("the on_error hook failed")

    async def _stream(self, request: StreamRequest) -> None:
        self.stats.streams_out += 1
        reply: bytes | None = None
        failure: BaseException | None = None
        try:
            reply = await self.transport.request(request.address, request.data, request.timeout_s)
        except PeerTimeoutError as exc:
            self.stats.stream_failures["timeout"] += 1
            failure = exc
        except TransportError as exc:
            self.stats.stream_failures[type(exc).__name__] += 1
            failure = exc
        except (GossipError, OSError) as exc:
            self.stats.stream_failures[type(exc).__name__] += 1
            failure = exc
        if self._stopped or self._membership is None:
            return
        if failure is not None and self._join_failures is not None:
            self._join_failures[request.address] = failure  # what a failed join's error will say about this seed
        self._membership.stream_response(request.request_id, reply, self._clock.now(),
                                         refused=isinstance(failure, KeyMismatchError))
        self._arm()
        self._changed.set()

    def _on_packet(self, data: bytes, sender: Address) -> None:
        if self._stopped or self._membership is None:
            return
        self.stats.packets_in += 1
        self.stats.bytes_in += len(data)
        try:
            outgoing = self._membership.receive(data, sender, self._clock.now())
        except PacketDecodeError as exc:
            self.stats.dropped[exc.reason] += 1
            self._changed.set()
            return
        except Exception as exc:  # a bug (the delegate's notify_message, or the protocol's): hear of it, keep going
            self._failed("packet", exc)
            outgoing = []
        self._dispatch(outgoing)
        self._arm()
        self._changed.set()

    async def _on_request(self, data: bytes, sender: Address) -> bytes:
        membership = self._running()
        self.stats.streams_in += 1
        try:
            reply = membership.receive_stream(data, sender, self._clock.now())
        except PacketDecodeError as exc:
            self.stats.dropped[exc.reason] += 1
            raise
        finally:
            self._arm()
        if reply.app_request is not None:
            self.stats.app_requests_in += 1
            request = reply.app_request
            try:
                result = await self.delegate.handle_request(request.payload, request.source)
            except asyncio.CancelledError:
                raise
            except RequestRefusedError as exc:
                return self._refused(request.source, str(exc))
            except GossipError as exc:
                return self._refused(request.source, f"{type(exc).__name__}: {exc}")
            except Exception as exc:  # a bug in the delegate: the requester still gets an answer, and we hear of it
                self._failed("delegate", exc)
                return encode_app_error(f"{type(exc).__name__}: {exc}"[:_MAX_ERROR_CHARS])
            return encode_app_response(result)
        if reply.reply is None:
            raise StreamDeclinedError("no reply for this stream message")
        return reply.reply

    def _refused(self, requester: str, reason: str) -> bytes:
        """The delegate refused a request on purpose (bad input from the peer, or it cannot serve it now): no bug
        here, so counted and warned about at most once a minute per requester; the requester gets the reason."""
        reason = reason[:_MAX_ERROR_CHARS]
        self.stats.dropped["request_refused"] += 1
        if self._refusal_warnings.allow(requester, self._clock.now()):
            more = self._refusal_warnings.suppressed(requester)
            me = self._membership.id if self._membership is not None else "?"
            log.warning("%s: refused an app request from %s: %s%s", me, requester, reason,
                        f" ({more} more since the last warning)" if more else "")
        return encode_app_error(reason)

    def _on_member_change(self, old: Member | None, new: Member) -> None:
        self._changed.set()
        for listener in list(self.member_listeners):
            try:
                listener(old, new)
            except Exception as exc:  # a listener's bug must not break membership; it is heard of once
                self._failed("listener", exc)
        if old is None or old.status is not new.status:  # what an operator reads a partition or a crash from
            was = "new" if old is None else old.status.name.lower()
            me = self._membership.id if self._membership is not None else "?"
            log.info("%s: member %s is %s (incarnation %d, was %s)", me, new.id, new.status.name.lower(),
                     new.incarnation, was)

    def _on_conflict(self, claim: ConflictingClaim) -> None:
        """A refused claim to a node id alive elsewhere (already counted as ``id_conflict``): a WARNING, at most one
        a minute per id, claimant and kind, since the same gossip repeats it every round."""
        key = (claim.node, claim.claimant, claim.kind)
        if not self._conflict_warnings.allow(key, self._clock.now()):
            return
        more = self._conflict_warnings.suppressed(key)
        me = self._membership.id if self._membership is not None else "?"
        log.warning("%s: %s%s", me, claim.describe(), f" ({more} more since the last warning)" if more else "")

    async def _wait_join(self) -> JoinStatus:
        membership = self._running()
        while True:
            status = membership.join_status
            if status is None or status.done or status.failed:
                return status or JoinStatus(done=True, failed=False, contacted=0, attempts=0)
            self._changed.clear()
            await self._changed.wait()
            if self._stopped:
                raise NotRunningError("memberlist stopped while joining")

    def __repr__(self) -> str:
        name = self._membership.id if self._membership is not None else self._node_id or "?"
        return f"Memberlist({name!r}, running={self._membership is not None and not self._stopped})"

