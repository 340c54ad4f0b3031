"""`rumor`: run a node (`rumor serve`), a local demo cluster (`rumor demo`), or talk to a node
(`rumor get/put/incr/add/remove/del/keys/members/status`), or follow its changes (`rumor watch PREFIX`), or back it
up and restore it (`rumor export`, `rumor import`: `server.backup_cli`), or change its cluster (`rumor join
HOST:PORT...`, `rumor force-leave NODE_ID`).

Client commands print the server's JSON answer on stdout and exit non-zero on errors. Values and set elements on the
command line are parsed as JSON when they parse (`42`, `true`, `[1,2]`, `"x"`) and taken as strings otherwise.

An operator's mistake is one line on stderr that says what to do, never a traceback: a port in use, a data directory
another node holds, a node id already in the cluster, an unusable `--node` URL. `rumor keys | head -1` exits quietly.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aiohttp

from rumor.server import backup_cli
from rumor.server.client import (
    InvalidNodeURLError,
    MalformedResponseError,
    RumorClient,
    RumorHTTPError,
    WatchEvent,
    node_url,
)
from rumor.server.config import (
    LOG_FORMATS,
    LOG_LEVELS,
    TIMING_PRESETS,
    WIRE_VERSIONS,
    ServerConfig,
    env_name,
    load_config,
)
from rumor.server.errors import ConfigError, ServerError
from rumor.server.version import PYTHON, VERSION

DEFAULT_NODE_URL = "http://127.0.0.1:7000"

# (flag, config field, help) for `rumor serve`; each is also RUMOR_<FIELD> in the environment and <field> in TOML.
_SERVE_OPTIONS: list[tuple[str | tuple[str, ...], str, dict[str, Any], str]] = [
    ("--node-id", "node_id", {}, "replica id of this node (when unset: derived once, then persisted in the data dir)"),
    ("--http-addr", "http_addr", {}, "host:port of the HTTP API (port 0 = any free port)"),
    ("--gossip-addr", "gossip_addr", {}, "host:port for gossip, UDP and TCP"),
    (("--join", "--seed"), "seeds", {"action": "append"},
     "gossip host:port of a node to join through; a DNS name joins every address it has, looked up again on each "
     "attempt (repeatable; env: comma list)"),
    ("--advertise-addr", "advertise_addr", {},
     "IP[:port] other nodes reach this node's gossip at, and the published API host (NAT, containers, 0.0.0.0 binds)"),
    ("--advertise-http-addr", "advertise_http_addr", {}, "host[:port] clients should use for the API, when not "
     "the --advertise-addr host with the bound API port"),
    ("--tls-cert", "tls_cert", {}, "PEM certificate: serve the API over HTTPS (with --tls-key)"),
    ("--tls-key", "tls_key", {}, "PEM private key of --tls-cert (unencrypted)"),
    ("--tls-ca", "tls_ca", {}, "PEM CA: HTTPS clients must present a certificate it signed (mutual TLS)"),
    ("--data-dir", "data_dir", {}, "directory of the SQLite database"),
    ("--cluster-key", "cluster_key", {}, "shared secret that encrypts gossip (when unset: plaintext gossip)"),
    ("--api-token", "api_token", {}, "require 'Authorization: Bearer <token>' on every API call but /health"),
    (("--preset", "--timing"), "timing", {"choices": TIMING_PRESETS},
     "gossip timing preset: lan, wan or local (fast timers for loopback clusters)"),
    ("--clock-offset-ms", "clock_offset_ms", {"type": int}, "added to the wall clock feeding the HLC (tests: skew)"),
    ("--max-body-bytes", "max_body_bytes", {"type": int}, "largest accepted request body, in bytes"),
    ("--in-memory", "in_memory", {"action": "store_const", "const": True},
     "keep everything in memory: nothing survives a restart"),
    ("--enable-fault-injection", "enable_fault_injection", {"action": "store_const", "const": True},
     "add POST /v1/debug/partition to cut this node off from peers (demos and tests only)"),
    ("--log-level", "log_level", {"choices": LOG_LEVELS}, "lowest level logged"),
    ("--log-format", "log_format", {"choices": LOG_FORMATS}, "text lines, or one JSON object a line"),
    ("--access-log", "access_log", {"action": "store_const", "const": True},
     "log one line per HTTP request (method, path, status, bytes, ms)"),
    ("--wire-version", "wire_version", {"type": int, "choices": WIRE_VERSIONS},
     "CRDT encoding this node writes: 2, or 1 while upgrading a cluster from the previous release (README)"),
]


def _default_of(field_name: str) -> str:
    """The real default of a `serve` option, as `rumor serve --help` shows it (None: unset)."""
    default = ServerConfig.__dataclass_fields__[field_name].default
    if default is None or default == ():
        return "unset"
    if isinstance(default, bool):
        return "on" if default else "off"
    return str(default)


def _parse_value(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rumor", description="Available-first replicated store of CRDTs.")
    parser.add_argument("--version", action="version", version=f"rumor {VERSION} (Python {PYTHON})")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser(
        "serve", help="run a node",
        description="Run a node. Precedence: flags > RUMOR_* environment variables > --config TOML file > defaults.",
    )
    serve.add_argument("--config", type=Path, help="TOML file whose top-level keys are the option names "
                       "with underscores (e.g. http_addr = \"127.0.0.1:7000\"); env: RUMOR_CONFIG")
    for flags, field_name, extra, help_text in _SERVE_OPTIONS:
        names = (flags,) if isinstance(flags, str) else flags
        serve.add_argument(*names, dest=field_name, default=None,
                           help=f"{help_text} (default: {_default_of(field_name)}; env {env_name(field_name)})",
                           **extra)

    demo = commands.add_parser(
        "demo", help="run a local multi-process cluster through a partition and watch it converge",
        description="Start a local cluster of node processes, write through every node, partition one away, keep "
                    "writing on both sides, heal, and show convergence step by step. Cleans up after itself.")
    from rumor.server.demo import add_arguments as add_demo_arguments

    add_demo_arguments(demo)

    def client_command(name: str, help_text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text, description=help_text)
        sub.add_argument("--node", default=os.environ.get("RUMOR_NODE", DEFAULT_NODE_URL),
                         help=f"node URL (default $RUMOR_NODE or {DEFAULT_NODE_URL})")
        sub.add_argument("--token", default=os.environ.get("RUMOR_API_TOKEN"), help="API token ($RUMOR_API_TOKEN)")
        sub.add_argument("--ca", dest="tls_ca", default=os.environ.get("RUMOR_CA"),
                         help="PEM CA that signed an https node's certificate ($RUMOR_CA; default: the system's)")
        sub.add_argument("--cert", dest="tls_cert", default=os.environ.get("RUMOR_CERT"),
                         help="PEM client certificate, for a node run with --tls-ca ($RUMOR_CERT)")
        sub.add_argument("--key", dest="tls_key", default=os.environ.get("RUMOR_KEY"),
                         help="PEM key of --cert ($RUMOR_KEY)")
        return sub

    client_command("get", "print a key's item").add_argument("key")
    put = client_command("put", "write a register (value parsed as JSON when it parses)")
    put.add_argument("key")
    put.add_argument("value")
    incr = client_command("incr", "increment a counter (negative amounts decrement)")
    incr.add_argument("key")
    incr.add_argument("amount", nargs="?", type=int, default=1)
    for name, verb in (("add", "add elements to"), ("remove", "remove elements from")):
        sub = client_command(name, f"{verb} a set")
        sub.add_argument("key")
        sub.add_argument("elements", nargs="+")
    client_command("del", "delete a key (observed-remove)").add_argument("key")
    keys = client_command("keys", "list keys in order")
    keys.add_argument("--prefix", default="")
    keys.add_argument("--limit", type=int, default=None, help="one page of at most this many keys")
    client_command("members", "list cluster members as this node sees them")
    status = client_command("status", "show whether every member holds the same data as this node, now: members, "
                                      "agreement, lag and the verdict")
    status.add_argument("--json", action="store_true", help="print the convergence report as JSON")
    status.add_argument("--check", action="store_true",
                        help=f"exit with status {NOT_CONVERGED_EXIT} unless the verdict is converged (or alone): for "
                             "scripts that wait for convergence")
    client_command("join", "ask the node to join a cluster through these gossip addresses (a name: each of its "
                           "addresses)").add_argument("addresses", nargs="+", metavar="HOST:PORT")
    client_command("force-leave", "declare a dead member left: nothing probes it, retries it or counts it for a "
                                  "quorum any more").add_argument("member", metavar="NODE_ID")
    watch = client_command("watch", "print each change under a prefix as it happens, one line each (Ctrl-C stops); "
                                    "resumes by itself after a dropped connection")
    watch.add_argument("prefix", nargs="?", default="", help="only keys starting with this (default: every key)")
    watch.add_argument("--since", help="resume after this cursor (an event's or a reset's) instead of from now")
    watch.add_argument("--count", type=int, default=None, help="stop after this many events")
    backup_cli.add_commands(client_command)
    return parser


async def _run_client(args: argparse.Namespace) -> Any:
    async with _client(args) as client:
        match args.command:
            case "get":
                return await client.get(args.key)
            case "put":
                return await client.put(args.key, _parse_value(args.value))
            case "incr":
                return await client.incr(args.key, args.amount)
            case "add":
                return await client.add(args.key, *map(_parse_value, args.elements))
            case "remove":
                return await client.remove(args.key, *map(_parse_value, args.elements))
            case "del":
                return await client.delete(args.key)
            case "keys":
                if args.limit is not None:
                    return await client.keys(args.prefix, limit=args.limit)
                return await client.all_keys(args.prefix)
            case "members":
                return await client.members()
            case "status":
                return await client.convergence()
            case "join":
                return await client.join(args.addresses)
            case "force-leave":
                return await client.force_leave(args.member)
    raise AssertionError(args.command)


def _client(args: argparse.Namespace) -> RumorClient:
    return RumorClient(args.node, token=args.token, ca=args.tls_ca, cert=args.tls_cert, key=args.tls_key)


def watch_line(event: WatchEvent) -> str:
    """`key type value|deleted (origin)` for a change; a reset says why and how to resync."""
    data = event.data
    if event.kind == "reset":
        return f"reset ({data['reason']}): {data['resync']}"
    value = "deleted" if data["deleted"] else json.dumps(data["value"], ensure_ascii=False)
    return f"{data['key']} {data['type']} {value} ({data['origin']})"


async def _watch(args: argparse.Namespace) -> int:
    """`rumor watch`: one line per event on stdout; connection trouble on stderr, once per lost connection."""

    def retrying(error: BaseException | None, cursor: str | None) -> None:
        reason = "the node ended the stream" if error is None else str(error) or type(error).__name__
        print(f"rumor: watch: {reason}; reconnecting to {args.node}"
              + (f" from {cursor}" if cursor else ""), file=sys.stderr, flush=True)

    seen = 0
    async with _client(args) as client, \
            contextlib.aclosing(client.watch(args.prefix, args.since, on_retry=retrying)) as events:
        async for event in events:
            status = _print(watch_line(event))
            seen += 1
            if status or (args.count is not None and seen >= args.count):
                return status
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "demo":
        from rumor.server.demo import run as run_demo

        return run_demo(args)
    if args.command == "serve":
        flags = {field_name: getattr(args, field_name) for _, field_name, _, _ in _SERVE_OPTIONS}
        try:
            config = load_config(flags, os.environ, args.config)
        except ConfigError as exc:
            print(f"rumor: {exc}", file=sys.stderr)
            return 2
        return _serve(config)
    try:
        node_url(args.node)
    except InvalidNodeURLError as exc:
        print(f"rumor: --node: {exc}", file=sys.stderr)
        return 2
    if args.command in backup_cli.COMMANDS:
        return backup_cli.run(args)
    try:
        if args.command == "watch":
            return asyncio.run(_watch(args))
        result = asyncio.run(_run_client(args))
    except (RumorHTTPError, MalformedResponseError) as exc:
        print(f"rumor: {exc}", file=sys.stderr)
        return 1
    except ConfigError as exc:  # --ca/--cert/--key files that cannot be used
        print(f"rumor: {exc}", file=sys.stderr)
        return 2
    except (OSError, aiohttp.ClientError) as exc:
        print(f"rumor: cannot reach {args.node}: {str(exc) or type(exc).__name__}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # Ctrl-C ends `rumor watch`: no traceback
        return 130
    if args.command == "status":
        from rumor.server.status_view import check_status, status_table

        printed = _print(json.dumps(result, indent=2, ensure_ascii=False) if args.json else status_table(result))
        return printed or (check_status(result, NOT_CONVERGED_EXIT) if args.check else 0)
    if args.command == "get" and result is None:
        print(f"rumor: key not found: {args.key}", file=sys.stderr)
        return 1
    return _print(json.dumps(result, indent=2, ensure_ascii=False) if result is not None else "deleted")


def _serve(config: ServerConfig) -> int:
    """`rumor serve`; a failure to start that an operator causes and can fix is one line on stderr, status 1."""
    from rumor.gossip.address import format_address
    from rumor.gossip.errors import GossipError
    from rumor.gossip.transport_asyncio import BindError
    from rumor.server.serve import ListenError, run

    try:
        return run(config)
    except BindError as exc:  # the gossip port: same words as for the HTTP one
        error: Exception = ListenError(format_address(exc.addr) if exc.addr else config.gossip_addr, exc.reason,
                                       "--gossip-addr")
    except (ServerError, GossipError) as exc:  # data directory in use, node id taken, storage unreadable, ...
        error = exc
    print(f"rumor: {error}", file=sys.stderr)
    return 1


#: `rumor status --check`'s exit status when the cluster has not converged (1 and 2 are errors)
NOT_CONVERGED_EXIT = 3


def _print(text: str) -> int:
    """Prints the answer; a reader that went away early (`rumor keys | head -1`) ends the command quietly."""
    try:
        print(text)
        sys.stdout.flush()
    except BrokenPipeError:
        # As the Python docs advise: point stdout at devnull, or the interpreter's last flush fails once more.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141  # 128 + SIGPIPE: what a shell reports for a writer whose reader went away
    return 0


if __name__ == "__main__":
    sys.exit(main())
