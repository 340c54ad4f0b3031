"""`ReplicationConfig` refuses out-of-range values, and each error names the field that is wrong (an operator reads
``transmit_mult=0: must be >= 1`` and knows what to change)."""

from __future__ import annotations

from typing import Any

import pytest

from rumor.server.replication import ReplicationConfig
from rumor.server.replication.errors import ReplicationConfigError


@pytest.mark.parametrize(("name", "value"), [
    ("push_interval_s", 0.0),
    ("sync_interval_s", -1.0),
    ("request_timeout_s", 0.0),
    ("digest_settle_s", 0.0),
    ("fanout", 0),
    ("transmit_mult", 0),
    ("max_push_bytes", 512),
    ("sync_message_bytes", 128 * 1024),
    ("max_backlog_bytes", 1024),
    ("digest_batch_keys", 0),
    ("dedupe_window", 8),
    ("sync_max_rounds", 0),
    ("gc_grace_s", -1.0),
])
def test_each_error_names_its_field(name: str, value: float) -> None:
    wrong: dict[str, Any] = {name: value}
    with pytest.raises(ReplicationConfigError) as raised:
        ReplicationConfig(**wrong)
    assert raised.value.name == name and raised.value.value == value
    assert str(raised.value).startswith(f"{name}={value!r}: ")


def test_the_defaults_and_the_smallest_allowed_values_are_accepted() -> None:
    ReplicationConfig()
    ReplicationConfig(fanout=1, transmit_mult=1, digest_batch_keys=1, dedupe_window=16, sync_max_rounds=1,
                      max_push_bytes=1024, max_backlog_bytes=1024, sync_message_bytes=2048, gc_grace_s=0.0)
