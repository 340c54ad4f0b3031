"""The wire format: deterministic encodings pinned by golden vectors, strict decoding, exact compound sizes."""

import json
from pathlib import Path
from typing import Any

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from rumor.gossip.errors import PacketDecodeError, PacketTooLargeError
from rumor.gossip.member import MemberStatus
from rumor.gossip.messages import (
    MESSAGE_CLASSES,
    Ack,
    Alive,
    AppMessage,
    AppRequest,
    AppResponse,
    Dead,
    IdConflict,
    IndirectPing,
    Left,
    MessageType,
    Nack,
    Ping,
    PushPull,
    RemoteState,
    Suspect,
    UserBroadcast,
    compound_size,
    decode,
    decode_app_response,
    decode_packet,
    decode_stream,
    encode,
    encode_app_error,
    encode_app_response,
    encode_compound,
    encode_within,
)

VECTORS = Path(__file__).resolve().parent.parent / "vectors" / "gossip" / "messages.json"

GOLDEN: dict[str, Any] = {
    "ping": Ping(seq=7, target="node-b", source="node-a"),
    "indirect_ping": IndirectPing(seq=8, target="node-c", target_address=("10.0.0.3", 7946), source="node-a",
                                  nack=True),
    "ack": Ack(seq=7),
    "nack": Nack(seq=8),
    "suspect": Suspect(node="node-c", incarnation=3, source="node-a"),
    "alive": Alive(node="node-c", incarnation=4, address=("10.0.0.3", 7946), meta=b"\x01role=db"),
    "dead": Dead(node="node-c", incarnation=4, source="node-b"),
    "left": Left(node="node-d", incarnation=2),
    "push_pull": PushPull(source="node-a", join=True, states=(
        RemoteState("node-a", ("10.0.0.1", 7946), 1, MemberStatus.ALIVE, b""),
        RemoteState("node-c", ("10.0.0.3", 7946), 4, MemberStatus.SUSPECT, b"m"),
    ), app_state=b"\x00\xff"),
    "user_broadcast": UserBroadcast(source="node-a", payload=b"delta"),
    "app_message": AppMessage(source="node-a", payload=b"hello"),
    "app_request": AppRequest(source="node-a", payload=b"get k"),
    "app_response": AppResponse(payload=b"v", error=""),
    "id_conflict": IdConflict(node="node-a", address=("10.0.0.1", 7946)),
}


def test_message_type_values_are_append_only() -> None:
    assert {t.name: t.value for t in MessageType} == {
        "PING": 1, "INDIRECT_PING": 2, "ACK": 3, "NACK": 4, "SUSPECT": 5, "ALIVE": 6, "DEAD": 7, "LEFT": 8,
        "PUSH_PULL": 9, "COMPOUND": 10, "USER_BROADCAST": 11, "APP_MESSAGE": 12, "APP_REQUEST": 13,
        "APP_RESPONSE": 14, "ID_CONFLICT": 15,
    }
    assert set(MESSAGE_CLASSES) | {MessageType.COMPOUND} == set(MessageType)


def test_golden_vectors_cover_every_message_type() -> None:
    assert {type(m) for m in GOLDEN.values()} == set(MESSAGE_CLASSES.values())


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_golden_vectors(name: str) -> None:
    vectors = json.loads(VECTORS.read_text())
    assert encode(GOLDEN[name]).hex() == vectors[name]
    assert decode(bytes.fromhex(vectors[name])) == GOLDEN[name]


def test_maps_are_encoded_with_sorted_keys() -> None:
    body = msgpack.unpackb(encode(GOLDEN["indirect_ping"])[1:])
    assert list(body) == sorted(body)
    state = msgpack.unpackb(encode(GOLDEN["push_pull"])[1:])["states"][0]
    assert list(state) == sorted(state)


ids = st.text(max_size=20)
addresses = st.tuples(st.text(max_size=30), st.integers(0, 65535))
u63 = st.integers(0, 2**63 - 1)
messages = st.one_of(
    st.builds(Ping, u63, ids, ids), st.builds(IndirectPing, u63, ids, addresses, ids, st.booleans()),
    st.builds(Ack, u63), st.builds(Nack, u63), st.builds(Suspect, ids, u63, ids),
    st.builds(Alive, ids, u63, addresses, st.binary(max_size=50)), st.builds(Dead, ids, u63, ids),
    st.builds(Left, ids, u63),
    st.builds(PushPull, ids, st.booleans(), st.lists(st.builds(
        RemoteState, ids, addresses, u63, st.sampled_from(MemberStatus), st.binary(max_size=10)), max_size=5
    ).map(tuple), st.binary(max_size=50)),
    st.builds(UserBroadcast, ids, st.binary(max_size=300)), st.builds(AppMessage, ids, st.binary(max_size=300)),
    st.builds(AppRequest, ids, st.binary()), st.builds(AppResponse, st.binary(), st.text(max_size=20)),
    st.builds(IdConflict, ids, addresses),
)


@given(messages)
def test_every_message_round_trips(message: Any) -> None:
    data = encode(message)
    assert data[0] == message.TYPE
    assert decode(data) == message
    assert decode_stream(data, 1 << 20) == message
    assert encode(decode(data)) == data


@given(st.lists(messages, min_size=1, max_size=20))
def test_compound_round_trips_and_its_size_is_exact(parts: list[Any]) -> None:
    encoded = [encode(m) for m in parts]
    packet = encode_compound(encoded)
    assert len(packet) == compound_size([len(p) for p in encoded])
    assert decode_packet(packet, len(packet)) == parts


def test_a_single_part_is_sent_without_the_compound_wrapper() -> None:
    assert encode_compound([encode(Ack(1))]) == encode(Ack(1))


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "empty"),
        (b"\xee\x80", "unknown_type"),
        (b"\x03", "bad_msgpack"),
        (b"\x03\x81\xa3seq", "bad_msgpack"),
        (b"\x03\x80", "bad_field"),
        (b"\x03\x81\xa3seq\xff", "bad_field"),  # negative seq
        (b"\x03\x81\xa3seq\xa1x", "bad_field"),  # string seq
        (b"\x03\x91\x01", "bad_body"),
        (b"\x03\x81\xa3seq\x01\x01", "bad_msgpack"),  # trailing bytes
        (b"\x0a\x90", "bad_compound"),
        (b"\x0a\x91\x01", "bad_compound"),
        (b"\x0a\x91\xc4\x02\x0a\x90", "nested_compound"),
        (bytes([1]) + b"\x00" * 2000, "oversized"),
    ],
)
def test_malformed_packets_raise_packet_decode_error_with_a_reason(data: bytes, reason: str) -> None:
    with pytest.raises(PacketDecodeError) as info:
        decode_packet(data, 1400)
    assert info.value.reason == reason
    assert isinstance(info.value, ValueError)


def test_unknown_keys_are_ignored_for_forward_compatibility() -> None:
    data = bytes([MessageType.ACK]) + msgpack.packb({"future": [1, 2], "seq": 5})
    assert decode(data) == Ack(5)


def test_bad_status_and_address_are_rejected() -> None:
    row = {"address": ["h", 70000], "incarnation": 1, "meta": b"", "node": "n", "status": 0}
    body = {"app_state": b"", "join": False, "source": "s", "states": [row]}
    with pytest.raises(PacketDecodeError, match="port"):
        decode(bytes([MessageType.PUSH_PULL]) + msgpack.packb(body, use_bin_type=True))
    row.update(address=["h", 1], status=9)
    with pytest.raises(PacketDecodeError, match="status"):
        decode(bytes([MessageType.PUSH_PULL]) + msgpack.packb(body, use_bin_type=True))


def test_encode_within_refuses_oversized_messages() -> None:
    with pytest.raises(PacketTooLargeError) as info:
        encode_within(AppMessage("a", b"x" * 2000), 1400)
    assert info.value.limit == 1400


def test_app_response_helpers() -> None:
    assert decode_app_response(encode_app_response(b"ok"), 1000) == AppResponse(b"ok", "")
    assert decode_app_response(encode_app_error("boom"), 1000).error == "boom"
    with pytest.raises(PacketDecodeError):
        decode_app_response(encode(Ack(1)), 1000)


if __name__ == "__main__":  # python tests/gossip/test_messages.py --regenerate (only for a deliberate format change)
    import sys

    if "--regenerate" in sys.argv:
        VECTORS.write_text(json.dumps({k: encode(v).hex() for k, v in sorted(GOLDEN.items())}, indent=1,
                                      sort_keys=True))
