"""Keyring behaviour: sealing round-trips, rotation without outage, and every refusal has a stable reason."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rumor.gossip.errors import GossipError
from rumor.gossip.security import (
    CONTEXT_PACKET,
    CONTEXT_STREAM,
    SEAL_OVERHEAD,
    SEAL_VERSION,
    DecryptError,
    InvalidKeyError,
    Keyring,
    KeyringError,
    is_sealed,
)

K1 = bytes(range(16))
K2 = bytes(range(100, 124))
K3 = bytes(range(200, 232))


@given(st.binary(max_size=2000), st.sampled_from([K1, K2, K3]))
def test_seal_open_round_trips_for_every_key_size(plaintext: bytes, key: bytes) -> None:
    ring = Keyring(key)
    sealed = ring.seal(plaintext)
    assert is_sealed(sealed)
    assert sealed[0] == SEAL_VERSION
    assert len(sealed) == len(plaintext) + SEAL_OVERHEAD
    assert ring.open(sealed) == plaintext


def test_each_seal_uses_a_fresh_nonce() -> None:
    ring = Keyring(K1)
    assert ring.seal(b"same") != ring.seal(b"same")


def test_wrong_key_is_refused_and_counted() -> None:
    sealed = Keyring(K1).seal(b"hello")
    other = Keyring(K2)
    with pytest.raises(DecryptError) as info:
        other.open(sealed)
    assert info.value.reason == "no_matching_key"
    assert isinstance(info.value, GossipError)
    assert isinstance(info.value, ValueError)
    assert other.failures["no_matching_key"] == 1


def test_tampering_anywhere_is_detected() -> None:
    ring = Keyring(K1)
    sealed = bytearray(ring.seal(b"payload bytes"))
    for i in range(1, len(sealed)):
        tampered = bytearray(sealed)
        tampered[i] ^= 0x01
        with pytest.raises(DecryptError):
            ring.open(bytes(tampered))
    assert ring.failures["no_matching_key"] == len(sealed) - 1


def test_context_is_authenticated() -> None:
    ring = Keyring(K1)
    sealed = ring.seal(b"probe", CONTEXT_PACKET)
    assert ring.open(sealed, CONTEXT_PACKET) == b"probe"
    with pytest.raises(DecryptError):
        ring.open(sealed, CONTEXT_STREAM)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "empty"),
        (b"\x01plain message", "not_sealed"),
        (bytes([SEAL_VERSION]) + b"short", "too_short"),
        (bytes([0xE7]) + bytes(40), "unsupported_version"),
    ],
)
def test_malformed_input_has_a_stable_reason(data: bytes, reason: str) -> None:
    ring = Keyring(K1)
    with pytest.raises(DecryptError) as info:
        ring.open(data)
    assert info.value.reason == reason
    assert ring.failures == {reason: 1}


def test_plaintext_is_not_mistaken_for_sealed() -> None:
    assert not is_sealed(b"")
    assert not is_sealed(b"\x00\x81\xa1")
    assert not is_sealed(bytes([0x7F]))
    assert is_sealed(bytes([0xE0]))


def test_rotation_keeps_old_traffic_readable_until_removed() -> None:
    old_node, new_node = Keyring(K1), Keyring(K1)
    new_node.rotate(K2)
    assert new_node.primary == K2
    assert new_node.keys == [K2, K1]
    # Peers still sealing with the old key are understood, and the old peer can install the new key too.
    assert new_node.open(old_node.seal(b"from old")) == b"from old"
    old_node.add(K2)
    assert old_node.open(new_node.seal(b"from new")) == b"from new"
    new_node.remove(K1)
    with pytest.raises(DecryptError):
        new_node.open(old_node.seal(b"stale"))


def test_primary_cannot_be_removed_and_unknown_key_cannot_be_used() -> None:
    ring = Keyring(K1, extra=[K2])
    with pytest.raises(KeyringError):
        ring.remove(K1)
    with pytest.raises(KeyringError):
        ring.use(K3)
    ring.use(K2)
    ring.remove(K1)
    assert ring.keys == [K2]


def test_extra_keys_decrypt_only() -> None:
    ring = Keyring(K1, extra=[K2, K2])
    assert ring.keys == [K1, K2]
    assert ring.open(Keyring(K2).seal(b"x")) == b"x"
    assert Keyring(K1).open(ring.seal(b"y")) == b"y"


@pytest.mark.parametrize("length", [0, 8, 15, 17, 33])
def test_bad_key_lengths_are_rejected(length: int) -> None:
    with pytest.raises(InvalidKeyError) as info:
        Keyring(bytes(length))
    assert info.value.length == length
