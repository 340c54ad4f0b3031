"""Node configuration: one frozen, documented dataclass, filled from flags > RUMOR_* environment > TOML file > defaults.

The gossip-related fields (gossip address, seeds, cluster key, timing preset, fault injection) are read by
`server.cluster`, which builds the gossip side of a node from them.
"""

from __future__ import annotations

import dataclasses
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rumor.gossip.address import AddressError, parse_address
from rumor.gossip.clock import Address
from rumor.server.advertise import check_advertising
from rumor.server.errors import ConfigError
from rumor.server.tls import check_server_options

MIB = 1024 * 1024
TIMING_PRESETS = ("lan", "wan", "local")
LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMATS = ("text", "json")
#: CRDT encodings a node can write (`crdt.set_write_version`)
WIRE_VERSIONS = (1, 2)


@dataclass(frozen=True)
class ServerConfig:
    """Everything a node needs to start. Units are in the field names."""

    #: Replica id used in every dot this node creates. None = derived once and persisted in the data dir.
    node_id: str | None = None
    #: host:port of the HTTP API (`gossip.address` syntax: [host]:port for IPv6). Loopback by default: exposing a
    #: node is a deliberate act.
    http_addr: str = "127.0.0.1:7000"
    #: host:port for gossip (UDP packets + TCP streams), used by the replication layer.
    gossip_addr: str = "127.0.0.1:7946"
    #: gossip addresses of nodes to join through; a host may be a DNS name with several addresses (each is tried,
    #: and names are resolved again on every join attempt: `gossip.seed_resolver`).
    seeds: tuple[str, ...] = ()
    #: host or host:port other nodes reach this node's gossip at, when not the bound one (NAT, containers, a bind to
    #: 0.0.0.0); an IP address. Its host is also the published API host. None: the bound address (`server.advertise`).
    advertise_addr: str | None = None
    #: host or host:port clients should use for the API (a name is fine), when neither the bound API address nor
    #: advertise_addr's host with the bound API port is right. None: derived (`server.advertise`).
    advertise_http_addr: str | None = None
    #: PEM certificate (chain) and unencrypted private key: the API serves HTTPS only. None: plain HTTP.
    tls_cert: Path | None = None
    tls_key: Path | None = None
    #: PEM CA certificate(s): with HTTPS, every client must present a certificate this CA signed (mutual TLS).
    tls_ca: Path | None = None
    #: where the SQLite database (WAL) lives.
    data_dir: Path = Path("rumor-data")
    #: shared secret that encrypts gossip (None = plaintext gossip).
    cluster_key: str | None = None
    #: bearer token required on every API request except /health (None = no auth).
    api_token: str | None = None
    #: gossip timing preset: lan, wan or local (fast timers for tests and demos).
    timing: str = "lan"
    #: added to the physical clock before it feeds the HLC: lets tests simulate skewed nodes.
    clock_offset_ms: int = 0
    #: requests with a larger body get 413 before anything is decoded.
    max_body_bytes: int = MIB
    #: a connection that has not sent a complete request head (request line and headers) this long after opening,
    #: or after the first byte of its next request, is closed (slow clients must not hold connections).
    http_header_timeout_s: float = 10.0
    #: keep everything in memory: no durability at all (tests, demos).
    in_memory: bool = False
    #: how often the background checkpointer folds logged deltas of dirty keys into full states.
    checkpoint_interval_s: float = 0.25
    #: at most this many dirty keys are checkpointed per round, bounding each round's work (and so how long it
    #: holds the event loop: 256 keys once a second show up as 12 ms stalls in PUT p99; 64 four times a second
    #: folds as many keys in small steps).
    checkpoint_batch_keys: int = 64
    #: bounds the log, and so how much a restart replays: a key whose checkpointed state is big is folded again only
    #: once the deltas logged for it since add up to half that state (each fold re-encodes the whole state on the
    #: event loop), or once its oldest unfolded record is this many records behind the newest; and while the log
    #: spans more than this, each round folds four times `checkpoint_batch_keys`.
    checkpoint_max_log_records: int = 100_000
    #: decoded CRDT states kept in memory, by an estimate of their size (`server.state_cache`): past it the least
    #: recently used states that are on disk are dropped to their stored bytes and decoded again when next used.
    state_cache_bytes: int = 256 * MIB
    #: how many op_id -> result entries are kept for retried requests.
    op_id_retention: int = 10_000
    #: a counter increment made with an op_id is kept apart, keyed by the op, so that a retry on any node counts once
    #: (`crdt.counter_ops`); once this old it folds into the plain count, and a retry after that counts again.
    op_fold_after_s: float = 600.0
    #: and a counter keeps at most this many such increments: past it, the oldest fold early (bounds its state).
    op_fold_keep: int = 1000
    #: how often the node folds what is due (each round a bounded number of keys, in one group commit).
    op_fold_interval_s: float = 5.0
    #: a served node's full garbage collections (`server.collector`): one every this many seconds, none otherwise
    #: (0: never). They reclaim the rare cyclic garbage that outlived young collections, holding the loop meanwhile.
    gc_full_interval_s: float = 3600.0
    #: adds POST /v1/debug/partition (cut this node off from chosen peers). Demos and tests only; off by default.
    enable_fault_injection: bool = False
    #: the lowest level logged: debug, info, warning or error.
    log_level: str = "info"
    #: text (one human line a record) or json (one JSON object a line, for log shippers).
    log_format: str = "text"
    #: log one line per HTTP request (method, path, status, duration): off by default, it costs a write a request.
    access_log: bool = False
    #: the CRDT encoding this node writes (it reads both): 2, or 1 while a cluster is upgraded from the previous
    #: release, whose nodes read only 1 (README, "Upgrading"); with 1, counter increments are not op-keyed.
    wire_version: int = 2

    def __post_init__(self) -> None:
        config_address(self.http_addr, "http_addr")
        config_address(self.gossip_addr, "gossip_addr")
        for seed in self.seeds:
            config_address(seed, "seeds")
        check_advertising(config_address(self.gossip_addr, "gossip_addr"), self.advertise_addr,
                          self.advertise_http_addr)
        check_server_options(self.tls_cert, self.tls_key, self.tls_ca)
        if self.timing not in TIMING_PRESETS:
            raise ConfigError(f"timing must be one of {', '.join(TIMING_PRESETS)}, got {self.timing!r}")
        if self.max_body_bytes < 1:
            raise ConfigError("max_body_bytes must be >= 1")
        if not self.http_header_timeout_s > 0:
            raise ConfigError("http_header_timeout_s must be > 0")
        if self.checkpoint_interval_s <= 0 or self.checkpoint_batch_keys < 1 or self.op_id_retention < 0 \
                or self.checkpoint_max_log_records < 1:
            raise ConfigError("checkpoint_interval_s > 0, checkpoint_batch_keys >= 1, op_id_retention >= 0, "
                              "checkpoint_max_log_records >= 1")
        if self.state_cache_bytes < 0:
            raise ConfigError("state_cache_bytes must be >= 0")
        if not self.gc_full_interval_s >= 0:
            raise ConfigError("gc_full_interval_s must be >= 0 (0: never)")
        if self.wire_version not in WIRE_VERSIONS:
            raise ConfigError(f"wire_version must be one of {WIRE_VERSIONS}, got {self.wire_version!r}")
        if not (self.op_fold_after_s >= 0 and self.op_fold_keep >= 0 and self.op_fold_interval_s > 0):
            raise ConfigError("op_fold_after_s >= 0, op_fold_keep >= 0 and op_fold_interval_s > 0")
        if self.log_level not in LOG_LEVELS or self.log_format not in LOG_FORMATS:
            raise ConfigError(f"log_level must be one of {', '.join(LOG_LEVELS)} and log_format one of "
                              f"{', '.join(LOG_FORMATS)}, got {self.log_level!r} and {self.log_format!r}")
        if self.node_id is not None and not (0 < len(self.node_id) <= 128):
            raise ConfigError("node_id must be 1..128 characters")

    @property
    def http_host_port(self) -> Address:
        return config_address(self.http_addr, "http_addr")


def config_address(value: str, name: str) -> Address:
    """`gossip.address.parse_address` (the one host:port syntax) for config field `name`; the port is required."""
    try:
        return parse_address(value, name)
    except AddressError as exc:
        raise ConfigError(str(exc)) from None


_FIELDS = {f.name: f for f in dataclasses.fields(ServerConfig)}
_PATH_FIELDS = frozenset({"data_dir", "tls_cert", "tls_key", "tls_ca"})


def _coerce(name: str, raw: Any) -> Any:
    """Turns a string (env) or TOML value into the field's type."""
    kind = _FIELDS[name].type
    try:
        if name == "seeds":
            if isinstance(raw, str):
                return tuple(s.strip() for s in raw.split(",") if s.strip())
            if isinstance(raw, list | tuple) and all(isinstance(s, str) for s in raw):
                return tuple(raw)
            raise TypeError("a list of host:port strings")
        if name in _PATH_FIELDS:
            if not isinstance(raw, str | Path) or not str(raw):
                raise TypeError("a path")
            return Path(raw)
        if kind == "bool":
            if isinstance(raw, bool):
                return raw
            if isinstance(raw, str) and raw.lower() in {"1", "true", "yes", "on", "0", "false", "no", "off", ""}:
                return raw.lower() in {"1", "true", "yes", "on"}
            raise TypeError("a boolean")
        if kind == "int":
            if isinstance(raw, bool):
                raise TypeError("an integer")
            return int(raw)
        if kind == "float":
            return float(raw)
        if not isinstance(raw, str):
            raise TypeError("a string")
        return raw
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{name}: cannot use {raw!r} ({exc})") from exc


def env_name(field_name: str) -> str:
    return "RUMOR_" + field_name.upper()


def load_config(
    flags: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
    toml_path: Path | None = None,
) -> ServerConfig:
    """Merges the sources, highest precedence first: flags (None = not given), RUMOR_* env, TOML file, defaults.

    The TOML file is `toml_path` or else `$RUMOR_CONFIG`; its top-level keys are the field names.
    """
    flags = flags or {}
    env = env or {}
    values: dict[str, Any] = {}
    path = toml_path or (Path(env["RUMOR_CONFIG"]) if env.get("RUMOR_CONFIG") else None)
    if path is not None:
        try:
            document = tomllib.loads(path.read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"cannot read config file {path}: {exc}") from exc
        unknown = set(document) - set(_FIELDS)
        if unknown:
            raise ConfigError(f"unknown key(s) in {path}: {', '.join(sorted(unknown))}")
        values.update({k: _coerce(k, v) for k, v in document.items()})
    for name in _FIELDS:
        if env_name(name) in env:
            values[name] = _coerce(name, env[env_name(name)])
    for name, raw in flags.items():
        if raw is None:
            continue
        if name not in _FIELDS:
            raise ConfigError(f"unknown option {name!r}")
        values[name] = _coerce(name, raw)
    return ServerConfig(**values)


def with_overrides(config: ServerConfig, **changes: Any) -> ServerConfig:
    """A copy with some fields replaced (tests use it to set a port or a data dir)."""
    return dataclasses.replace(config, **changes)


__all__ = ["MIB", "TIMING_PRESETS", "ServerConfig", "config_address", "env_name", "load_config", "with_overrides"]
