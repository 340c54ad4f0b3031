"""The chaos cluster: N `rumor serve` processes at fixed addresses (one namespace each, or loopback), started,
killed (SIGKILL), paused (SIGSTOP/SIGCONT) and restarted on the same data dir, possibly with a skewed clock.

Unlike `server.local_cluster`, addresses are fixed before any node starts (every node joins all the others, so nodes
may start in any order, as after a whole-cluster crash), and each node's state (up, down, paused) is tracked so the
nemesis never leaves one stopped. Everything it started is stopped by `close`, which is also safe to call twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from pathlib import Path

import aiohttp

from bench.chaos.netns import HookNetwork, Network

STARTUP_TIMEOUT_S = 30.0


class NodeStartError(RuntimeError):
    def __init__(self, name: str, detail: str, log_tail: str) -> None:
        super().__init__(f"node {name} did not start: {detail}\n{log_tail}")


class ChaosNode:
    def __init__(self, name: str, network: Network, base_dir: Path) -> None:
        self.name = name
        self.network = network
        self.data_dir = base_dir / name
        self.log_path = base_dir / f"{name}.log"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.proc: asyncio.subprocess.Process | None = None
        self.paused = False
        self.clock_offset_ms = 0
        self.starts = 0

    @property
    def http_url(self) -> str:
        return f"http://{self.network.http_addr(self.name)}"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.running and self.proc is not None else None

    async def start(self, seeds: list[str], preset: str) -> None:
        if self.running:
            return
        argv = [sys.executable, "-m", "rumor.server.cli", "serve", "--node-id", self.name,
                "--http-addr", self.network.http_addr(self.name), "--gossip-addr", self.network.gossip_addr(self.name),
                "--data-dir", str(self.data_dir), "--preset", preset,
                *(a for seed in seeds for a in ("--join", seed))]
        if self.clock_offset_ms:
            argv += ["--clock-offset-ms", str(self.clock_offset_ms)]
        with self.log_path.open("ab") as log:
            log.write(f"--- start {self.starts} offset_ms={self.clock_offset_ms}\n".encode())
            log.flush()
            self.proc = await asyncio.create_subprocess_exec(
                *self.network.command(self.name, argv), stdout=asyncio.subprocess.PIPE, stderr=log,
                stdin=asyncio.subprocess.DEVNULL, start_new_session=True,
                env={**os.environ, "PYTHONUNBUFFERED": "1"}, cwd=str(Path(__file__).resolve().parents[2]))
        self.starts += 1
        self.paused = False
        assert self.proc.stdout is not None
        try:
            line = await asyncio.wait_for(self.proc.stdout.readline(), STARTUP_TIMEOUT_S)
        except TimeoutError:
            await self.kill()
            raise NodeStartError(self.name, "no 'listening' line in time", self.log_tail()) from None
        if b"listening" not in line:
            await self.kill()
            raise NodeStartError(self.name, f"exited with {self.proc.returncode}", self.log_tail())

    def signal(self, signum: int) -> None:
        if self.proc is not None and self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signum)

    async def kill(self) -> None:
        self.signal(signal.SIGKILL)
        self.paused = False
        if self.proc is not None:
            await self.proc.wait()

    async def terminate(self, timeout_s: float = 10.0) -> None:
        if not self.running:
            return
        self.resume()
        self.signal(signal.SIGTERM)
        assert self.proc is not None
        try:
            await asyncio.wait_for(self.proc.wait(), timeout_s)
        except TimeoutError:
            await self.kill()

    def pause(self) -> None:
        self.signal(signal.SIGSTOP)
        self.paused = True

    def resume(self) -> None:
        self.signal(signal.SIGCONT)
        self.paused = False

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(f"  [{self.name}] {line}" for line in text[-lines:])


class ChaosCluster:
    def __init__(self, names: list[str], network: Network, base_dir: Path, preset: str = "local") -> None:
        self.network = network
        self.preset = preset
        self.nodes = {name: ChaosNode(name, network, base_dir) for name in names}
        self._session: aiohttp.ClientSession | None = None
        if isinstance(network, HookNetwork):
            network.send_block = self._send_block

    def __getitem__(self, name: str) -> ChaosNode:
        return self.nodes[name]

    @property
    def names(self) -> list[str]:
        return list(self.nodes)

    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=3.0))
        return self._session

    def seeds_for(self, name: str) -> list[str]:
        return [self.network.gossip_addr(other) for other in self.nodes if other != name]

    async def start_node(self, name: str) -> None:
        await self.nodes[name].start(self.seeds_for(name), self.preset)
        await self.network.node_started(name)

    async def start_all(self) -> None:
        await asyncio.gather(*(self.start_node(name) for name in self.nodes))

    async def restart(self, name: str, *, graceful: bool = False) -> None:
        node = self.nodes[name]
        await (node.terminate() if graceful else node.kill())
        await self.start_node(name)

    async def _send_block(self, name: str, blocked: list[str]) -> None:
        node = self.nodes[name]
        if not node.running or node.paused:
            return  # applied again when it starts
        with contextlib.suppress(aiohttp.ClientError, TimeoutError, OSError):
            async with self.session().post(f"{node.http_url}/v1/debug/partition", json={"block": blocked}) as resp:
                await resp.read()

    async def members(self, name: str) -> dict[str, str]:
        """member id -> status as ``name`` sees it."""
        async with self.session().get(f"{self.nodes[name].http_url}/v1/members") as resp:
            body = await resp.json()
        return {m["id"]: m["status"] for m in body["members"]}

    async def wait_members(self, timeout_s: float) -> float:
        """Until every node sees every node alive; returns the seconds it took (raises TimeoutError)."""
        started = time.monotonic()
        while True:
            try:
                views = await asyncio.gather(*(self.members(n) for n in self.nodes))
                if all(view.get(other) == "alive" for view in views for other in self.nodes):
                    return time.monotonic() - started
            except (aiohttp.ClientError, TimeoutError, OSError, ValueError, KeyError):
                pass
            if time.monotonic() - started > timeout_s:
                raise TimeoutError(f"members not all alive after {timeout_s:.0f}s")
            await asyncio.sleep(0.2)

    async def close(self) -> None:
        """Stops every process it started (SIGCONT first, then SIGKILL: nothing survives the harness)."""
        for node in self.nodes.values():
            node.resume()
            node.signal(signal.SIGKILL)
        for node in self.nodes.values():
            if node.proc is not None:
                with contextlib.suppress(ProcessLookupError):
                    await asyncio.wait_for(node.proc.wait(), 10)
        if self._session is not None:
            await self._session.close()
            self._session = None

    def kill_now(self) -> None:
        """Synchronous last resort (atexit): SIGKILL every child still running."""
        for node in self.nodes.values():
            node.resume()
            node.signal(signal.SIGKILL)

    def logs(self) -> str:
        return "\n".join(node.log_tail() for node in self.nodes.values())
