"""Jepsen-style chaos testing of a real rumor cluster (issue 11): node processes in their own network namespaces,
concurrent recorded clients, a seeded nemesis (kills, pauses, partitions as real packet loss, whole-cluster crashes,
clock skew), then checkers that read only the history. Entry point: ``bench/chaos.py``; see bench/README.md.

Modules: `netns` (namespaces, bridge and drop rules, or the loopback hook), `cluster` (node processes), `workload`
(clients), `nemesis` (the fault schedule), `runner` (one run), `history` (the record), `timeline` (faults at a
moment), `checkers` and `cluster_checkers` (verdicts), `report` (JSON, text, plot).
"""
