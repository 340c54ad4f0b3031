"""`rumor demo`: a local cluster of real node processes, a partition, writes on both sides, the heal, convergence.

What it shows, step by step, with a table of every node's values after each step:
1. N nodes on loopback find each other (SWIM join).
2. Concurrent writes through different nodes (a counter incremented everywhere, a set added to everywhere, a
   register written everywhere) converge, and how long that took. A watcher on the last node (`GET /v1/watch`, the
   change feed) sees the writes the other nodes make, as they arrive by gossip.
3. One node is cut off (fault injection on both sides of the cut). The majority sees it suspected, then dead.
4. Both sides keep accepting writes (available first): increments, a concurrent remove (majority) and re-add
   (minority) of the same set element, register writes on both sides, the minority's last.
5. The network heals; the minority is alive again and every replica converges to one value per key: the counter
   is the sum of every increment, the re-added element survives its concurrent remove (add wins), the register
   holds the later of the two concurrent writes by hybrid-logical-clock timestamp (the same winner everywhere).

Bounded: every wait has a deadline, so with ``--preset local`` the whole run takes well under a minute. Children's
logs go to files in a temporary directory, printed only if something fails; the directory is removed at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from rumor.server.config import TIMING_PRESETS
from rumor.server.errors import ServerError
from rumor.server.local_cluster import LocalCluster

KEYS = ("visits", "fruits", "motd")
_FRUITS = ("apple", "banana", "cherry", "damson", "elder", "fig", "grape", "hazel", "kiwi")


class DemoFailedError(ServerError, RuntimeError):
    """The cluster did not behave as the demo expects (a value differs from the one CRDT semantics predict)."""


class Narrator:
    """All output goes through here: aligned tables, one line per event, nothing from the children."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.started = time.monotonic()

    def say(self, text: str = "") -> None:
        print(text, file=self.out, flush=True)

    def step(self, title: str) -> None:
        self.say()
        self.say(f"[{time.monotonic() - self.started:5.1f}s] {title}")

    def table(self, values: dict[str, dict[str, Any]], statuses: dict[str, str], viewer: str) -> None:
        cells = {node: [_show(row[key]) for key in KEYS] for node, row in values.items()}
        header = ["node", f"seen by {viewer}", *KEYS]
        rows = [[node, statuses.get(node, "?"), *cells[node]] for node in sorted(cells)]
        widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
        for row in [header, *rows]:
            self.say("    " + "  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)))


def _show(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, list):
        return "{" + ", ".join(str(v) for v in value) + "}"
    return json.dumps(value)


async def _show_state(cluster: LocalCluster, say: Narrator, viewer: str, names: Sequence[str] | None = None) -> None:
    values = await cluster.values(KEYS, names)
    statuses = await cluster.statuses(viewer)
    say.table(values, statuses, viewer)


async def run_demo(nodes: int, preset: str, base_dir: Path, out: TextIO) -> None:
    say = Narrator(out)
    names = [f"n{i}" for i in range(1, nodes + 1)]
    minority, majority = names[-1], names[:-1]
    viewer = majority[0]
    say.say(f"rumor demo: {nodes} node processes on 127.0.0.1 (preset {preset}), data and logs in {base_dir}")
    say.step(f"starting {', '.join(names)} (the others join through n1's gossip address)")
    async with LocalCluster(nodes, base_dir, preset=preset) as cluster:
        took = await cluster.wait_members(timeout_s=20)
        say.say(f"    every node sees every other alive ({took * 1000:.0f} ms after the last one started)")
        for node in cluster.nodes:
            say.say(f"    {node.name}: api {node.http_url}  gossip {node.gossip_addr}")

        say.step("concurrent writes through every node: visits += i, fruits += one each, motd := 'hello from nI'")
        started = time.monotonic()
        await asyncio.gather(*(_write_round(cluster, name, i) for i, name in enumerate(names, 1)))
        await cluster.wait_converged(KEYS, timeout_s=15)
        say.say(f"    all {nodes} replicas equal {(time.monotonic() - started) * 1000:.0f} ms after the first write")
        await _show_state(cluster, say, viewer)
        expected_visits = sum(range(1, nodes + 1))

        say.step(f"change feed: a watcher on {minority} follows 'feed/' while {', '.join(majority)} write")
        await _watch_writes(cluster, say, minority, majority)

        say.step(f"partition: {minority} is cut off from {', '.join(majority)} (both directions)")
        await cluster.partition(majority, [minority])
        suspect_s = await cluster.wait_status(viewer, minority, "suspect", timeout_s=15)
        say.say(f"    {viewer} suspects {minority} after {suspect_s * 1000:.0f} ms")

        say.step("both sides keep accepting writes")
        for name in names:
            amount = 100 if name == minority else 10
            await cluster[name].api().incr("visits", amount)
            expected_visits += amount
        await cluster[viewer].api().remove("fruits", "apple")  # majority removes what it has seen...
        await cluster[minority].api().add("fruits", "apple")  # ...while the minority re-adds it concurrently
        await cluster[viewer].api().put("motd", f"majority side ({viewer})")
        await asyncio.sleep(0.01)  # a later wall-clock time for the minority's write: it is the last one
        await cluster[minority].api().put("motd", f"minority side ({minority})")
        say.say(f"    visits += 10 on {', '.join(majority)} and += 100 on {minority}; {viewer}: remove apple, "
                f"{minority}: add apple; motd written on both sides")
        await _show_state(cluster, say, viewer)

        dead_s = await cluster.wait_status(viewer, minority, "dead", timeout_s=20)
        say.say(f"    {viewer} declares {minority} dead {dead_s * 1000:.0f} ms later (suspicion timed out)")
        await _show_state(cluster, say, viewer)

        say.step("heal: the network is whole again")
        started = time.monotonic()
        await cluster.heal()
        await cluster.wait_converged(KEYS, timeout_s=20)
        converged_ms = (time.monotonic() - started) * 1000
        say.say(f"    replicas converged {converged_ms:.0f} ms after the heal")
        alive_s = await cluster.wait_members(timeout_s=20)
        say.say(f"    {minority} is alive again for everyone {(time.monotonic() - started) * 1000:.0f} ms after "
                f"the heal ({alive_s * 1000:.0f} ms after convergence)")
        await _show_state(cluster, say, viewer)
        final = (await cluster.values(KEYS, [viewer]))[viewer]
        _check(final, expected_visits, minority)
        say.step("result")
        say.say(f"    visits = {final['visits']}: every increment on both sides counted once (PN-counter)")
        say.say("    fruits keeps apple: the minority's add was concurrent with the majority's remove (add wins)")
        say.say(f"    motd = {final['motd']!r}: the two writes were concurrent (one per side), so the later")
        say.say("    hybrid-logical-clock timestamp wins, the same on every node")
        say.say(f"    total {time.monotonic() - say.started:.1f} s")


async def _watch_writes(cluster: LocalCluster, say: Narrator, watcher: str, writers: Sequence[str]) -> None:
    """A watcher on `watcher` (from the feed's current cursor, so nothing written after it can be missed) sees one
    write made on each of `writers`, delivered by gossip; prints a line per event."""
    api = cluster[watcher].api()
    cursor = (await api.poll_changes("feed/", timeout_ms=1))["cursor"]
    wanted = {f"feed/{name}" for name in writers}
    written: dict[str, float] = {}
    lines: list[str] = []

    async def follow() -> None:
        async with contextlib.aclosing(api.watch("feed/", cursor)) as events:
            async for event in events:
                data = event.data
                if event.kind == "reset":
                    raise DemoFailedError(f"the watcher on {watcher} got a reset: {data['reason']}")
                after = (time.monotonic() - written.get(data["key"], time.monotonic())) * 1000
                lines.append(f"    {watcher} saw {data['key']} = {json.dumps(data['value'])} "
                             f"(origin: {data['origin']}) {after:.0f} ms after the write")
                wanted.discard(data["key"])
                if not wanted:
                    return

    following = asyncio.create_task(follow())
    try:
        for name in writers:
            written[f"feed/{name}"] = time.monotonic()
            await cluster[name].api().put(f"feed/{name}", f"written on {name}")
        await asyncio.wait_for(asyncio.shield(following), 15)
    except TimeoutError:
        raise DemoFailedError(f"the watcher on {watcher} did not see {', '.join(sorted(wanted))}") from None
    finally:
        following.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await following
    for line in lines:
        say.say(line)


async def _write_round(cluster: LocalCluster, name: str, i: int) -> None:
    api = cluster[name].api()
    await asyncio.gather(api.incr("visits", i), api.add("fruits", _FRUITS[(i - 1) % len(_FRUITS)]),
                         api.put("motd", f"hello from {name}"))


def _check(final: dict[str, Any], expected_visits: int, minority: str) -> None:
    problems = []
    if final["visits"] != expected_visits:
        problems.append(f"visits is {final['visits']}, expected {expected_visits}")
    if "apple" not in (final["fruits"] or []):
        problems.append("apple was lost despite a concurrent add")
    if final["motd"] != f"minority side ({minority})":
        problems.append(f"motd is {final['motd']!r}, expected the minority's later write")
    if problems:
        raise DemoFailedError("; ".join(problems))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rumor demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    return parser


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--nodes", type=int, default=3, help="cluster size, at least 2 (default 3)")
    parser.add_argument("--preset", choices=TIMING_PRESETS, default="local",
                        help="gossip timing preset (default local: fast timers for loopback)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (data and logs)")


def run(args: argparse.Namespace, out: TextIO = sys.stdout) -> int:
    if args.nodes < 2:
        print("rumor demo: --nodes must be at least 2", file=sys.stderr)
        return 2
    base_dir = Path(tempfile.mkdtemp(prefix="rumor-demo-"))
    try:
        asyncio.run(run_demo(args.nodes, args.preset, base_dir, out))
        return 0
    except KeyboardInterrupt:
        print("\nrumor demo: interrupted; nodes stopped", file=sys.stderr)
        return 130
    except (ServerError, OSError) as exc:
        print(f"\nrumor demo failed: {exc}", file=sys.stderr)
        _print_logs(base_dir)
        return 1
    finally:
        if args.keep:
            print(f"rumor demo: kept {base_dir}", file=sys.stderr)
        else:
            shutil.rmtree(base_dir, ignore_errors=True)


def _print_logs(base_dir: Path) -> None:
    for log in sorted(base_dir.glob("*.log")):
        lines = log.read_text(errors="replace").splitlines()[-25:]
        print(f"--- {log.name} (last {len(lines)} lines) ---", file=sys.stderr)
        for line in lines:
            print(f"  {line}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    return run(build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
