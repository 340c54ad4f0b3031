"""The real `Transport`: UDP datagrams and TCP request/response streams on one port, optionally sealed by a `Keyring`.

Like memberlist's NetTransport, one port number serves both protocols so a member is one address. Everything that can
be refused is refused here, before protocol code sees it, and counted in `TransportStats.dropped` by reason:
oversized datagrams or frames, plaintext when a keyring is configured, sealed data when none is, undecryptable data,
connections over the limit. Streams carry one request frame and one response frame per exchange; a frame is a 4-byte
big-endian length then the (possibly sealed) body, whose first plaintext byte of a response says ok or error.

A wrong cluster key must be loud on both sides, not a silent timeout: a stream request that fails to open is
answered (sealed with our key, if we have one) with a "cannot decrypt" status before the connection closes, so the
requester raises `KeyMismatchError` at once, whichever side holds which key; and every refusal of that kind is
logged as a WARNING naming the peer, at most once a minute per peer (`DECRYPT_WARNING_INTERVAL_S`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import struct
import time

from rumor.gossip.address import format_address
from rumor.gossip.clock import Address
from rumor.gossip.rate_limit import RateLimiter
from rumor.gossip.security import CONTEXT_PACKET, CONTEXT_STREAM, SEAL_OVERHEAD, DecryptError, Keyring, is_sealed
from rumor.gossip.transport import (
    STREAM_LENGTH_PREFIX_BYTES,
    FrameTooLargeError,
    KeyMismatchError,
    PacketHandler,
    PeerTimeoutError,
    PeerUnreachableError,
    RemoteHandlerError,
    RequestHandler,
    TransportClosedError,
    TransportError,
    TransportStats,
)

log = logging.getLogger(__name__)

_LENGTH = struct.Struct(">I")
_STATUS_OK = 0
_STATUS_ERROR = 1
_STATUS_UNDECRYPTABLE = 2  # the request did not open with our keys (an older peer reads it as an error)
DECRYPT_WARNING_INTERVAL_S = 60.0
# What each refusal to open says to an operator, after "gossip <packets|streams> from <peer>".
_UNSEAL_PROBLEMS = {
    "plaintext_refused": "are not encrypted but this node has a cluster key: the peer runs without one",
    "sealed_refused": "are encrypted but this node has no cluster key: the peer runs with one",
}
_UDP_RECV_BUFFER_BYTES = 2 * 1024 * 1024
_MAX_ERROR_DETAIL = 200


class BindError(TransportError):
    """The gossip address cannot be bound (in use, not an address of this host, no permission); ``reason`` is the
    operating system's word for it, e.g. "address already in use"."""

    def __init__(self, addr: Address, reason: str) -> None:
        super().__init__(addr, f"cannot listen: {reason}")
        self.reason = reason


class _DatagramEndpoint(asyncio.DatagramProtocol):
    def __init__(self, owner: AsyncioTransport) -> None:
        self._owner = owner

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        self._owner._on_datagram(data, (str(addr[0]), int(addr[1])))

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable and friends: a lost packet, which the protocol already tolerates.
        self._owner.stats.send_errors += 1


class AsyncioTransport:
    """UDP + TCP on ``bind`` (port 0 picks a free port shared by both). Loopback IPv4 and IPv6 both work.

    ``max_packet_bytes`` bounds a datagram's plaintext (the protocol's packet budget); ``max_stream_bytes`` bounds a
    stream frame's plaintext. ``stream_timeout_s`` bounds how long an inbound connection may take to deliver a frame
    and how long it may sit idle, so a silent peer cannot hold one of the ``max_connections`` slots forever.
    """

    def __init__(
        self,
        bind: Address,
        keyring: Keyring | None = None,
        max_packet_bytes: int = 1400,
        max_stream_bytes: int = 4 * 1024 * 1024,
        *,
        max_connections: int = 64,
        stream_timeout_s: float = 10.0,
    ) -> None:
        if max_packet_bytes <= 0 or max_stream_bytes <= 0 or max_connections <= 0 or stream_timeout_s <= 0:
            raise ValueError("transport limits must be positive")
        self._bind = bind
        self.keyring = keyring
        self.max_packet_bytes = max_packet_bytes
        self.max_stream_bytes = max_stream_bytes
        self.max_connections = max_connections
        self.stream_timeout_s = stream_timeout_s
        self.stats = TransportStats()
        self._overhead = SEAL_OVERHEAD if keyring is not None else 0
        self._address: Address | None = None
        self._udp: asyncio.DatagramTransport | None = None
        self._server: asyncio.Server | None = None
        self._on_packet: PacketHandler | None = None
        self._on_request: RequestHandler | None = None
        self._inbound: set[asyncio.StreamWriter] = set()
        self._handlers: set[asyncio.Task[None]] = set()
        self._closed = False
        self._warnings = RateLimiter(DECRYPT_WARNING_INTERVAL_S)

    @property
    def local_address(self) -> Address:
        """The bound address; before `start` the requested bind address (whose port may still be 0)."""
        return self._address if self._address is not None else self._bind

    @property
    def running(self) -> bool:
        return self._address is not None and not self._closed

    async def start(self, on_packet: PacketHandler, on_request: RequestHandler) -> None:
        if self._address is not None or self._closed:
            raise TransportClosedError("a transport starts once")
        self._on_packet, self._on_request = on_packet, on_request
        loop = asyncio.get_running_loop()
        host, port = self._bind
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        # With port 0 the kernel picks a TCP port that may be taken for UDP: retry a few times.
        for attempt in range(8):
            try:
                server = await asyncio.start_server(self._serve, host, port, family=family, reuse_address=True)
            except OSError as exc:
                raise BindError(self._bind, _os_reason(exc)) from exc
            bound = server.sockets[0].getsockname()
            try:
                udp, _ = await loop.create_datagram_endpoint(
                    lambda: _DatagramEndpoint(self), local_addr=(host, bound[1]), family=family
                )
            except OSError as exc:
                server.close()
                await server.wait_closed()
                if port != 0 or attempt == 7:
                    raise BindError((host, int(bound[1])), _os_reason(exc)) from exc
                continue
            break
        self._server, self._udp = server, udp
        sock = udp.get_extra_info("socket")
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _UDP_RECV_BUFFER_BYTES)
        self._address = (str(bound[0]), int(bound[1]))

    # ---------------------------------------------------------------- datagrams

    def send_packet(self, addr: Address, data: bytes) -> None:
        if self._udp is None or self._closed:
            self.stats.drop("send_while_closed")
            return
        if len(data) > self.max_packet_bytes:
            # A protocol bug, not a network event; counted rather than raised so a bad payload cannot kill a loop.
            self.stats.drop("send_oversize")
            return
        wire = self.keyring.seal(data, CONTEXT_PACKET) if self.keyring is not None else data
        try:
            self._udp.sendto(wire, addr)
        except (OSError, ValueError, TypeError):
            self.stats.send_errors += 1
            return
        self.stats.packets_sent += 1
        self.stats.bytes_sent += len(wire)

    def _on_datagram(self, wire: bytes, addr: Address) -> None:
        self.stats.packets_received += 1
        self.stats.bytes_received += len(wire)
        if len(wire) > self.max_packet_bytes + self._overhead:
            self.stats.drop("oversize")
            return
        data = self._unseal(wire, CONTEXT_PACKET, addr)
        if data is None or self._on_packet is None:
            return
        try:
            self._on_packet(data, addr)
        except Exception:
            self.stats.drop("handler_error")
            log.exception("packet handler failed on a datagram from %s", format_address(addr))

    def _unseal(self, wire: bytes, context: bytes, addr: Address) -> bytes | None:
        """Open ``wire`` according to this node's policy, or count (and report) why not and return None."""
        plain, refusal = self._open(wire, context)
        if not refusal:
            return plain
        self.stats.drop(refusal)
        if refusal != "empty":
            self._warn_undecryptable(refusal, context, addr)
        return None

    def _open(self, wire: bytes, context: bytes) -> tuple[bytes, str]:
        """``(plaintext, "")``, or ``(b"", why it cannot be opened)`` with a drop reason; never raises."""
        if not wire:
            return b"", "empty"
        if self.keyring is None:
            return (b"", "sealed_refused") if is_sealed(wire) else (wire, "")
        if not is_sealed(wire):
            return b"", "plaintext_refused"
        try:
            return self.keyring.open(wire, context), ""
        except DecryptError as exc:
            return b"", f"decrypt_{exc.reason}"

    def _warn_undecryptable(self, reason: str, context: bytes, addr: Address) -> None:
        stream = context == CONTEXT_STREAM
        peer = addr[0] if stream else format_address(addr)  # a stream's source port is ephemeral: key by host
        if not self._warnings.allow((stream, peer), time.monotonic()):
            return
        more = self._warnings.suppressed((stream, peer))
        problem = _UNSEAL_PROBLEMS.get(reason, f"fail to decrypt ({reason.removeprefix('decrypt_')}): "
                                               "the peer's cluster key differs from ours")
        log.warning("gossip %s from %s %s%s", "streams" if stream else "packets", peer, problem,
                    f" ({more} more since the last warning)" if more else "")

    # ---------------------------------------------------------------- streams (client side)

    async def request(self, addr: Address, data: bytes, timeout_s: float) -> bytes:
        if not self.running:
            raise TransportClosedError()
        if len(data) > self.max_stream_bytes:
            raise FrameTooLargeError(addr, len(data), self.max_stream_bytes)
        writer: asyncio.StreamWriter | None = None
        try:
            async with asyncio.timeout(timeout_s):
                try:
                    reader, writer = await asyncio.open_connection(addr[0], addr[1])
                except OSError as exc:
                    raise PeerUnreachableError(addr, f"connect failed: {exc}") from exc
                self.stats.streams_opened += 1
                await self._write_frame(writer, data)
                body = await self._read_frame(reader, addr, self.max_stream_bytes + 1)
        except TimeoutError as exc:
            raise PeerTimeoutError(addr, timeout_s) from exc
        except TransportError:
            raise
        except OSError as exc:  # reset or broken pipe while writing: the peer went away mid-exchange
            raise PeerUnreachableError(addr, f"stream failed: {exc}") from exc
        finally:
            if writer is not None:
                writer.close()
        if body is None:
            raise PeerUnreachableError(addr, "connection closed before a response arrived")
        plain = self._open_response(body, addr)
        if plain[0] == _STATUS_OK:
            return plain[1:]
        if plain[0] == _STATUS_UNDECRYPTABLE:
            raise KeyMismatchError(addr, "request", "the peer could not decrypt our request")
        raise RemoteHandlerError(addr, plain[1:].decode("utf-8", "replace"))

    def _open_response(self, body: bytes, addr: Address) -> bytes:
        """A response's plaintext; `KeyMismatchError` if the keys do not match (counted like any refusal)."""
        plain, refusal = self._open(body, CONTEXT_STREAM)
        if plain:
            return plain
        if refusal in ("", "empty"):
            self.stats.drop("empty")
            raise TransportError(addr, "empty response")
        self.stats.drop(refusal)
        self._warn_undecryptable(refusal, CONTEXT_STREAM, addr)
        if refusal == "plaintext_refused":
            raise KeyMismatchError(addr, "plaintext", "the response is not encrypted but this node has a cluster key")
        if refusal == "sealed_refused":
            raise KeyMismatchError(addr, "sealed", "the response is encrypted but this node has no cluster key")
        why = refusal.removeprefix("decrypt_")
        raise KeyMismatchError(addr, "reply", f"the response failed to decrypt ({why})")

    async def _write_frame(self, writer: asyncio.StreamWriter, payload: bytes) -> None:
        wire = self.keyring.seal(payload, CONTEXT_STREAM) if self.keyring is not None else payload
        writer.write(_LENGTH.pack(len(wire)) + wire)
        await writer.drain()
        self.stats.stream_bytes_sent += STREAM_LENGTH_PREFIX_BYTES + len(wire)

    async def _read_frame(self, reader: asyncio.StreamReader, addr: Address, max_plain: int) -> bytes | None:
        """One frame's (still sealed) body, or None on a clean EOF before the frame began."""
        try:
            header = await reader.readexactly(STREAM_LENGTH_PREFIX_BYTES)
        except asyncio.IncompleteReadError as exc:
            if exc.partial:
                raise PeerUnreachableError(addr, "connection closed inside a frame header") from exc
            return None
        except OSError as exc:
            raise PeerUnreachableError(addr, f"read failed: {exc}") from exc
        (size,) = _LENGTH.unpack(header)
        if size > max_plain + self._overhead:
            self.stats.drop("frame_too_large")
            raise FrameTooLargeError(addr, size, max_plain + self._overhead)
        try:
            body = await reader.readexactly(size)
        except (asyncio.IncompleteReadError, OSError) as exc:
            raise PeerUnreachableError(addr, "connection closed inside a frame") from exc
        self.stats.stream_bytes_received += STREAM_LENGTH_PREFIX_BYTES + size
        return body

    # ---------------------------------------------------------------- streams (server side)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        addr: Address = (str(peer[0]), int(peer[1])) if peer else ("?", 0)
        if self._closed or len(self._inbound) >= self.max_connections:
            self.stats.drop("connection_limit")
            writer.close()
            return
        task = asyncio.current_task()
        self._inbound.add(writer)
        if task is not None:
            self._handlers.add(task)  # type: ignore[arg-type]
        self.stats.streams_accepted += 1
        try:
            while not self._closed:
                try:
                    async with asyncio.timeout(self.stream_timeout_s):
                        body = await self._read_frame(reader, addr, self.max_stream_bytes)
                except (TimeoutError, TransportError):
                    # Timeout, oversized or broken frame: the connection is no longer trustworthy.
                    break
                if body is None:
                    break
                request = self._unseal(body, CONTEXT_STREAM, addr)
                if request is None:
                    if body:  # say so before closing: the requester then reports a key mismatch, not a lost peer
                        await self._write_frame(writer, bytes((_STATUS_UNDECRYPTABLE,)) + b"cannot decrypt the request")
                    break
                response = await self._answer(request, addr)
                if len(response) > self.max_stream_bytes + 1:
                    self.stats.drop("response_too_large")
                    response = bytes((_STATUS_ERROR,)) + b"response exceeds the stream frame limit"
                await self._write_frame(writer, response)
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            self._inbound.discard(writer)
            if task is not None:
                self._handlers.discard(task)  # type: ignore[arg-type]
            writer.close()

    async def _answer(self, request: bytes, addr: Address) -> bytes:
        assert self._on_request is not None
        try:
            result = await self._on_request(request, addr)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.stats.drop("request_handler_error")
            detail = f"{type(exc).__name__}: {exc}"[:_MAX_ERROR_DETAIL]
            return bytes((_STATUS_ERROR,)) + detail.encode("utf-8", "replace")
        return bytes((_STATUS_OK,)) + result

    # ---------------------------------------------------------------- lifecycle

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._udp is not None:
            self._udp.close()
        if self._server is not None:
            self._server.close()
        for writer in list(self._inbound):
            writer.close()
        current = asyncio.current_task()
        pending = [task for task in self._handlers if task is not current]
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
        if self._server is not None:
            with contextlib.suppress(OSError):
                await asyncio.wait_for(self._server.wait_closed(), timeout=1.0)

    async def __aenter__(self) -> AsyncioTransport:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"AsyncioTransport({self._address or self._bind}, sealed={self.keyring is not None})"


def _os_reason(exc: OSError) -> str:
    """The operating system's own words ("address already in use", not "[Errno 98] error while attempting to bind
    on address ..."), lower-cased to continue a sentence."""
    text = os.strerror(exc.errno) if exc.errno else str(exc)  # asyncio's strerror also names the address
    return text[:1].lower() + text[1:]
