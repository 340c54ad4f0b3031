"""`rumor status`: a convergence report (`GET /v1/cluster/convergence`) as a table an operator reads at a glance.

One row per member, this node first: status, incarnation, gossip and HTTP addresses, whether its data agrees with
this node's (``agrees``, ``differs``, or ``?`` with the reason when it could not be asked), how many key ranges
differ, when the last anti-entropy exchange with it completed, the replication lag and its delta backlog; then the
verdict and its summary. ``--json`` prints the report itself instead.
"""

from __future__ import annotations

from typing import Any

COLUMNS = ("member", "status", "inc", "gossip", "http", "data", "ranges", "exchange", "lag", "backlog")


def _seconds(value: Any, suffix: str = "") -> str:
    return "-" if value is None else f"{float(value):.1f} s{suffix}"


def _agreement(peer: dict[str, Any]) -> str:
    if peer.get("answered") and peer.get("root_match") is True:
        return "agrees"
    if peer.get("root_match") is False:
        return "differs" if peer.get("answered") else "differed"
    return f"? ({peer.get('note') or 'no answer'})"


def _backlog(groups: Any, size: Any) -> str:
    return "-" if groups is None else f"{groups} groups, {size} B"


def rows(report: dict[str, Any]) -> list[tuple[str, ...]]:
    me = (f"{report.get('node')} (this node)", str(report.get("status") or "alive"),
          str(report.get("incarnation") if report.get("incarnation") is not None else "-"),
          str(report.get("gossip_address") or "-"), str(report.get("http_address") or "-"),
          f"{report.get('keys')} keys", "", "", "", _backlog(report.get("backlog_groups"), report.get("backlog_bytes")))
    out: list[tuple[str, ...]] = [me]
    for peer in report.get("peers", []):
        ranges = peer.get("differing_ranges")
        out.append((str(peer["id"]), str(peer["status"]), str(peer["incarnation"]), str(peer["gossip_address"]),
                    str(peer.get("http_address") or "-"), _agreement(peer), "-" if ranges is None else str(ranges),
                    _seconds(peer.get("last_exchange_s_ago"), " ago"), _seconds(peer.get("lag_s")),
                    _backlog(peer.get("backlog_groups"), peer.get("backlog_bytes"))))
    return out


def status_table(report: dict[str, Any]) -> str:
    """The report as aligned columns, then ``verdict: summary``."""
    table = [COLUMNS, *rows(report)]
    widths = [max(len(row[i]) for row in table) for i in range(len(COLUMNS))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in table]
    lines.append("")
    lines.append(f"{report.get('verdict')}: {report.get('summary')}")
    return "\n".join(lines)


__all__ = ["COLUMNS", "rows", "status_table"]


def check_status(report: dict[str, Any], not_converged: int = 3) -> int:
    """`rumor status --check`: 0 when every member holds the same data (or there is no other member), else
    ``not_converged``."""
    return 0 if report.get("verdict") in ("converged", "alone") else not_converged

