"""A cluster of real `rumor serve` processes on loopback: the harness behind `rumor demo`, the multi-process tests
and the replication bench.

Every node is a separate process (so a kill -9 is a real crash) started on free ports (port 0; the node prints the
ports it bound, and the others join the first one's gossip address). Data dirs and logs live in one base directory;
children's stdout/stderr go to a log file per node, never to the terminal. Waits are polls of the HTTP API with a
deadline (there is no cross-process event to await); each raises `ClusterTimeoutError` naming what it waited for.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from rumor.server.client import RumorClient, RumorHTTPError
from rumor.server.errors import ServerError

STARTUP_TIMEOUT_S = 20.0
POLL_INTERVAL_S = 0.01
_LISTENING = re.compile(r"node (\S+) listening on (https?://\S+) gossip (\S+)")


class ClusterTimeoutError(ServerError, TimeoutError):
    """A local cluster did not reach the awaited state in time; ``what`` says which."""

    def __init__(self, what: str, timeout_s: float) -> None:
        super().__init__(f"timed out after {timeout_s:.1f}s waiting for {what}")
        self.what = what
        self.timeout_s = timeout_s


class NodeStartError(ServerError, RuntimeError):
    """A node process exited or stayed silent instead of printing its 'listening' line."""

    def __init__(self, name: str, detail: str, log_tail: str) -> None:
        super().__init__(f"node {name} did not start: {detail}\n{log_tail}")
        self.name = name
        self.log_tail = log_tail


class NodeProcess:
    """One `rumor serve` child. ``http_url``/``gossip_addr`` are known once started; restarts reuse both ports."""

    def __init__(self, name: str, data_dir: Path, log_path: Path, extra_args: Sequence[str],
                 api_token: str | None = None, startup_timeout_s: float = STARTUP_TIMEOUT_S) -> None:
        self.name = name
        #: how long a start may take to print its 'listening' line (recovering a big data dir takes a while)
        self.startup_timeout_s = startup_timeout_s
        self.api_token = api_token
        self.data_dir = data_dir
        self.log_path = log_path
        self.extra_args = list(extra_args)
        self.proc: asyncio.subprocess.Process | None = None
        self.http_url = ""
        self.gossip_addr = ""
        self.client: RumorClient | None = None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    async def start(self, join: Sequence[str], preset: str, fault_injection: bool) -> None:
        http = self.http_url.removeprefix("http://") or "127.0.0.1:0"
        args = [sys.executable, "-m", "rumor.server.cli", "serve", "--node-id", self.name, "--http-addr", http,
                "--gossip-addr", self.gossip_addr or "127.0.0.1:0", "--data-dir", str(self.data_dir),
                "--preset", preset, *(a for seed in join for a in ("--join", seed)), *self.extra_args]
        if fault_injection:
            args.append("--enable-fault-injection")
        if self.api_token is not None:
            args += ["--api-token", self.api_token]
        with self.log_path.open("ab") as log:
            self.proc = await asyncio.create_subprocess_exec(
                *args, stdout=asyncio.subprocess.PIPE, stderr=log, stdin=asyncio.subprocess.DEVNULL,
                start_new_session=True,  # Ctrl-C reaches the demo only; it stops the children itself, in order
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        assert self.proc.stdout is not None
        try:
            line = await asyncio.wait_for(self.proc.stdout.readline(), self.startup_timeout_s)
        except TimeoutError:
            await self.kill()
            detail = f"no 'listening' line in {self.startup_timeout_s:.0f}s"
            raise NodeStartError(self.name, detail, self.log_tail()) from None
        match = _LISTENING.search(line.decode(errors="replace"))
        if match is None:
            await self.kill()
            raise NodeStartError(self.name, f"exited with {self.proc.returncode}", self.log_tail())
        self.http_url, self.gossip_addr = match.group(2), match.group(3)
        if self.client is None:
            self.client = RumorClient(self.http_url, timeout_s=5.0, token=self.api_token)

    def api(self) -> RumorClient:
        if self.client is None:
            raise NodeStartError(self.name, "not started", "")
        return self.client

    async def kill(self) -> None:
        """kill -9: no leave, no flush."""
        if self.proc is not None and self.proc.returncode is None:
            self.proc.send_signal(signal.SIGKILL)
        if self.proc is not None:
            await self.proc.wait()

    async def terminate(self, timeout_s: float = 10.0) -> None:
        """SIGTERM (graceful leave and flush), then SIGKILL if it takes longer than ``timeout_s``."""
        if self.proc is None or self.proc.returncode is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(self.proc.wait(), timeout_s)
        except TimeoutError:
            await self.kill()

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(f"  [{self.name}] {line}" for line in text[-lines:])

    async def close_client(self) -> None:
        if self.client is not None:
            await self.client.close()
            self.client = None


class LocalCluster:
    """``n`` node processes named n1..nN under ``base_dir``; ``node_args[name]`` adds flags to one node;
    ``api_token`` is every node's ``--api-token`` (and what the cluster's clients send)."""

    def __init__(self, n: int, base_dir: Path, *, preset: str = "local", fault_injection: bool = True,
                 node_args: dict[str, Sequence[str]] | None = None, api_token: str | None = None,
                 startup_timeout_s: float = STARTUP_TIMEOUT_S) -> None:
        if n < 1:
            raise ValueError("a cluster has at least one node")
        self.base_dir = base_dir
        self.preset = preset
        self.fault_injection = fault_injection
        node_args = node_args or {}
        self.nodes = [
            NodeProcess(name, base_dir / name, base_dir / f"{name}.log", node_args.get(name, ()), api_token,
                        startup_timeout_s)
            for name in (f"n{i}" for i in range(1, n + 1))
        ]

    def __getitem__(self, name: str) -> NodeProcess:
        return next(node for node in self.nodes if node.name == name)

    # -- lifecycle -------------------------------------------------------------------------------------------------

    async def start(self) -> None:
        """The first node alone, then the rest in parallel, joining it."""
        first, *rest = self.nodes
        await first.start((), self.preset, self.fault_injection)
        await asyncio.gather(*(node.start((first.gossip_addr,), self.preset, self.fault_injection) for node in rest))

    async def restart(self, name: str) -> None:
        """Start a stopped node again on its ports and data dir, joining the live nodes."""
        seeds = [n.gossip_addr for n in self.nodes if n.running and n.name != name]
        await self[name].start(seeds, self.preset, self.fault_injection)

    async def stop(self) -> None:
        await asyncio.gather(*(node.terminate() for node in self.nodes))
        for node in self.nodes:
            await node.close_client()

    async def __aenter__(self) -> LocalCluster:
        try:
            await self.start()
        except BaseException:
            await self.stop()
            raise
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.stop()

    def logs(self) -> str:
        return "\n".join(node.log_tail() for node in self.nodes)

    # -- views -----------------------------------------------------------------------------------------------------

    async def statuses(self, viewer: str) -> dict[str, str]:
        """member id -> status, as ``viewer`` sees the cluster."""
        _, body = await self[viewer].api().request("GET", "/v1/cluster")
        return {m["id"]: m["status"] for m in body["members"]}

    async def values(self, keys: Sequence[str], names: Sequence[str] | None = None) -> dict[str, dict[str, Any]]:
        """node -> key -> value (None when absent), read from each node concurrently."""
        chosen = [self[n] for n in names] if names is not None else [n for n in self.nodes if n.running]

        async def read(node: NodeProcess) -> dict[str, Any]:
            items = await asyncio.gather(*(node.api().get(key) for key in keys))
            return {key: None if item is None else item["value"] for key, item in zip(keys, items, strict=True)}

        rows = await asyncio.gather(*(read(node) for node in chosen))
        return {node.name: row for node, row in zip(chosen, rows, strict=True)}

    # -- faults ----------------------------------------------------------------------------------------------------

    async def partition(self, *groups: Sequence[str]) -> None:
        """Split the cluster into ``groups`` (lists of node names): each node blocks everyone outside its group."""
        for group in groups:
            outside = [n.name for n in self.nodes if n.name not in group]
            for name in group:
                await self[name].api().request("POST", "/v1/debug/partition", body={"block": outside})

    async def heal(self) -> None:
        for node in self.nodes:
            if node.running:
                await node.api().request("POST", "/v1/debug/partition", body={"block": []})

    # -- waiting ---------------------------------------------------------------------------------------------------

    async def wait_for(self, what: str, check: Callable[[], Awaitable[bool]], timeout_s: float) -> float:
        """Polls ``check`` until it holds; returns the seconds it took. Network errors count as 'not yet'."""
        started = time.monotonic()
        deadline = started + timeout_s
        while True:
            with contextlib.suppress(OSError, RumorHTTPError, TimeoutError):
                if await check():
                    return time.monotonic() - started
            if time.monotonic() >= deadline:
                raise ClusterTimeoutError(what, timeout_s)
            await asyncio.sleep(POLL_INTERVAL_S)

    async def wait_members(self, timeout_s: float = 15.0) -> float:
        """Until every running node sees every running node alive."""
        names = {n.name for n in self.nodes if n.running}

        async def check() -> bool:
            for name in names:
                seen = await self.statuses(name)
                if any(seen.get(other) != "alive" for other in names):
                    return False
            return True

        return await self.wait_for("every node to see every node alive", check, timeout_s)

    async def wait_status(self, viewer: str, member: str, status: str, timeout_s: float = 15.0) -> float:
        return await self.wait_statuses(viewer, {member: status}, timeout_s)

    async def wait_statuses(self, viewer: str, expected: Mapping[str, str], timeout_s: float = 15.0) -> float:
        """Until one view of ``viewer``'s shows every member named in ``expected`` with the status given for it."""
        async def check() -> bool:
            seen = await self.statuses(viewer)
            return all(seen.get(member) == status for member, status in expected.items())

        wanted = ", ".join(f"{member} {status}" for member, status in expected.items())
        return await self.wait_for(f"{viewer} to see {wanted}", check, timeout_s)

    async def wait_converged(self, keys: Sequence[str], timeout_s: float = 15.0,
                             names: Sequence[str] | None = None) -> float:
        """Until the given (default: running) nodes hold identical values for ``keys``."""
        async def check() -> bool:
            rows = list((await self.values(keys, names)).values())
            return all(row == rows[0] for row in rows)

        return await self.wait_for(f"convergence of {', '.join(keys)}", check, timeout_s)


__all__ = ["ClusterTimeoutError", "LocalCluster", "NodeProcess", "NodeStartError"]
