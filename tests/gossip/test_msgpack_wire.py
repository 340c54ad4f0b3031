"""Malformed msgpack: every way `msgpack` fails on untrusted bytes is in `UNPACK_ERRORS`, and each gets a reason a
person can read (some of msgpack's errors carry no text at all)."""

from __future__ import annotations

import msgpack
import pytest

from rumor.gossip.errors import PacketDecodeError
from rumor.gossip.messages import MessageType, decode_packet
from rumor.gossip.msgpack_wire import UNPACK_ERRORS, unpack_error_reason

MALFORMED = {
    "a byte that begins no value": b"\xc1",
    "trailing bytes": b"\x01\x02",
    "truncated array": b"\x91",
    "truncated array header": b"\xdc",
    "an int as a map key": b"\x81\x01\x02",
    "a map as a map key": b"\x81\x80\x01",
    "bad UTF-8": b"\xa2\xff\xfe",
    "nested past the stack": b"\x91" * 2000 + b"\x01",
}


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_each_malformed_payload_raises_a_listed_error_with_a_reason(name: str) -> None:
    with pytest.raises(UNPACK_ERRORS) as info:
        msgpack.unpackb(MALFORMED[name], raw=False, strict_map_key=True, use_list=True)
    assert unpack_error_reason(info.value).strip()


def test_errors_without_text_are_named_by_what_they_mean() -> None:
    assert unpack_error_reason(msgpack.FormatError()) == "a byte that begins no msgpack value"
    assert unpack_error_reason(msgpack.StackError()) == "nested too deep"
    assert unpack_error_reason(msgpack.OutOfData()) == "the data ends in the middle of a value"
    assert unpack_error_reason(RecursionError("maximum recursion depth exceeded")) == "nested too deep"
    assert unpack_error_reason(ValueError("Unpack failed: incomplete input")) == "Unpack failed: incomplete input"


def test_a_streaming_unpacker_that_runs_out_of_data_is_covered_too() -> None:
    unpacker = msgpack.Unpacker(raw=False)
    unpacker.feed(b"\x92\x01")
    unpacker.read_array_header()
    unpacker.unpack()
    with pytest.raises(UNPACK_ERRORS) as info:
        unpacker.unpack()
    assert unpack_error_reason(info.value) == "the data ends in the middle of a value"


def test_a_gossip_packet_that_does_not_decode_is_dropped_with_the_reason() -> None:
    with pytest.raises(PacketDecodeError) as info:
        decode_packet(bytes([MessageType.ACK]) + b"\xc1", 1400)
    assert (info.value.reason, info.value.detail) == ("bad_msgpack", "a byte that begins no msgpack value")
