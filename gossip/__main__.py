"""Run one membership node on loopback: ``python -m gossip --bind 127.0.0.1:7946 --join 127.0.0.1:7947``.

Used by the multi-process integration tests and the membership benchmark, and handy for watching a cluster by hand.
Every line on stdout is one JSON object (``{"ev": ..., "t": <monotonic seconds>, ...}``) so a parent process can wait
for events instead of sleeping: ``ready``, ``joined``, ``status`` (a member became alive, dead or left, or updated),
``stats`` (cumulative wire counters, every ``--stats-interval`` seconds) and ``stopped``. SIGTERM or SIGINT make the
node leave gracefully before exiting.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys
import time
from typing import Any

from rumor.gossip.address import AddressError, format_address, parse_address
from rumor.gossip.clock import Address
from rumor.gossip.config import Config
from rumor.gossip.delegate import Delegate
from rumor.gossip.errors import GossipError
from rumor.gossip.member import Member
from rumor.gossip.memberlist import Memberlist
from rumor.gossip.security import Keyring
from rumor.gossip.transport_asyncio import AsyncioTransport

PRESETS = {"lan": Config.lan, "wan": Config.wan, "local": Config.local}
DEFAULT_PORT = 7946


def emit(event: str, **fields: Any) -> None:
    print(json.dumps({"ev": event, "t": time.monotonic(), **fields}), flush=True)


class PrintingDelegate(Delegate):
    """Reports membership changes as JSON lines; app payloads are echoed back to requesters."""

    def notify_join(self, member: Member) -> None:
        emit("status", member=member.id, status="alive", address=format_address(member.address))

    def notify_leave(self, member: Member) -> None:
        emit("status", member=member.id, status=member.status.name.lower())

    def notify_update(self, member: Member) -> None:
        emit("status", member=member.id, status="updated")

    def notify_message(self, payload: bytes, sender: str) -> None:
        emit("message", sender=sender, payload=payload.hex())

    async def handle_request(self, payload: bytes, sender: str) -> bytes:
        return payload


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m gossip", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bind", default="127.0.0.1:7946", help="HOST:PORT (or [v6]:PORT) for UDP and TCP")
    parser.add_argument("--id", help="node id (default: the bound HOST:PORT)")
    parser.add_argument("--join", action="append", default=[], help="seed HOST:PORT; repeat or comma-separate")
    parser.add_argument("--preset", choices=sorted(PRESETS), default="lan")
    parser.add_argument("--probe-interval", type=float, help="override probe_interval_s")
    parser.add_argument("--probe-timeout", type=float, help="override probe_timeout_s")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                        help="override any Config field, e.g. --set retransmit_mult=4 (repeatable)")
    parser.add_argument("--key", help="hex AES key (16/24/32 bytes) sealing all traffic")
    parser.add_argument("--stats-interval", type=float, default=0.0, help="print wire counters this often (0: never)")
    parser.add_argument("--run-for", type=float, default=0.0, help="leave and exit after this many seconds (0: never)")
    args = parser.parse_args(argv)
    try:  # addresses are checked here, so a typo is one usage line rather than a traceback
        args.bind = parse_address(args.bind, "--bind", default_port=DEFAULT_PORT)
        args.join = [parse_address(seed, "--join", default_port=DEFAULT_PORT)
                     for arg in args.join for seed in arg.split(",") if seed.strip()]
    except AddressError as exc:
        parser.error(str(exc))
    return args


def build_config(args: argparse.Namespace) -> Config:
    overrides: dict[str, Any] = {}
    defaults = Config().describe()
    for item in args.set:
        name, sep, text = item.partition("=")
        if not sep or name not in defaults:
            raise SystemExit(f"--set expects FIELD=VALUE with a Config field, got {item!r}")
        kind = type(defaults[name])
        overrides[name] = kind(float(text)) if kind in (int, float) else kind(text)
    if args.probe_interval is not None:
        overrides["probe_interval_s"] = args.probe_interval
    if args.probe_timeout is not None:
        overrides["probe_timeout_s"] = args.probe_timeout
    return PRESETS[args.preset](**overrides)


def wire_counters(memberlist: Memberlist) -> dict[str, Any]:
    stats = memberlist.stats.as_dict()
    transport = stats.get("transport", {})
    return {
        # Everything this node put on the wire: datagrams plus stream frames (push-pull, joins, app requests).
        "bytes_sent": transport.get("bytes_sent", 0) + transport.get("stream_bytes_sent", 0),
        "packets_sent": transport.get("packets_sent", 0),
        "dropped": {**stats.get("dropped", {}), **transport.get("dropped", {})},
    }


async def run(args: argparse.Namespace) -> int:
    config = build_config(args)
    keyring = Keyring(bytes.fromhex(args.key)) if args.key else None
    transport = AsyncioTransport(args.bind, keyring, config.max_packet_bytes, config.max_stream_bytes,
                                 stream_timeout_s=config.stream_timeout_s)
    seeds: list[Address] = args.join
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    memberlist = Memberlist(config, args.id or "", transport, PrintingDelegate())
    async with memberlist:
        emit("ready", id=memberlist.local_member.id, address=format_address(transport.local_address))
        if seeds:
            try:
                contacted = await memberlist.join(seeds)
            except GossipError as exc:
                emit("join_failed", error=str(exc))
                return 2
            emit("joined", contacted=contacted)
        deadline = loop.time() + args.run_for if args.run_for > 0 else None
        while not stop.is_set():
            wait_s = args.stats_interval if args.stats_interval > 0 else 3600.0
            if deadline is not None:
                wait_s = min(wait_s, max(0.0, deadline - loop.time()))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=wait_s)
            if args.stats_interval > 0:
                emit("stats", **wire_counters(memberlist))
            if deadline is not None and loop.time() >= deadline:
                break
        await memberlist.leave(timeout_s=min(2.0, config.probe_interval_s * 2))
    emit("stopped")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return asyncio.run(run(args))


if __name__ == "__main__":
    sys.exit(main())
