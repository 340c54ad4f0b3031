"""The transmit-limited queue: limits, invalidation, ordering and byte budgets."""

from rumor.gossip.broadcast_queue import BroadcastQueue, fill_packet
from rumor.gossip.config import retransmit_limit


def drain_counts(queue: BroadcastQueue, n_members: int) -> dict[bytes, int]:
    counts: dict[bytes, int] = {}
    for _ in range(100):
        got = queue.get_broadcasts(3, 1400, n_members)
        if not got:
            break
        for item in got:
            counts[item] = counts.get(item, 0) + 1
    return counts


def test_retransmit_limit_grows_with_log_n() -> None:
    assert retransmit_limit(4, 1) == 4
    assert retransmit_limit(4, 9) == 4
    assert retransmit_limit(4, 10) == 8
    assert retransmit_limit(4, 200) == 12


def test_each_update_is_sent_exactly_the_retransmit_limit() -> None:
    q = BroadcastQueue(retransmit_mult=3)
    q.enqueue("a", b"update-a")
    q.enqueue("b", b"update-b")
    assert drain_counts(q, n_members=50) == {b"update-a": 6, b"update-b": 6}
    assert len(q) == 0


def test_a_newer_update_about_a_member_replaces_the_older_one() -> None:
    q = BroadcastQueue(retransmit_mult=1)
    q.enqueue("a", b"old")
    q.enqueue("a", b"new")
    assert len(q) == 1
    assert q.get_broadcasts(3, 1400, 5) == [b"new"]


def test_least_sent_first_then_newest_first() -> None:
    q = BroadcastQueue(retransmit_mult=5)
    q.enqueue("a", b"a" * 10)
    assert q.get_broadcasts(3, 1400, 5) == [b"a" * 10]
    q.enqueue("b", b"b" * 10)
    q.enqueue("c", b"c" * 10)
    assert q.get_broadcasts(3, 26, 5) == [b"c" * 10, b"b" * 10]
    assert q.get_broadcasts(3, 13, 5) == [b"c" * 10]  # all sent once now: newest first


def test_never_exceeds_the_byte_limit_and_skips_items_too_big_for_the_room() -> None:
    q = BroadcastQueue(retransmit_mult=5)
    q.enqueue("big", b"x" * 100)
    q.enqueue("small", b"y" * 10)
    got = q.get_broadcasts(3, 50, 5)
    assert got == [b"y" * 10]
    for limit in range(0, 200, 7):
        assert sum(len(item) + 3 for item in q.get_broadcasts(3, limit, 5)) <= limit


def test_prune_drops_the_most_sent_updates() -> None:
    q = BroadcastQueue(retransmit_mult=5)
    q.enqueue("a", b"a")
    q.get_broadcasts(3, 1400, 5)
    q.enqueue("b", b"b")
    q.prune(1)
    assert q.get_broadcasts(3, 1400, 5) == [b"b"]


def test_max_items_caps_how_many_updates_one_call_takes() -> None:
    q = BroadcastQueue(retransmit_mult=5)
    for i in range(10):
        q.enqueue(str(i), bytes([i]))
    assert len(q.get_broadcasts(3, 1400, 5, max_items=4)) == 4


def test_fill_packet_fits_parts_updates_and_app_payloads_within_the_limit() -> None:
    q = BroadcastQueue(retransmit_mult=5)
    for i in range(300):
        q.enqueue(str(i), bytes(i % 40 + 1))
    app = [bytes(n) for n in (5, 900, 7)]

    def app_broadcasts(overhead: int, limit: int) -> list[bytes]:
        return list(app)

    data, rejected = fill_packet([b"\x03\x81\xa3seq\x01"], 1400, q, 50, app_broadcasts, lambda p: p, 4)
    assert len(data) <= 1400
    assert rejected >= 1, "the 900-byte payload cannot fit the leftover room"
    big, _ = fill_packet([], 60000, q, 50, None, lambda p: p, 4)
    assert len(big) <= 60000  # at most 255 parts even when bytes would allow more
    assert fill_packet([], 1400, BroadcastQueue(1), 5, None, lambda p: p, 4) == (b"", 0)
