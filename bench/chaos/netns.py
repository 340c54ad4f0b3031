"""Where the nodes live and how packets between them are lost: Linux network namespaces, or loopback plus each
node's fault-injection hook when namespaces cannot be made.

``netns`` mode: one namespace per node, each with one veth into a bridge the harness creates in the root namespace,
on a private /24 (10.77.X.0/24, X picked so it is not in use here) that exists only inside this machine. The bridge
holds ``.1`` (the clients, in the root namespace, reach the nodes through it); node i is ``.11 + i``. In each
namespace an nftables table drops, on input, packets from a set of source addresses: dropping ``src -> dst`` is
adding src to dst's set, so one-way loss, full partitions and a bridge node are all the same operation. Only
node-to-node traffic ever matches (the bridge address is never blocked), so clients always reach every node.

Every name carries ``rumor-chaos``, the owner's pid and a random suffix; at start, namespaces and bridges whose owner
pid is gone (a crashed run) are removed. A namespace's deletion takes its veth pair with it.

``hook`` mode: loopback, one port pair per node, and ``POST /v1/debug/partition`` on both sides of each dropped
pair (reapplied after every restart, since the hook's state lives in the process). The hook cannot drop one way
only: it drops datagrams both ways, and refuses the streams its own node opens but not those the peer opens (their
source port tells nothing on loopback). So every drop is made two-way, and the nemesis records the drops that were
really applied: a one-way partition runs as a full one in this mode, and the checkers judge what happened.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import random
import shutil
import socket
import subprocess
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path

PREFIX = "rumor-chaos"
HTTP_PORT = 7000
GOSSIP_PORT = 7946
_NFT_TABLE = "rumor_chaos"
#: `ip netns exec NS` shows the files of /etc/netns/NS/ to what it runs in place of /etc's (hosts, resolv.conf)
ETC_NETNS = Path("/etc/netns")

Drops = frozenset[tuple[str, str]]  # (src, dst): dst never receives a packet from src


class NetworkSetupError(RuntimeError):
    """Namespaces could not be made (not root, no `ip`/`nft`, ...): the caller falls back to hook mode."""


def _run(*argv: str, stdin: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=20)
    if check and result.returncode != 0:
        raise NetworkSetupError(f"{' '.join(argv)}: {result.stderr.strip() or result.returncode}")
    return result


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale() -> list[str]:
    """Namespaces (and the node processes still inside them) and bridges left by runs whose process is gone;
    returns what was removed."""
    removed: list[str] = []
    if shutil.which("ip") is None:
        return removed
    for line in _run("ip", "netns", "list", check=False).stdout.splitlines():
        name = line.split()[0] if line.split() else ""
        parts = name.split("-")
        if name.startswith(PREFIX + "-") and len(parts) >= 4 and parts[2].isdigit() and not _pid_alive(int(parts[2])):
            for pid in _run("ip", "netns", "pids", name, check=False).stdout.split():
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(pid), 9)  # a node the crashed run left behind, inside the namespace it made
            _run("ip", "netns", "del", name, check=False)
            removed.append(name)
    for folder in ETC_NETNS.glob(PREFIX + "-*") if ETC_NETNS.is_dir() else []:
        parts = folder.name.split("-")
        if len(parts) >= 4 and parts[2].isdigit() and not _pid_alive(int(parts[2])):
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(str(folder))
    for line in _run("ip", "-o", "link", "show", "type", "bridge", check=False).stdout.splitlines():
        if f"alias {PREFIX}:" not in line:
            continue
        dev = line.split(":")[1].strip().split("@")[0]
        owner = line.split(f"alias {PREFIX}:")[1].split()[0]
        if owner.isdigit() and not _pid_alive(int(owner)):
            _run("ip", "link", "del", dev, check=False)
            removed.append(dev)
    return removed


class NetnsNetwork:
    mode = "netns"

    def __init__(self, nodes: list[str], rng: random.Random) -> None:
        self.nodes = list(nodes)
        suffix = f"{os.getpid()}-{rng.randrange(16**4):04x}"
        self.tag = f"{rng.randrange(16**5):05x}"
        self.namespaces = {n: f"{PREFIX}-{suffix}-{n}" for n in nodes}
        self.bridge = f"rc{self.tag}br"
        self.subnet = self._free_subnet(rng)
        base = self.subnet.network_address
        self.gateway = str(base + 1)
        self.hosts = {n: str(base + 11 + i) for i, n in enumerate(nodes)}
        self._made: list[str] = []
        self._etc: list[Path] = []
        self.drops: Drops = frozenset()

    @staticmethod
    def _free_subnet(rng: random.Random) -> ipaddress.IPv4Network:
        used = _run("ip", "-o", "-4", "addr", "show", check=False).stdout
        for third in rng.sample(range(1, 255), 254):
            net = ipaddress.IPv4Network(f"10.77.{third}.0/24")
            if f"10.77.{third}." not in used:
                return net
        raise NetworkSetupError("no free 10.77.X.0/24 subnet")

    def http_addr(self, node: str) -> str:
        return f"{self.hosts[node]}:{HTTP_PORT}"

    def gossip_addr(self, node: str) -> str:
        return f"{self.hosts[node]}:{GOSSIP_PORT}"

    def command(self, node: str, argv: list[str]) -> list[str]:
        """``ip netns exec`` execs in place: the child's pid is the node's, so signals reach it directly."""
        return ["ip", "netns", "exec", self.namespaces[node], *argv]

    def setup(self) -> None:
        if os.geteuid() != 0 or shutil.which("ip") is None or shutil.which("nft") is None:
            raise NetworkSetupError("network namespaces need root, `ip` and `nft`")
        try:
            _run("ip", "link", "add", self.bridge, "type", "bridge")
            self._made.append(self.bridge)
            _run("ip", "link", "set", "dev", self.bridge, "alias", f"{PREFIX}:{os.getpid()}")
            _run("ip", "addr", "add", f"{self.gateway}/24", "dev", self.bridge)
            _run("ip", "link", "set", self.bridge, "up")
            for i, node in enumerate(self.nodes):
                self._setup_node(i, node)
        except BaseException:
            self.teardown()
            raise

    def _setup_node(self, i: int, node: str) -> None:
        ns, outside, inside = self.namespaces[node], f"rc{self.tag}v{i}", f"rc{self.tag}p{i}"
        _run("ip", "netns", "add", ns)
        self._made.append(ns)
        _run("ip", "link", "add", outside, "type", "veth", "peer", "name", inside)
        _run("ip", "link", "set", inside, "netns", ns)
        _run("ip", "link", "set", outside, "master", self.bridge)
        _run("ip", "link", "set", outside, "up")
        _run("ip", "-n", ns, "addr", "add", f"{self.hosts[node]}/24", "dev", inside)
        _run("ip", "-n", ns, "link", "set", inside, "up")
        _run("ip", "-n", ns, "link", "set", "lo", "up")
        _run("ip", "netns", "exec", ns, "nft", "-f", "-", stdin=(
            f"table inet {_NFT_TABLE} {{\n"
            "  set blocked_in { type ipv4_addr; }\n"
            "  chain input { type filter hook input priority 0; policy accept; ip saddr @blocked_in drop; }\n"
            "}\n"))

    def write_hosts(self, names: dict[str, list[str]]) -> None:
        """An /etc/hosts of its own for each namespace (name -> addresses, a line each, plus localhost), so the
        system resolver of the processes started in it (`command`) answers those names with every address, as DNS
        answers a Kubernetes headless Service; no DNS server needed. Removed by `teardown`."""
        lines = ["127.0.0.1 localhost", "::1 localhost"]
        lines += [f"{address} {name}" for name, addresses in names.items() for address in addresses]
        for ns in self.namespaces.values():
            folder = ETC_NETNS / ns
            folder.mkdir(parents=True, exist_ok=True)
            self._etc.append(folder)
            (folder / "hosts").write_text("\n".join(lines) + "\n")

    async def apply(self, drops: Iterable[tuple[str, str]]) -> None:
        """Replaces every drop rule at once, per namespace (each namespace's update is atomic)."""
        self.drops = frozenset(drops)
        for node, ns in self.namespaces.items():
            sources = sorted(self.hosts[src] for src, dst in self.drops if dst == node)
            script = f"flush set inet {_NFT_TABLE} blocked_in\n"
            if sources:
                script += f"add element inet {_NFT_TABLE} blocked_in {{ {', '.join(sources)} }}\n"
            _run("ip", "netns", "exec", ns, "nft", "-f", "-", stdin=script)

    async def node_started(self, node: str) -> None:
        """Rules live in the namespace: nothing to redo after a restart."""

    def teardown(self) -> None:
        for name in reversed(self._made):
            if name == self.bridge:
                _run("ip", "link", "del", name, check=False)
            else:
                _run("ip", "netns", "del", name, check=False)
        self._made.clear()
        for folder in self._etc:
            shutil.rmtree(folder, ignore_errors=True)
        self._etc.clear()


def _free_port() -> int:
    with socket.socket() as tcp:
        tcp.bind(("127.0.0.1", 0))
        port = int(tcp.getsockname()[1])
    with socket.socket(type=socket.SOCK_DGRAM) as udp, contextlib.suppress(OSError):
        udp.bind(("127.0.0.1", port))
    return port


BlockSender = Callable[[str, list[str]], Awaitable[None]]


class HookNetwork:
    mode = "hook"

    def __init__(self, nodes: list[str]) -> None:
        self.nodes = list(nodes)
        self.ports = {n: (_free_port(), _free_port()) for n in nodes}
        self.drops: Drops = frozenset()
        self.send_block: BlockSender | None = None  # set by the cluster: POST /v1/debug/partition on one node

    def http_addr(self, node: str) -> str:
        return f"127.0.0.1:{self.ports[node][0]}"

    def gossip_addr(self, node: str) -> str:
        return f"127.0.0.1:{self.ports[node][1]}"

    def command(self, node: str, argv: list[str]) -> list[str]:
        return [*argv, "--enable-fault-injection"]

    def setup(self) -> None:
        pass

    def blocked_by(self, node: str) -> list[str]:
        return sorted(src for src, dst in self.drops if dst == node)

    async def apply(self, drops: Iterable[tuple[str, str]]) -> None:
        """Blocks each pair both ways (see the module docstring); ``drops`` afterwards holds what is in force."""
        planned = frozenset(drops)
        self.drops = planned | {(dst, src) for src, dst in planned}
        for node in self.nodes:
            await self.node_started(node)

    async def node_started(self, node: str) -> None:
        if self.send_block is not None:
            await self.send_block(node, self.blocked_by(node))

    def teardown(self) -> None:
        pass


Network = NetnsNetwork | HookNetwork


def make_network(nodes: list[str], rng: random.Random, mode: str = "auto") -> Network:
    """``auto``: namespaces when they can be made, else the hook."""
    if mode in ("auto", "netns"):
        remove_stale()
        network = NetnsNetwork(nodes, rng) if shutil.which("ip") else None
        try:
            if network is None:
                raise NetworkSetupError("no `ip` command")
            network.setup()
            return network
        except NetworkSetupError:
            if mode == "netns":
                raise
    return HookNetwork(nodes)
