"""What the engine remembers of cancels, for the containers it starts later."""

from __future__ import annotations

from warren_engine.pool.cancel_memory import HANDED_TO_A_CONTAINER, CancelMemory


def test_recent_ids_come_newest_last() -> None:
    memory = CancelMemory()
    memory.add(["a", "b"], now=0.0)
    memory.add(["c"], now=1.0)
    assert memory.recent(now=2.0) == ["a", "b", "c"]


def test_an_id_cancelled_again_becomes_the_newest_once() -> None:
    memory = CancelMemory()
    memory.add(["a", "b", "c"], now=0.0)
    memory.add(["a"], now=1.0)
    assert memory.recent(now=1.0) == ["b", "c", "a"]


def test_a_container_is_handed_only_the_newest_ids_when_there_are_more_than_its_limit() -> None:
    memory = CancelMemory()
    memory.add([str(i) for i in range(HANDED_TO_A_CONTAINER + 5)], now=0.0)
    recent = memory.recent(now=0.0)
    assert len(recent) == HANDED_TO_A_CONTAINER
    assert recent[0] == "5" and recent[-1] == str(HANDED_TO_A_CONTAINER + 4)
    assert memory.recent(limit=2, now=0.0) == [recent[-2], recent[-1]]


def test_ids_older_than_the_keep_period_are_forgotten_when_recent_ones_are_asked_for() -> None:
    memory = CancelMemory(keep_seconds=10.0)
    memory.add(["old"], now=0.0)
    memory.add(["new"], now=5.0)
    assert memory.recent(now=10.0) == ["old", "new"]  # exactly the keep period: kept
    assert memory.recent(now=10.5) == ["new"]
    assert memory.recent(now=100.0) == []


def test_ids_older_than_the_keep_period_are_forgotten_when_new_ones_are_added() -> None:
    memory = CancelMemory(keep_seconds=10.0)
    memory.add(["old"], now=0.0)
    memory.add(["new"], now=20.0)
    # asked "in the past", the old one would still count: it was dropped by the add
    assert memory.recent(now=0.0) == ["new"]


def test_an_id_cancelled_again_is_kept_from_its_latest_cancel() -> None:
    # Given an id cancelled at 0 and again at 8, with a keep period of 10 s
    memory = CancelMemory(keep_seconds=10.0)
    memory.add(["a", "b"], now=0.0)
    memory.add(["a"], now=8.0)
    # Then at 15 s only the one cancelled at 0 is forgotten
    assert memory.recent(now=15.0) == ["a"]


def test_the_oldest_ids_are_dropped_when_more_than_the_memory_keeps_are_added() -> None:
    memory = CancelMemory(keep_at_most=3)
    memory.add(["a", "b"], now=0.0)
    memory.add(["c", "d", "e"], now=1.0)
    assert memory.recent(now=1.0) == ["c", "d", "e"]
