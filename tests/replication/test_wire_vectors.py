"""Golden vectors of the replication wire (`server.replication.wire`): one per message type, pinned in
`tests/vectors/replication/wire.json` (hex bytes and decoded form). Decoding each gives its decoded form; encoding
that form gives exactly its bytes. A change to either is a wire-format change: nodes of two versions would disagree.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from rumor.server.replication.probe import ProbeAnswer, parse_probe, parse_probed, probe_message, probed_message
from rumor.server.replication.wire import (
    DeltaEntry,
    DeltaGroup,
    Kind,
    ack_message,
    done_message,
    is_ack,
    kind_of,
    open_message,
    pack_push,
    parse_done,
    parse_open,
    parse_read,
    parse_repl,
    parse_state,
    parse_step,
    read_message,
    repl_message,
    state_message,
    step_message,
    unpack_push,
)

VECTORS = Path(__file__).resolve().parent.parent / "vectors" / "replication" / "wire.json"
Decoded = dict[str, Any]


def _vector(rows: list[list[Any]]) -> dict[tuple[str, int], int]:
    return {(origin, epoch): seq for origin, epoch, seq in rows}


def _rows(vector: dict[tuple[str, int], int]) -> list[list[Any]]:
    return [[origin, epoch, seq] for (origin, epoch), seq in sorted(vector.items())]


def _encode_push(d: Decoded) -> bytes:
    groups = [DeltaGroup.build((g["origin"], g["epoch"]), g["seq"],
                               [DeltaEntry(e["key"], e["type"], bytes.fromhex(e["delta"])) for e in g["entries"]])
              for g in d["groups"]]
    return pack_push([g.raw for g in groups])


def _decode_push(payload: bytes) -> Decoded:
    return {"groups": [{"origin": g.origin[0], "epoch": g.origin[1], "seq": g.seq,
                        "entries": [{"key": e.key, "type": e.type_name, "delta": e.delta.hex()} for e in g.entries]}
                       for g in unpack_push(payload)]}


def _open_codec(kind: Kind) -> tuple[Callable[[Decoded], bytes], Callable[[bytes], Decoded]]:
    def encode(d: Decoded) -> bytes:
        return open_message(kind, bytes.fromhex(d["anti_entropy"]), d["claim"], _vector(d["vector"]),
                            [(origin, epoch) for origin, epoch in d["retired"]])

    def decode(payload: bytes) -> Decoded:
        anti_entropy, claim, vector, retired = parse_open(payload, kind)
        return {"anti_entropy": anti_entropy.hex(), "claim": claim, "vector": _rows(vector),
                "retired": [list(origin) for origin in retired]}

    return encode, decode


def _decode_repl(payload: bytes) -> Decoded:
    key, type_name, delta = parse_repl(payload)
    return {"key": key, "type": type_name, "delta": delta.hex()}


def _decode_ack(payload: bytes) -> Decoded:
    assert is_ack(payload)
    return {}


def _encode_state(d: Decoded) -> bytes:
    return state_message(None if d["type"] is None else (d["type"], bytes.fromhex(d["state"])))


def _decode_state(payload: bytes) -> Decoded:
    held = parse_state(payload)
    return {"type": None, "state": None} if held is None else {"type": held[0], "state": held[1].hex()}


def _encode_probed(d: Decoded) -> bytes:
    return probed_message(ProbeAnswer(
        root=bytes.fromhex(d["root"]), ranges=bytes.fromhex(d["ranges"]), dirty=d["dirty"], keys=d["keys"],
        backlog_groups=d["backlog_groups"], backlog_bytes=d["backlog_bytes"], unsealed_keys=d["unsealed_keys"],
        oldest_unheld_age_s=d["oldest_unheld_age_s"]))


def _decode_probed(payload: bytes) -> Decoded:
    answer = parse_probed(payload)
    return {"root": answer.root.hex(), "ranges": answer.ranges.hex(), "dirty": answer.dirty, "keys": answer.keys,
            "backlog_groups": answer.backlog_groups, "backlog_bytes": answer.backlog_bytes,
            "unsealed_keys": answer.unsealed_keys, "oldest_unheld_age_s": answer.oldest_unheld_age_s}


CODECS: dict[Kind, tuple[Callable[[Decoded], bytes], Callable[[bytes], Decoded]]] = {
    Kind.PUSH: (_encode_push, _decode_push),
    Kind.OPEN: _open_codec(Kind.OPEN),
    Kind.OPENED: _open_codec(Kind.OPENED),
    Kind.STEP: (lambda d: step_message(bytes.fromhex(d["anti_entropy"])),
                lambda p: {"anti_entropy": parse_step(p).hex()}),
    Kind.DONE: (lambda d: done_message(_vector(d["vector"])), lambda p: {"vector": _rows(parse_done(p))}),
    Kind.REPL: (lambda d: repl_message(d["key"], d["type"], bytes.fromhex(d["delta"])), _decode_repl),
    Kind.ACK: (lambda _d: ack_message(), _decode_ack),
    Kind.READ: (lambda d: read_message(d["key"]), lambda p: {"key": parse_read(p)}),
    Kind.STATE: (_encode_state, _decode_state),
    Kind.PROBE: (lambda d: probe_message(d["epoch"], d["seq"]),
                 lambda p: dict(zip(("epoch", "seq"), parse_probe(p), strict=True))),
    Kind.PROBED: (_encode_probed, _decode_probed),
}

VECTOR_SET: dict[str, dict[str, Any]] = json.loads(VECTORS.read_text())


def test_every_message_type_has_a_vector() -> None:
    assert {Kind[v["kind"]] for v in VECTOR_SET.values()} == set(Kind) == set(CODECS)


@pytest.mark.parametrize("name", sorted(VECTOR_SET))
def test_decoding_gives_the_pinned_message(name: str) -> None:
    vector = VECTOR_SET[name]
    payload = bytes.fromhex(vector["hex"])
    assert kind_of(payload) is Kind[vector["kind"]]
    assert CODECS[Kind[vector["kind"]]][1](payload) == vector["decoded"]


@pytest.mark.parametrize("name", sorted(VECTOR_SET))
def test_encoding_gives_exactly_the_pinned_bytes(name: str) -> None:
    vector = VECTOR_SET[name]
    assert CODECS[Kind[vector["kind"]]][0](vector["decoded"]).hex() == vector["hex"]
