"""Golden vectors for the anti-entropy wire: one message of each type, pinned as hex in
``tests/vectors/gossip/anti_entropy.json`` with its decoded form.

Each vector must decode to its pinned type and body, and that body must encode to exactly the pinned bytes. The
EXCHANGE vectors are also rebuilt through `Composer` (so the fixed-width record layouts are pinned, not just msgpack)
and parsed with `Exchange.parse` into the records written out below. Bytes in the JSON bodies are ``{"bin": hex}``.

A change to a pinned vector is a wire format change: bump ``PROTOCOL_VERSION`` and regenerate on purpose with
    .venv/bin/python tests/gossip/test_anti_entropy_vectors.py --regenerate
Appending a field is not (the ``exchange_context_*`` vectors pin ``ft`` and ``cx``, added so), nor is appending a
message type (``bulk_*``): it adds vectors and leaves every existing one byte for byte as it was.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from rumor.gossip.anti_entropy import (
    AntiEntropyConfig,
    AntiEntropyMessageType,
    BulkWalk,
    Chunk,
    MerkleTree,
    answer_bulk,
    state_digest,
    transfer_id_of,
)
from rumor.gossip.anti_entropy.composer import Composer
from rumor.gossip.anti_entropy.wire import (
    FEATURE_CONTEXTS,
    LISTING_FINGERPRINTS,
    LISTING_SIZES,
    LISTING_TAGS,
    Exchange,
    decode_message,
    encode_message,
)

VECTORS = Path(__file__).resolve().parent.parent / "vectors" / "gossip" / "anti_entropy.json"
CONFIG = AntiEntropyConfig()
TREE = MerkleTree()  # the default shape (fanout 8, depth 5): 2-byte node ids
WIDTH = CONFIG.hash_bytes
SALT = 2

BIG = b"0123456789ab"
BIG_TID = transfer_id_of(BIG, b"big")
CHUNK = Chunk.make(BIG_TID, 0, 2, len(BIG), BIG[:6])
OTHER_TID = transfer_id_of(b"other", b"big2")
TAGS = bytes(range(6))
LONG_TAGS = bytes(range(63 * 3))  # 63 entries: the listing head escapes to a 2-byte count


def exchange_request() -> bytes:
    composer = Composer(TREE, CONFIG, salt=SALT)
    assert composer.add_group(1, 0, bytes(range(24)))
    assert composer.add_sketch(3, 9, bytes(range(100, 112)))
    assert composer.add_entries(5, TAGS, 2, LISTING_TAGS)
    assert composer.add_entries(12, LONG_TAGS, 63, LISTING_TAGS)
    assert composer.add_entries(300, b"fpfdig", 1, LISTING_FINGERPRINTS)
    assert composer.add_entries(32767, b"fp2dg2\x01\x02", 1, LISTING_SIZES)
    assert composer.add_differs(2, 17)
    assert composer.add_want(5, b"\xaa\xbb\xcc")
    assert composer.add_state(b"k1", b"{1,2}", True)
    assert composer.add_chunk(b"big", False, CHUNK)
    assert composer.add_chunk_want(b"big2", OTHER_TID, 1, True)
    return composer.encode(AntiEntropyMessageType.EXCHANGE)


def exchange_reply() -> bytes:
    composer = Composer(TREE, CONFIG, salt=None, count=45)
    assert composer.add_group(2, 3, bytes(range(50, 74)))
    assert composer.add_state(b"k2", b"v", False)
    assert composer.add_more_chunks(b"big", BIG_TID, 1, False)
    assert composer.add_node_note(4, 1000)
    assert composer.add_gone(OTHER_TID)
    return composer.encode(AntiEntropyMessageType.EXCHANGE)


def exchange_context_request() -> bytes:
    """A requester that reads context rows (``ft``) sends its context of a big key instead of its state."""
    composer = Composer(TREE, CONFIG, salt=SALT, features=FEATURE_CONTEXTS)
    assert composer.add_context(b"big", b"ctx-of-a", False)
    assert composer.add_state(b"k1", b"{1,2}", True)
    return composer.encode(AntiEntropyMessageType.EXCHANGE)


def exchange_context_reply() -> bytes:
    """Its answer: the diff that context lacks, and this side's context as an answer row; an empty context for a
    key this side does not hold."""
    composer = Composer(TREE, CONFIG, salt=None)
    assert composer.add_context(b"big", b"ctx-of-b", True)
    assert composer.add_state(b"big", b"{3}", False)
    assert composer.add_context(b"new", b"", True)
    return composer.encode(AntiEntropyMessageType.EXCHANGE)


SMALL_TREE = MerkleTree(8, 2)  # 64 leaves: a whole walk's hashes in one short vector
BULK_STATES = {b"k1": b"{1,2}", b"k2": b"v"}
for _key, _state in BULK_STATES.items():
    SMALL_TREE.set(_key, state_digest(_state), len(_state))


def bulk_request() -> bytes:
    return BulkWalk(MerkleTree(8, 2), SALT, WIDTH).request()


def bulk_reply() -> bytes:
    _, body = decode_message(bulk_request(), CONFIG.max_message_bytes)
    return answer_bulk(SMALL_TREE, BULK_STATES.get, body, WIDTH, CONFIG.max_message_bytes)[0]


def simple(kind: AntiEntropyMessageType, body: dict[str, object]) -> bytes:
    return encode_message(kind, body)


MESSAGES = {
    "hello": lambda: simple(AntiEntropyMessageType.HELLO, {"D": 5, "f": 8, "n": 3, "r": bytes(range(16)), "s": SALT,
                                                           "v": 2, "w": WIDTH}),
    "in_sync": lambda: simple(AntiEntropyMessageType.IN_SYNC, {}),
    "exchange_request": exchange_request,
    "exchange_reply": exchange_reply,
    "exchange_context_request": exchange_context_request,
    "exchange_context_reply": exchange_context_reply,
    "error": lambda: simple(AntiEntropyMessageType.ERROR, {"reason": "shape_mismatch"}),
    "bulk_request": bulk_request,
    "bulk_reply": bulk_reply,
}

PARSED = {
    "exchange_request": Exchange(
        salt=SALT,
        groups=[(1, 0, bytes(range(24)))],
        sketches=[(3, 9, bytes(range(100, 112)))],
        entries=[(5, TAGS, LISTING_TAGS), (12, LONG_TAGS, LISTING_TAGS), (300, b"fpfdig", LISTING_FINGERPRINTS),
                 (32767, b"fp2dg2\x01\x02", LISTING_SIZES)],
        differs=[(2, 17)],
        wants=[(5, b"\xaa\xbb\xcc")],
        states=[(b"k1", b"{1,2}", True)],
        chunks=[(b"big", False, CHUNK)],
        chunk_wants=[(b"big2", OTHER_TID, 1, True)],
    ),
    "exchange_reply": Exchange(
        count=45,
        groups=[(2, 3, bytes(range(50, 74)))],
        differs=[(4, 1000)],
        states=[(b"k2", b"v", False)],
        more=[(b"big", BIG_TID, 1, False)],
        gone=[OTHER_TID],
    ),
    "exchange_context_request": Exchange(
        salt=SALT,
        states=[(b"k1", b"{1,2}", True)],
        features=FEATURE_CONTEXTS,
        contexts=[(b"big", b"ctx-of-a", False)],
    ),
    "exchange_context_reply": Exchange(
        states=[(b"big", b"{3}", False)],
        contexts=[(b"big", b"ctx-of-b", True), (b"new", b"", True)],
    ),
}


def to_json(value: object) -> object:
    if isinstance(value, bytes):
        return {"bin": value.hex()}
    if isinstance(value, dict):
        return {k: to_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [to_json(v) for v in value]
    return value


def from_json(value: object) -> object:
    if isinstance(value, dict):
        if set(value) == {"bin"}:
            return bytes.fromhex(value["bin"])
        return {k: from_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [from_json(v) for v in value]
    return value


def load() -> dict[str, dict[str, object]]:
    return json.loads(VECTORS.read_text())["vectors"]


def test_vectors_cover_every_message_type() -> None:
    assert {v["type"] for v in load().values()} == {t.name for t in AntiEntropyMessageType}
    assert set(load()) == set(MESSAGES)


@pytest.mark.parametrize("name", sorted(MESSAGES))
def test_decoding_gives_the_pinned_message_and_encoding_gives_the_pinned_bytes(name: str) -> None:
    vector = load()[name]
    pinned = bytes.fromhex(str(vector["hex"]))
    kind, body = AntiEntropyMessageType[str(vector["type"])], from_json(vector["body"])
    assert decode_message(pinned, CONFIG.max_message_bytes) == (kind, body)
    assert isinstance(body, dict)
    assert encode_message(kind, body) == pinned
    assert MESSAGES[name]() == pinned, f"wire format of {name} changed; see the module docstring to regenerate"


@pytest.mark.parametrize("name", sorted(PARSED))
def test_exchanges_parse_into_the_pinned_records(name: str) -> None:
    _, body = decode_message(bytes.fromhex(str(load()[name]["hex"])), CONFIG.max_message_bytes)
    assert Exchange.parse(body, TREE, WIDTH) == PARSED[name]


def regenerate() -> None:
    vectors = {}
    for name, make in sorted(MESSAGES.items()):
        message = make()
        kind, body = decode_message(message, CONFIG.max_message_bytes)
        vectors[name] = {"type": AntiEntropyMessageType(kind).name, "hex": message.hex(), "body": to_json(body)}
    doc = {
        "about": "rumor anti-entropy wire golden vectors: type byte + msgpack body (bytes as {\"bin\": hex}), built in "
                 "tests/gossip/test_anti_entropy_vectors.py. Regenerate: python "
                 "tests/gossip/test_anti_entropy_vectors.py --regenerate",
        "vectors": vectors,
    }
    VECTORS.write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")
    print(f"wrote {len(vectors)} vectors to {VECTORS}")


if __name__ == "__main__":
    if sys.argv[1:] != ["--regenerate"]:
        sys.exit(__doc__)
    regenerate()
