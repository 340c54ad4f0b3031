"""Anti-entropy cost at 100k keys against a naive full-state exchange measured in the same run.

Prints a table (or one JSON object with --json): idle exchange bytes, bytes to repair 100 differing keys (initiator
newer, responder newer, concurrent edits) as a ratio of those keys' encoded states and of a full-state transfer,
a fresh node's catch-up (largest message, slowest responder step), and a multi-megabyte value sent in chunks.
Values are synthetic 64-200 byte states of grow-only sets so merges are real joins.
"""

from __future__ import annotations

import argparse
import json
import random
import time

import msgpack

from rumor.gossip.anti_entropy import (
    AntiEntropyConfig,
    AntiEntropyResponder,
    AntiEntropySession,
    MerkleTree,
    state_digest,
)


class Replica:
    def __init__(self, items: dict[bytes, bytes]) -> None:
        self.data = dict(items)
        self.tree = MerkleTree.from_items((k, state_digest(v), len(v)) for k, v in self.data.items())

    def get_state(self, key: bytes) -> bytes | None:
        return self.data.get(key)

    def merge(self, key: bytes, state: bytes) -> None:
        old = self.data.get(key)
        self.put(key, state if old is None else b",".join(sorted(set(old.split(b",")) | set(state.split(b",")))))

    def put(self, key: bytes, state: bytes) -> None:
        self.data[key] = state
        self.tree.set(key, state_digest(state), len(state))


def run(a: Replica, b: Replica, seed: int, config: AntiEntropyConfig) -> dict[str, float]:
    session = AntiEntropySession(a.tree, a.get_state, a.merge, random.Random(seed), config)
    responder = AntiEntropyResponder(b.tree, b.get_state, b.merge, config)
    largest, slowest, rounds = 0, 0.0, 0
    request = session.start()
    while request is not None:
        started = time.perf_counter()
        reply = responder.handle(request)
        slowest = max(slowest, time.perf_counter() - started)
        largest = max(largest, len(request), len(reply))
        request = session.receive(reply)
        rounds += 1
    assert a.tree.root() == b.tree.root(), "session did not converge"
    return {"bytes": session.stats.bytes_sent + session.stats.bytes_received, "rounds": rounds,
            "largest_message": largest, "slowest_step_s": slowest}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--keys", type=int, default=100_000)
    parser.add_argument("--diff", type=int, default=100)
    parser.add_argument("--big-elements", type=int, default=1_000_000, help="elements of the large value")
    parser.add_argument("--skip-catchup", action="store_true")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    rng = random.Random(42)
    config = AntiEntropyConfig()
    base = {b"key:%07d" % i: rng.randbytes(rng.randint(32, 100)).hex().encode() for i in range(args.keys)}
    started = time.perf_counter()
    a, b = Replica(base), Replica(base)
    build_s = (time.perf_counter() - started) / 2
    # Baseline: the naive exchange ships every (key, state) pair (one direction; push-pull doubles it).
    full_state = len(msgpack.packb([[k, v] for k, v in a.data.items()], use_bin_type=True))
    out: dict[str, object] = {"keys": args.keys, "diff_keys": args.diff, "tree_build_s": round(build_s, 3),
                              "full_state_bytes": full_state}
    out["idle_bytes"] = run(a, b, 1, config)["bytes"]
    for name, sides in [("initiator_newer", "a"), ("responder_newer", "b"), ("concurrent", "ab")]:
        changed = rng.sample(sorted(base), args.diff)
        for key in changed:
            for side in sides:
                replica = a if side == "a" else b
                replica.merge(key, b"%s%d" % (side.encode(), rng.randrange(10**9)))  # canonical (sorted) encoding
        # The states that must travel: the newer side's, or for concurrent edits both sides'.
        one_side = sum(len((a if side == "a" else b).data[k]) for k in changed for side in sides)
        result = run(a, b, 2, config)
        out[name] = {"bytes": result["bytes"], "rounds": result["rounds"], "state_bytes": one_side,
                     "ratio_to_states": round(result["bytes"] / one_side, 3),
                     "ratio_to_full_state": round(result["bytes"] / full_state, 5)}
    if not args.skip_catchup:
        fresh = Replica({})
        started = time.perf_counter()
        result = run(fresh, a, 3, config)
        out["catchup"] = {"bytes": result["bytes"], "ratio_to_full_state": round(result["bytes"] / full_state, 3),
                          "rounds": result["rounds"], "largest_message": result["largest_message"],
                          "slowest_responder_step_s": round(result["slowest_step_s"], 4),
                          "total_s": round(time.perf_counter() - started, 2)}
    big = b",".join(b"%07d" % i for i in range(args.big_elements))
    x, y = Replica({b"big": big}), Replica({b"big": b"0000000"})
    result = run(y, x, 4, config)
    out["big_value"] = {"value_bytes": len(big), "bytes": result["bytes"], "rounds": result["rounds"],
                        "largest_message": result["largest_message"], "limit": config.max_message_bytes}
    if args.json:
        print(json.dumps(out))
        return
    print(f"anti-entropy at {args.keys} keys (tree build {build_s:.2f}s); full-state transfer {full_state} bytes")
    print(f"{'case':<18}{'bytes':>10}{'rounds':>8}{'x states':>10}{'x full':>10}")
    print(f"{'idle':<18}{out['idle_bytes']:>10}{1:>8}{'-':>10}{out['idle_bytes'] / full_state:>10.5f}")
    for name in ("initiator_newer", "responder_newer", "concurrent"):
        row = out[name]
        print(f"{name:<18}{row['bytes']:>10}{row['rounds']:>8}{row['ratio_to_states']:>10.2f}"
              f"{row['ratio_to_full_state']:>10.5f}")
    if "catchup" in out:
        row = out["catchup"]
        print(f"{'fresh catch-up':<18}{row['bytes']:>10}{row['rounds']:>8}{'-':>10}{row['ratio_to_full_state']:>10.3f}"
              f"   largest msg {row['largest_message']} B, slowest step {row['slowest_responder_step_s']}s")
    row = out["big_value"]
    print(f"big value {row['value_bytes']} B: {row['bytes']} B in {row['rounds']} rounds, "
          f"largest message {row['largest_message']} B (limit {row['limit']})")


if __name__ == "__main__":
    main()
