"""Garbage in: the decoder raises PacketDecodeError and nothing else, and a membership fed garbage changes nothing."""

import contextlib
import random
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from rumor.gossip.config import Config
from rumor.gossip.errors import PacketDecodeError
from rumor.gossip.member import MemberStatus
from rumor.gossip.membership import Membership
from rumor.gossip.messages import (
    Ack,
    Alive,
    Dead,
    IndirectPing,
    Ping,
    PushPull,
    RemoteState,
    Suspect,
    UserBroadcast,
    decode_packet,
    decode_stream,
    encode,
    encode_compound,
)

VALID = [
    encode(Ping(1, "target", "source")),
    encode(IndirectPing(2, "t", ("10.0.0.2", 7946), "s", True)),
    encode(Ack(3)),
    encode(Suspect("x", 4, "y")),
    encode(Alive("x", 5, ("10.0.0.9", 7946), b"meta")),
    encode(Dead("x", 6, "y")),
    encode(UserBroadcast("s", b"payload")),
    encode(PushPull("s", False, (RemoteState("x", ("h", 1), 1, MemberStatus.ALIVE, b""),), b"app")),
    encode_compound([encode(Ack(1)), encode(Alive("y", 1, ("10.0.0.3", 7946), b"")), encode(Suspect("z", 1, "q"))]),
]


def decode_or_reject(data: bytes) -> None:
    with contextlib.suppress(PacketDecodeError):
        decode_packet(data, 1400)
    with contextlib.suppress(PacketDecodeError):
        decode_stream(data, 1 << 20)


@given(st.binary(max_size=2000))
def test_random_bytes_only_ever_raise_packet_decode_error(data: bytes) -> None:
    decode_or_reject(data)


@given(st.sampled_from(range(len(VALID))), st.lists(st.integers(0, 10**6), min_size=1, max_size=8))
def test_bit_flipped_packets_only_ever_raise_packet_decode_error(index: int, flips: list[int]) -> None:
    data = bytearray(VALID[index])
    for flip in flips:
        bit = flip % (len(data) * 8)
        data[bit // 8] ^= 1 << (bit % 8)
    decode_or_reject(bytes(data))


@given(st.sampled_from(range(len(VALID))), st.integers(0, 400))
def test_truncated_packets_only_ever_raise_packet_decode_error(index: int, cut: int) -> None:
    decode_or_reject(VALID[index][: cut % len(VALID[index])])


def snapshot(m: Membership) -> tuple[Any, ...]:
    return (sorted(m.members(), key=lambda x: x.id), m.awareness_score, m.next_deadline(), len(m._queue),
            m.local_member.incarnation, dict(m.stats.dropped))


@settings(max_examples=60)
@given(st.one_of(
    st.binary(max_size=1500),
    st.tuples(st.sampled_from(range(len(VALID))), st.integers(0, 10**6)).map(
        lambda t: bytes(b ^ (1 << (t[1] % 8)) if i == t[1] % len(VALID[t[0]]) else b
                        for i, b in enumerate(VALID[t[0]]))),
))
def test_a_membership_fed_garbage_changes_nothing(data: bytes) -> None:
    m = Membership(Config.lan(), "me", ("10.0.0.1", 7946), random.Random(1), 0.0)
    m.receive(encode(Alive("peer", 1, ("10.0.0.2", 7946), b"")), ("10.0.0.2", 7946), 0.0)
    before = snapshot(m)
    try:
        m.receive(data, ("10.0.0.66", 7946), 0.5)
    except PacketDecodeError:
        assert snapshot(m) == before
    before = snapshot(m)
    try:
        m.receive_stream(data, ("10.0.0.66", 7946), 0.5)
    except PacketDecodeError:
        assert snapshot(m) == before
