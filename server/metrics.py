"""Prometheus metrics in the text exposition format (version 0.0.4), written here rather than with prometheus-client.

Why not the library: we need three metric kinds (counter, gauge, histogram) with a few labels and one text renderer,
this one short module; the library would be a new runtime dependency for every install and, with its process-global
default registry, would make several in-process nodes (tests, the demo) share counters unless every call site passes
a registry. Here each `Node` owns one `Metrics`.

Some metrics read their values at scrape time from where they are kept (`set_source`): `Node` points `keys` at its
keyspace and `background_failures` at its supervisor's counts; a served node's `server.cluster.Cluster` points
`members`, `gossip_bytes`, `gossip_packets`, `gossip_dropped` (memberlist, transport and fault injection drops, by
reason), `anti_entropy_exchanges` (the replication runtime's sync sessions) and `replication_rejected` (what the
replication core refused from peers, by reason) at the live gossip and replication state. Without a `Cluster` (a
node embedded in a program) those six keep their start values: `members` one alive, the byte and packet counters
zero in each direction, the dropped, exchange and rejection counters no series at all.
"""

from __future__ import annotations

import math
import os
import resource
import time
from bisect import bisect_left
from collections.abc import Callable

from rumor.server.version import PYTHON, VERSION

LabelValues = tuple[str, ...]

DEFAULT_LATENCY_BUCKETS_S = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
#: event-loop lag (`server.loop_lag`): 1 ms..2 s, with bounds at 20 ms and 200 ms (issue 14's p99 and max targets)
LOOP_LAG_BUCKETS_S = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(names: tuple[str, ...], values: LabelValues, extra: str = "") -> str:
    parts = [f'{n}="{_escape(v)}"' for n, v in zip(names, values, strict=True)]
    if extra:
        parts.append(extra)
    return "{" + ",".join(parts) + "}" if parts else ""


def _number(value: float) -> str:
    if isinstance(value, int):
        return str(value)
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(value)


class _Metric:
    kind = ""

    def __init__(self, name: str, help_text: str, labels: tuple[str, ...] = ()) -> None:
        self.name = name
        self.help = help_text
        self.label_names = labels

    def header(self) -> list[str]:
        return [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} {self.kind}"]

    def samples(self) -> list[str]:
        raise NotImplementedError


class Counter(_Metric):
    """Monotonic count per label combination."""

    kind = "counter"

    def __init__(self, name: str, help_text: str, labels: tuple[str, ...] = ()) -> None:
        super().__init__(name, help_text, labels)
        self._values: dict[LabelValues, float] = {} if labels else {(): 0}
        self._source: Callable[[], dict[LabelValues, float]] | None = None
        #: per label combination, the source's last reading and what it counted before it last started over
        self._last_read: dict[LabelValues, float] = {}
        self._before_restarts: dict[LabelValues, float] = {}

    def inc(self, *label_values: str, amount: float = 1) -> None:
        self._values[label_values] = self._values.get(label_values, 0) + amount

    def get(self, *label_values: str) -> float:
        return self._current().get(label_values, 0)

    def set_source(self, source: Callable[[], dict[LabelValues, float]]) -> None:
        """Reads cumulative totals kept elsewhere at scrape time (gossip counters live in the memberlist's stats);
        values counted with `inc` before stay included. A counter never goes down: when a source starts over (the
        component that keeps it was restarted, or replaced by `set_source`), what it had counted is kept."""
        for key, value in self._last_read.items():
            self._before_restarts[key] = self._before_restarts.get(key, 0) + value
        self._last_read = {}
        self._source = source

    def _current(self) -> dict[LabelValues, float]:
        if self._source is None and not self._before_restarts:
            return self._values
        merged = dict(self._values)
        for key, value in self._before_restarts.items():
            merged[key] = merged.get(key, 0) + value
        for key, value in (self._source() if self._source is not None else {}).items():
            last = self._last_read.get(key, 0)
            if value < last:  # the source started over: keep what it had counted
                self._before_restarts[key] = self._before_restarts.get(key, 0) + last
                merged[key] = merged.get(key, 0) + last
            self._last_read[key] = value
            merged[key] = merged.get(key, 0) + value
        return merged

    def samples(self) -> list[str]:
        return [f"{self.name}{_labels(self.label_names, k)} {_number(v)}" for k, v in sorted(self._current().items())]


class Gauge(_Metric):
    """A value that goes up and down; either set directly or read from a callback at scrape time."""

    kind = "gauge"

    def __init__(self, name: str, help_text: str, labels: tuple[str, ...] = ()) -> None:
        super().__init__(name, help_text, labels)
        self._values: dict[LabelValues, float] = {} if labels else {(): 0}
        self._source: Callable[[], dict[LabelValues, float]] | None = None
        #: per label combination, the source's last reading and what it counted before it last started over
        self._last_read: dict[LabelValues, float] = {}
        self._before_restarts: dict[LabelValues, float] = {}

    def set(self, value: float, *label_values: str) -> None:
        self._values[label_values] = value

    def get(self, *label_values: str) -> float:
        return self._current().get(label_values, 0)

    def set_source(self, source: Callable[[], dict[LabelValues, float]]) -> None:
        """Reads the values at scrape time (e.g. the key count): nothing to keep in sync."""
        self._source = source

    def _current(self) -> dict[LabelValues, float]:
        return self._source() if self._source is not None else self._values

    def samples(self) -> list[str]:
        return [f"{self.name}{_labels(self.label_names, k)} {_number(v)}" for k, v in sorted(self._current().items())]


class Histogram(_Metric):
    """Cumulative buckets, sum and count per label combination."""

    kind = "histogram"

    def __init__(
        self,
        name: str,
        help_text: str,
        labels: tuple[str, ...] = (),
        buckets: tuple[float, ...] = DEFAULT_LATENCY_BUCKETS_S,
    ) -> None:
        super().__init__(name, help_text, labels)
        self.buckets = tuple(sorted(buckets))
        self._series: dict[LabelValues, list[float]] = {}  # per-bucket counts (non-cumulative) + [sum, count]

    def observe(self, value: float, *label_values: str) -> None:
        series = self._series.get(label_values)
        if series is None:
            series = self._series[label_values] = [0.0] * (len(self.buckets) + 3)
        series[bisect_left(self.buckets, value)] += 1
        series[-2] += value
        series[-1] += 1

    def count(self, *label_values: str) -> int:
        series = self._series.get(label_values)
        return int(series[-1]) if series else 0

    def samples(self) -> list[str]:
        lines = []
        for key, series in sorted(self._series.items()):
            cumulative = 0.0
            for bound, n in zip((*self.buckets, math.inf), series, strict=False):
                cumulative += n
                le = 'le="' + _number(float(bound)) + '"'
                lines.append(f"{self.name}_bucket{_labels(self.label_names, key, le)} {int(cumulative)}")
            lines.append(f"{self.name}_sum{_labels(self.label_names, key)} {_number(series[-2])}")
            lines.append(f"{self.name}_count{_labels(self.label_names, key)} {int(series[-1])}")
        return lines


class Metrics:
    """Every metric one node exports. Attribute names are the hooks other layers call."""

    CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

    def __init__(self) -> None:
        self.http_requests = Counter("rumor_http_requests_total", "HTTP requests by route, method and status.",
                                     ("route", "method", "status"))
        self.http_latency = Histogram("rumor_http_request_duration_seconds",
                                      "HTTP request latency by route and method.", ("route", "method"))
        self.build_info = Gauge("rumor_build_info", "Always 1; the labels say what is running.", ("version", "python"))
        self.build_info.set(1, VERSION, PYTHON)
        self.keys = Gauge("rumor_keys", "Keys held by this node (including emptied ones kept for their context).")
        self.storage_commit_latency = Histogram("rumor_storage_commit_duration_seconds",
                                                "Duration of one group commit (one SQLite transaction + fsync).")
        self.storage_commit_records = Counter("rumor_storage_commit_records_total",
                                              "Records (deltas, states, op results) written by group commits.")
        self.checkpoints = Counter("rumor_storage_checkpoints_total", "Full states written by the checkpointer.")
        self.checkpoint_backlog = Gauge("rumor_checkpoint_backlog_keys",
                                        "Keys changed since their last checkpoint (in memory until it is written).")
        self.members = Gauge("rumor_members", "Cluster members by status, as this node sees them.", ("status",))
        self.gossip_bytes = Counter("rumor_gossip_bytes_total", "Gossip bytes sent/received.", ("direction",))
        self.gossip_packets = Counter("rumor_gossip_packets_total", "Gossip packets sent/received.", ("direction",))
        self.gossip_dropped = Counter("rumor_gossip_dropped_packets_total", "Gossip packets dropped, by reason.",
                                      ("reason",))
        self.anti_entropy_exchanges = Counter("rumor_anti_entropy_exchanges_total",
                                              "Anti-entropy exchanges, by result.", ("result",))
        self.replication_rejected = Counter("rumor_replication_rejected_total",
                                            "Replication requests and states from peers refused, by reason.",
                                            ("reason",))
        self.background_failures = Counter("rumor_background_failures_total",
                                           "Failures of background components (restarted or reported), by component.",
                                           ("component",))
        self.loop_lag = Histogram("rumor_event_loop_lag_seconds",
                                  "How late the event loop woke a periodic timer (every 50 ms): its stalls.",
                                  buckets=LOOP_LAG_BUCKETS_S)
        self.loop_lag_max = Gauge("rumor_event_loop_lag_max_seconds", "The largest event-loop lag since start.")
        self.members.set(1, "alive")
        for direction in ("in", "out"):
            self.gossip_bytes.inc(direction, amount=0)
            self.gossip_packets.inc(direction, amount=0)

    def all(self) -> list[_Metric]:
        return [m for m in vars(self).values() if isinstance(m, _Metric)] + PROCESS_METRICS

    def observe_commit(self, seconds: float, records: int) -> None:
        self.storage_commit_latency.observe(seconds)
        self.storage_commit_records.inc(amount=records)

    def render(self) -> str:
        lines: list[str] = []
        for metric in self.all():
            lines.extend(metric.header())
            lines.extend(metric.samples())
        return "\n".join(lines) + "\n"


# -- the standard process_* metrics (Prometheus client conventions), read from the OS at scrape time ------------------
_START_TIME = time.time()
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def _statm() -> tuple[float, float]:
    """(virtual, resident) bytes of this process (Linux /proc; elsewhere the peak RSS, and 0 virtual)."""
    try:
        with open("/proc/self/statm") as f:
            size, resident = f.read().split()[:2]
        return float(int(size) * _PAGE), float(int(resident) * _PAGE)
    except OSError:
        return 0.0, float(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)


def _open_fds() -> float:
    try:
        return float(len(os.listdir("/proc/self/fd")))
    except OSError:
        return 0.0


def _process_metrics() -> list[_Metric]:
    cpu = Counter("process_cpu_seconds_total", "Total user and system CPU time spent in seconds.")
    cpu.set_source(lambda: {(): sum(os.times()[:2])})
    resident = Gauge("process_resident_memory_bytes", "Resident memory size in bytes.")
    resident.set_source(lambda: {(): _statm()[1]})
    virtual = Gauge("process_virtual_memory_bytes", "Virtual memory size in bytes.")
    virtual.set_source(lambda: {(): _statm()[0]})
    fds = Gauge("process_open_fds", "Number of open file descriptors.")
    fds.set_source(lambda: {(): _open_fds()})
    start = Gauge("process_start_time_seconds", "Start time of the process since unix epoch in seconds.")
    start.set(_START_TIME)
    return [cpu, resident, virtual, fds, start]


#: every cyclic garbage collection's duration, by generation (timed by `server.collector.CollectionPauses` in a
#: served node; no series in a process that does not install it)
GC_PAUSES = Histogram("rumor_gc_pause_seconds", "Duration of each cyclic garbage collection, by generation (2 = full).",
                      ("generation",), buckets=LOOP_LAG_BUCKETS_S)
#: one set for the process, shared by every node in it (they are the same process's figures)
PROCESS_METRICS = [*_process_metrics(), GC_PAUSES]
