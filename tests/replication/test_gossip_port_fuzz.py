"""Issue 12 for gossip: whatever reaches a node's gossip port, it changes no key, kills no task, and is counted.

Two `Node`s with replication on loopback (as in test_runtime_loopback), plaintext or sealed with a cluster key. The
peer's real datagrams and stream requests are captured while both write; once the two have converged, the node is
sent, kind by kind: random datagrams, truncated and bit-flipped copies of the captured ones, the captured ones
replayed, oversized datagrams, datagrams sealed with another cluster's key (and, to the keyed node, plaintext),
well-formed gossip carrying hostile replication payloads (empty, overlong and non-UTF-8 keys, unknown types,
undecodable or mistyped deltas), and on TCP: garbage, oversized, truncated and foreign-key frames, replayed requests,
hostile app requests, more connections than the limit. Then: no unhandled task exception and nothing logged at ERROR,
the keyspace as it was, every datagram kind counted as dropped under a reason (transport, membership or replication
counters), and the node still replicates to its peer and back.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import random
import socket
import struct
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import msgpack
import pytest

from rumor.crdt import ORSet, PNCounter, encode
from rumor.gossip.clock import Address
from rumor.gossip.config import Config
from rumor.gossip.delegate import Delegate
from rumor.gossip.memberlist import Memberlist
from rumor.gossip.messages import AppMessage, AppRequest
from rumor.gossip.messages import encode as encode_message
from rumor.gossip.security import CONTEXT_PACKET, CONTEXT_STREAM, Keyring
from rumor.gossip.transport_asyncio import AsyncioTransport
from rumor.server.config import ServerConfig
from rumor.server.consistency import Consistency, Level
from rumor.server.node import Node
from rumor.server.replication import ReplicationConfig
from rumor.server.replication.runtime import GossipReplication
from rumor.server.replication.wire import Kind, pack, pack_push
from rumor.server.updates import Increment, MapChange, RegisterWrite, SetChange

pytestmark = pytest.mark.integration

GOSSIP = Config.local(gossip_interval_s=0.05)
KEY = bytes(range(32))
OTHER_KEY = bytes(range(1, 33))
SEED = 12
WAIT_S = 10.0


class RecordingTransport(AsyncioTransport):
    """An AsyncioTransport that keeps (plaintext) copies of the datagrams and stream requests it sends."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.recording = True
        self.packets: list[bytes] = []
        self.requests: list[bytes] = []

    def send_packet(self, addr: Address, data: bytes) -> None:
        if self.recording:
            self.packets.append(data)
        super().send_packet(addr, data)

    async def request(self, addr: Address, data: bytes, timeout_s: float) -> bytes:
        if self.recording:
            self.requests.append(data)
        return await super().request(addr, data, timeout_s)


def factory(keyring: Keyring | None, made: dict[str, AsyncioTransport]) -> Callable[[Delegate, str], Memberlist]:
    def make(delegate: Delegate, node_id: str) -> Memberlist:
        cls = RecordingTransport if node_id == "p" else AsyncioTransport
        transport = cls(("127.0.0.1", 0), keyring, GOSSIP.max_packet_bytes, GOSSIP.max_stream_bytes,
                        stream_timeout_s=GOSSIP.stream_timeout_s)
        made[node_id] = transport
        return Memberlist(GOSSIP, node_id, transport, delegate=delegate)

    return make


@asynccontextmanager
async def pair(keyed: bool) -> AsyncIterator[tuple[Node, Node, AsyncioTransport, RecordingTransport]]:
    """The target "t" and its peer "p" (whose transport records what it sends), joined."""
    made: dict[str, AsyncioTransport] = {}
    async with AsyncExitStack() as stack:
        nodes = []
        seeds: tuple[Address, ...] = ()
        for name in ("t", "p"):
            keyring = Keyring(KEY) if keyed else None
            replication = GossipReplication(ReplicationConfig(push_interval_s=0.05, sync_interval_s=0.3, seeds=seeds),
                                      factory(keyring, made))
            nodes.append(await stack.enter_async_context(
                Node(ServerConfig(in_memory=True, node_id=name), replication=replication)))
            seeds = seeds or (made["t"].local_address,)
        target, peer = nodes
        await wait_for(lambda: target.replication.cluster_size() == 2 and peer.replication.cluster_size() == 2)
        recorder = made["p"]
        assert isinstance(recorder, RecordingTransport)
        yield target, peer, made["t"], recorder


async def wait_for(predicate: Callable[[], bool], timeout_s: float = WAIT_S) -> None:
    async with asyncio.timeout(timeout_s):
        while not predicate():
            await asyncio.sleep(0.02)


def snapshot(node: Node) -> dict[str, bytes]:
    keyspace = node.keyspace
    return {key: encode(keyspace.entry(key).state) for key in keyspace}  # type: ignore[union-attr]


def drops(node: Node, transport: AsyncioTransport) -> Counter[str]:
    """Every refusal counter of the node's gossip side, prefixed with where it was counted."""
    memberlist = node.replication.memberlist  # type: ignore[attr-defined]
    core = node.replication.core  # type: ignore[attr-defined]
    counted: Counter[str] = Counter()
    counted.update({f"transport:{k}": n for k, n in transport.stats.dropped.items()})
    counted.update({f"membership:{k}": n for k, n in memberlist.stats.dropped.items()})
    counted.update({f"replication:{k}": n for k, n in core.stats.rejected.items()})
    return counted


class Attacker:
    """Sends datagrams and stream frames to the target's gossip port, and measures what each batch was counted as."""

    def __init__(self, target: Node, transport: AsyncioTransport, keyring: Keyring | None) -> None:
        self.target = target
        self.transport = transport
        self.keyring = keyring
        self.address = transport.local_address
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.udp.bind(("127.0.0.1", 0))
        self.udp.setblocking(False)

    def seal(self, data: bytes, context: bytes, key: bytes | None = None) -> bytes:
        if key is not None:
            return Keyring(key).seal(data, context)
        return self.keyring.seal(data, context) if self.keyring is not None else data

    async def datagrams(self, wires: list[bytes]) -> Counter[str]:
        """Sends raw datagrams; returns the drop counters' growth once the transport has received them all."""
        before, received = drops(self.target, self.transport), self.transport.stats.packets_received
        for wire in wires:
            self.udp.sendto(wire, self.address)
            await asyncio.sleep(0)
        await wait_for(lambda: self.transport.stats.packets_received >= received + len(wires))
        await asyncio.sleep(0.02)
        return drops(self.target, self.transport) - before

    async def frame(self, data: bytes, *, declared: int | None = None, close_early: bool = False) -> bytes | None:
        """One stream frame (`declared` overrides its length prefix); the response frame's body, or None."""
        reader, writer = await asyncio.open_connection(*self.address)
        try:
            writer.write(struct.pack(">I", len(data) if declared is None else declared) + data)
            await writer.drain()
            if close_early:
                return None
            async with asyncio.timeout(GOSSIP.stream_timeout_s + 2):
                header = await reader.read(4)
                if len(header) < 4:
                    return None
                return await reader.readexactly(struct.unpack(">I", header)[0])
        except (OSError, asyncio.IncompleteReadError):
            return None
        finally:
            writer.close()

    async def frames(self, frames: list[bytes], **kwargs: Any) -> Counter[str]:
        before = drops(self.target, self.transport)
        for data in frames:
            await self.frame(data, **kwargs)
        await asyncio.sleep(0.05)
        return drops(self.target, self.transport) - before


def hostile_payloads(existing_key: str, existing_type: str) -> list[tuple[str, bytes]]:
    """Replication payloads that gossip delivers (well-formed app messages) but that must not reach the keyspace."""
    counter = encode(PNCounter().increment("m", 1))
    a_set = ORSet()
    a_set.merge(a_set.add("m", "x"))

    def push(seq: int, key: Any, type_name: Any, delta: Any) -> bytes:
        group = msgpack.packb(["mallory", 1, seq, [[key, type_name, delta]]], use_bin_type=True,
                              unicode_errors="surrogatepass")
        return pack_push([group])

    other_type = "set" if existing_type != "set" else "counter"
    other_delta = encode(a_set) if other_type == "set" else counter
    return [
        ("empty key", push(1, "", "counter", counter)),
        ("1025-byte key", push(2, "k" * 1025, "counter", counter)),
        ("key with a lone surrogate", push(3, "bad\ud800", "counter", counter)),
        ("unknown type", push(4, "fuzz-a", "bogus", counter)),
        ("undecodable delta", push(5, "fuzz-b", "counter", b"\x00\x01garbage")),
        ("delta of another type", push(6, "fuzz-c", "set", counter)),
        ("type conflict with an existing key", push(7, existing_key, other_type, other_delta)),
        ("push that is not msgpack", bytes([Kind.PUSH]) + b"\xc1"),
        ("unknown replication kind", bytes([0x7F]) + msgpack.packb({})),
        ("done with a malformed vector", pack(Kind.DONE, {"v": [["x", "not an int", 1]]})),
    ]


def flip(data: bytes, rng: random.Random) -> bytes:
    out = bytearray(data)
    bit = rng.randrange(len(out) * 8)
    out[bit // 8] ^= 1 << (bit % 8)
    return bytes(out)


@pytest.mark.parametrize("keyed", [False, True], ids=["plaintext", "cluster-key"])
async def test_garbage_at_the_gossip_port_changes_nothing_and_is_counted(keyed: bool,
                                                                         caplog: pytest.LogCaptureFixture) -> None:
    rng = random.Random(SEED)
    loop_errors: list[str] = []
    asyncio.get_running_loop().set_exception_handler(lambda _loop, context: loop_errors.append(
        f"{context.get('message')}: {context.get('exception')!r}"))
    async with pair(keyed) as (target, peer, transport, recorder):
        # state on both sides, and the traffic it makes: pushes, a REPL (w=all), anti-entropy sessions
        await peer.update("visits", Increment(amount=3))
        await peer.update("tags", SetChange(add=("a", "b")), consistency=Consistency(Level.ALL, 2_000))
        await peer.update("profile", MapChange(set=(("name", "p"),)))
        await target.update("note", RegisterWrite(value="t"))
        await wait_for(lambda: snapshot(target) == snapshot(peer) and len(snapshot(target)) == 4)
        await asyncio.sleep(0.5)  # at least one anti-entropy round trip (sync_interval_s 0.3) is captured
        await wait_for(lambda: snapshot(target) == snapshot(peer))
        recorder.recording = False
        captured = list(dict.fromkeys(recorder.packets))[:40]
        requests = list(dict.fromkeys(recorder.requests))[:20]
        assert captured and requests, "nothing was captured from the peer"
        before = snapshot(target)
        attacker = Attacker(target, transport, Keyring(KEY) if keyed else None)
        seal = attacker.seal
        counted: dict[str, Counter[str]] = {}
        sent: dict[str, int] = {}

        async def datagrams(kind: str, wires: list[bytes]) -> None:
            counted[kind], sent[kind] = await attacker.datagrams(wires), len(wires)

        await datagrams("random bytes", [rng.randbytes(rng.randint(1, GOSSIP.max_packet_bytes)) for _ in range(40)])
        await datagrams("truncated", [seal(p[: rng.randrange(len(p))], CONTEXT_PACKET) for p in captured])
        await datagrams("oversized", [seal(rng.randbytes(n), CONTEXT_PACKET)
                                      for n in (GOSSIP.max_packet_bytes + 1, 2_000, 9_000, 30_000, 65_000)])
        await datagrams("other cluster's key", [seal(p, CONTEXT_PACKET, OTHER_KEY) for p in captured])
        if keyed:
            await datagrams("plaintext to a keyed node", captured[:20])
            await datagrams("bit-flipped", [flip(seal(p, CONTEXT_PACKET), rng) for p in captured])
            await datagrams("stream frame as a datagram", [seal(p, CONTEXT_STREAM) for p in captured[:10]])
        hostile = hostile_payloads("visits", "counter")
        await datagrams("hostile replication payloads",
                        [seal(encode_message(AppMessage("p", payload)), CONTEXT_PACKET) for _, payload in hostile])
        await attacker.datagrams([seal(p, CONTEXT_PACKET) for p in captured])  # replayed: nothing to count, no change

        stream_counted = {
            "garbage frames": await attacker.frames([seal(rng.randbytes(rng.randint(1, 3000)), CONTEXT_STREAM)
                                                     for _ in range(10)]),
            "other cluster's key": await attacker.frames([seal(r, CONTEXT_STREAM, OTHER_KEY) for r in requests[:5]]),
            "oversized frames": await attacker.frames([b"x" * 16], declared=GOSSIP.max_stream_bytes + 1_000),
        }
        await attacker.frames([seal(r, CONTEXT_STREAM)[: rng.randrange(1, 40)] for r in requests[:5]],
                              declared=4_000, close_early=True)  # truncated frames, then a hang-up
        for partial in (b"", b"\x00", b"\x00\x00\x01"):  # hang-ups inside the length prefix
            _, writer = await asyncio.open_connection(*transport.local_address)
            writer.write(partial)
            writer.close()
        for request in requests:  # replayed stream requests: answered, and nothing changes
            await attacker.frame(seal(request, CONTEXT_STREAM))
        for _, payload in hostile:  # the same payloads as app requests (REPL goes there too)
            await attacker.frame(seal(encode_message(AppRequest("p", payload)), CONTEXT_STREAM))
        repl = [pack(Kind.REPL, {"d": encode(PNCounter().increment("m", 1)), "k": key, "t": "counter"})
                for key in ("", "k" * 1025)]
        for payload in repl:
            await attacker.frame(seal(encode_message(AppRequest("p", payload)), CONTEXT_STREAM))
        crowd = [await asyncio.open_connection(*transport.local_address) for _ in range(80)]
        await asyncio.sleep(0.1)
        for _, writer in crowd:
            writer.close()
        attacker.udp.close()

        await asyncio.sleep(0.2)
        gc.collect()
        await asyncio.sleep(0)
        problems: dict[str, Any] = {}
        errors = [f"{r.name}: {r.getMessage()}"[:300] for r in caplog.records if r.levelno >= logging.ERROR]
        if loop_errors or errors:
            problems["unhandled exceptions or ERROR logs"] = loop_errors + errors
        after = snapshot(target)
        changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
        if changed:
            problems["keys changed"] = [shown(k) for k in changed]
        uncounted = {kind: f"{sum(counted[kind].values())} of {sent[kind]} counted: {dict(counted[kind])}"
                     for kind in counted if sum(counted[kind].values()) < sent[kind]}
        if uncounted:
            problems["datagrams not counted as dropped"] = uncounted
        if not all(sum(c.values()) > 0 for c in stream_counted.values()):
            problems["stream frames not counted"] = {k: dict(c) for k, c in stream_counted.items()}
        if trouble := background_trouble(target):
            problems["background work"] = trouble

        # still a working member: replicates both ways, and acknowledges a write at w=all
        await target.update("after", Increment(amount=1))
        await peer.update("back", Increment(amount=1))
        try:
            await wait_for(lambda: peer.keyspace.item("after") is not None and target.keyspace.item("back") is not None)
            acks = (await target.update("after", Increment(amount=1), consistency=Consistency(Level.ALL, 2_000))).acks
        except TimeoutError:
            acks = 0
        if acks != 2:
            problems["replication afterwards"] = f"w=all acknowledged by {acks} of 2" if acks else "timed out"
        assert not problems, "\n".join(f"{what}: {detail}" for what, detail in problems.items())


def shown(key: str) -> str:
    return repr(key) if len(key) <= 40 else f"{key[:20]!r}... ({len(key.encode('utf-8', 'surrogatepass'))} bytes)"


def background_trouble(node: Node) -> dict[str, str]:
    """Failed or dead background work, found defensively: the node's `failing()` and supervisor counts where they
    exist, else the replication loop task and the memberlist's protocol timer."""
    trouble: dict[str, str] = {}
    failing = getattr(node, "failing", None)
    if callable(failing):
        trouble.update(failing())
    supervisor = getattr(node, "supervisor", None)
    counts = getattr(supervisor, "failure_counts", None)
    if callable(counts):
        trouble.update({f"{name} failures": str(n) for name, n in counts().items() if n})
    loop_task = getattr(node.replication, "_loop_task", None)
    if isinstance(loop_task, asyncio.Task) and loop_task.done():
        trouble["replication loop"] = "ended"
    memberlist = node.replication.memberlist  # type: ignore[attr-defined]
    if getattr(memberlist, "_timer", True) is None:
        trouble["membership timer"] = "not armed"
    return trouble
