"""Every tunable of the membership protocol in one frozen, validated place.

Defaults follow HashiCorp memberlist's ``DefaultLANConfig`` (proven over years of Consul/Nomad clusters) and the
Lifeguard paper (Dadgar et al., 2018). The presets differ the way memberlist's do: ``lan()`` for a datacenter,
``wan()`` for high-latency links, ``local()`` for a loopback/test cluster where everything is fast.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from typing import Any

from rumor.gossip.errors import ConfigError


@dataclass(frozen=True, slots=True)
class Config:
    # -- failure detection ----------------------------------------------------------------------------------------
    probe_interval_s: float = 1.0
    """One member is probed per period. Lower detects failures sooner at the cost of more traffic."""
    probe_timeout_s: float = 0.5
    """How long to wait for a direct ack before asking others; should cover the 99th percentile RTT."""
    indirect_checks: int = 3
    """How many relays a failed direct probe asks to ping the target on our behalf (SWIM's k)."""
    stream_fallback_probe: bool = True
    """Also probe over a stream when the direct ping fails: survives networks that drop only datagrams."""
    # -- suspicion (Lifeguard) ------------------------------------------------------------------------------------
    suspicion_mult: int = 4
    """Minimum suspicion timeout = suspicion_mult * max(1, log10 N) * probe_interval_s."""
    suspicion_max_timeout_mult: int = 6
    """Maximum suspicion timeout = this * the minimum; independent confirmations shrink it toward the minimum."""
    awareness_max_multiplier: int = 8
    """Local health: our own probe interval/timeout stretch by up to this factor when we look unhealthy."""
    # -- dissemination --------------------------------------------------------------------------------------------
    retransmit_mult: int = 4
    """Each update is sent retransmit_mult * ceil(log10(N + 1)) times before it is dropped from the queue."""
    gossip_interval_s: float = 0.2
    """How often queued updates are pushed to random members (besides piggybacking on probes)."""
    gossip_nodes: int = 3
    """How many random members each gossip round goes to."""
    gossip_to_the_dead_s: float = 30.0
    """Keep gossiping to a member this long after it died or left, so it learns it and can refute."""
    push_pull_interval_s: float = 30.0
    """Full-table exchange with one random member; scaled up with log2 N beyond 32 members. 0 disables."""
    reconnect_interval_s: float = 30.0
    """Attempt a push-pull with one random dead member this often, so healed partitions merge. 0 disables."""
    dead_reap_after_s: float = 3600.0
    """Forget a dead or left member this long after its status changed."""
    # -- sizes, streams and joins ---------------------------------------------------------------------------------
    max_packet_bytes: int = 1400
    """No datagram we build ever exceeds this; fits a 1500-byte MTU with room for IP/UDP and sealing overhead."""
    max_stream_bytes: int = 4 * 1024 * 1024
    """Largest stream message (push-pull tables, app requests) we build or accept."""
    max_meta_bytes: int = 512
    """Largest member metadata blob, so an alive message always fits a packet."""
    stream_timeout_s: float = 10.0
    """Deadline for a stream request (push-pull, stream probe, join)."""
    join_retry_base_s: float = 1.0
    """First retry delay of a failed join; doubles per attempt."""
    join_max_attempts: int = 5
    """A join gives up after this many rounds of contacting every seed."""

    def __post_init__(self) -> None:
        positive = ("probe_interval_s", "probe_timeout_s", "gossip_interval_s", "stream_timeout_s",
                    "join_retry_base_s", "dead_reap_after_s")
        for name in positive:
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
                raise ConfigError(name, value, "must be a finite number > 0")
        non_negative = ("gossip_to_the_dead_s", "push_pull_interval_s", "reconnect_interval_s")
        for name in non_negative:
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value) and value >= 0):
                raise ConfigError(name, value, "must be a finite number >= 0")
        minimums = {"indirect_checks": 0, "suspicion_mult": 1, "suspicion_max_timeout_mult": 1,
                    "awareness_max_multiplier": 1, "retransmit_mult": 1, "gossip_nodes": 0,
                    "max_packet_bytes": 576, "max_stream_bytes": 65536, "max_meta_bytes": 0,
                    "join_max_attempts": 1}
        for name, low in minimums.items():
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ConfigError(name, value, f"must be an integer >= {low}")
        if self.max_packet_bytes > 65507:
            raise ConfigError("max_packet_bytes", self.max_packet_bytes, "a UDP datagram carries at most 65507 bytes")
        if self.probe_timeout_s >= self.probe_interval_s:
            raise ConfigError("probe_timeout_s", self.probe_timeout_s,
                              "must be shorter than probe_interval_s to leave time for indirect probes")
        if self.max_meta_bytes > self.max_packet_bytes // 2:
            raise ConfigError("max_meta_bytes", self.max_meta_bytes, "must leave half a packet for the rest")

    @classmethod
    def lan(cls, **overrides: Any) -> Config:
        """memberlist's DefaultLANConfig: sub-millisecond RTTs, detection in a few seconds."""
        return replace(cls(), **overrides)

    @classmethod
    def wan(cls, **overrides: Any) -> Config:
        """memberlist's DefaultWANConfig: slower probes and longer suspicion for lossy high-latency links."""
        base = cls(probe_interval_s=5.0, probe_timeout_s=3.0, suspicion_mult=6, push_pull_interval_s=60.0,
                   gossip_interval_s=0.5, gossip_nodes=4, gossip_to_the_dead_s=60.0, stream_timeout_s=30.0,
                   reconnect_interval_s=60.0)
        return replace(base, **overrides)

    @classmethod
    def local(cls, **overrides: Any) -> Config:
        """memberlist's DefaultLocalConfig: loopback clusters and tests, where everything answers fast."""
        base = cls(probe_interval_s=1.0, probe_timeout_s=0.2, indirect_checks=1, suspicion_mult=3,
                   retransmit_mult=2, push_pull_interval_s=15.0, gossip_to_the_dead_s=15.0, stream_timeout_s=1.0,
                   reconnect_interval_s=10.0)
        return replace(base, **overrides)

    def describe(self) -> dict[str, Any]:
        """Plain dict of every field, for logs and benchmark output."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


def suspicion_timeout_s(config: Config, n: int) -> float:
    """The minimum suspicion timeout for a cluster of ``n``: grows with log10 N so detection stays accurate."""
    node_scale = max(1.0, math.log10(max(1, n)))
    return config.suspicion_mult * node_scale * config.probe_interval_s


def retransmit_limit(retransmit_mult: int, n: int) -> int:
    """How many times each update is sent: enough for it to reach all N members with high probability."""
    return retransmit_mult * math.ceil(math.log10(n + 1))


def push_pull_scale(interval_s: float, n: int, threshold: int = 32) -> float:
    """Stretch the push-pull interval beyond ``threshold`` members so full-table traffic stays bounded."""
    if n <= threshold:
        return interval_s
    return interval_s * (math.ceil(math.log2(n) - math.log2(threshold)) + 1.0)
