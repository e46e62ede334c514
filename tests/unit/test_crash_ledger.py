"""The crash ledger: only a container that died counts as a crash."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from warren.exceptions import InvalidError
from warren.wire.spec import FunctionSpec
from warren_engine.daemon.hosted_app import check_timeouts, longest_timeout
from warren_engine.pipe.holdings import HoldingTable, key
from warren_engine.pipe.messages import CRASHED, HEALTHY, REPLACED
from warren_engine.pool.crash_ledger import CrashLedger

M1 = uuid.uuid4().hex


def _holding(ledger: CrashLedger, container: int, *message_ids: str) -> HoldingTable:
    table = HoldingTable(8)
    ledger.joined(container, table)
    for message_id in message_ids:
        table.hold(message_id)
    return table


async def test_a_crash_is_reported_until_the_copies_that_count_it_are_queued() -> None:
    ledger = CrashLedger(wait=0.1)
    _holding(ledger, 1, M1)
    ledger.exited(1, crashed=True)
    assert await ledger.verdict(M1, asker=2) == CRASHED
    # the container told so could not requeue it: the next one is told again
    assert await ledger.verdict(M1, asker=3) == CRASHED


async def test_a_crashed_message_replaced_by_its_copies_is_never_run_again() -> None:
    ledger = CrashLedger(wait=0.1)
    _holding(ledger, 1, M1)
    ledger.exited(1, crashed=True)
    assert await ledger.verdict(M1, asker=2) == CRASHED
    ledger.replaced(M1)
    assert await ledger.verdict(M1, asker=3) == REPLACED


async def test_settled_messages_and_deliberate_exits_are_not_crashes() -> None:
    ledger = CrashLedger(wait=0.1)
    table = _holding(ledger, 1)
    slot = table.hold("settled")
    assert slot is not None
    table.release(slot)
    table.hold("stopping")
    ledger.exited(1, crashed=False)
    assert await ledger.verdict("settled", asker=2) == HEALTHY
    assert await ledger.verdict("stopping", asker=2) == HEALTHY


async def test_a_verdict_waits_for_a_holder_that_is_dying() -> None:
    # Given the broker redelivered m1 before the engine saw its holder exit
    ledger = CrashLedger(wait=5.0)
    _holding(ledger, 1, M1)
    asking = asyncio.ensure_future(ledger.verdict(M1, asker=2))
    await asyncio.sleep(0.05)
    assert not asking.done()
    # When the holder's exit is seen, Then the verdict is a crash
    ledger.exited(1, crashed=True)
    assert await asking == CRASHED


async def test_a_holder_still_alive_did_not_crash() -> None:
    ledger = CrashLedger(wait=0.05)
    _holding(ledger, 1, M1)
    assert await ledger.verdict(M1, asker=2) == HEALTHY  # its connection dropped
    assert await ledger.verdict(M1, asker=1) == HEALTHY  # redelivered to its own holder


async def test_a_holder_whose_connection_dropped_answers_waiting_verdicts_at_once() -> None:
    ledger = CrashLedger(wait=5.0)
    table = _holding(ledger, 1, M1)
    asking = asyncio.ensure_future(ledger.verdict(M1, asker=2))
    await asyncio.sleep(0.05)
    table.clear()
    ledger.dropped(1)
    assert await asyncio.wait_for(asking, 1) == HEALTHY


def test_a_holding_table_finds_keys_only_at_slot_boundaries_and_reuses_freed_slots() -> None:
    table = HoldingTable(3)
    ids = [uuid.uuid4().hex for _ in range(3)]
    slots = [table.hold(i) for i in ids]
    assert None not in slots
    assert table.hold("one too many") is None
    assert table.held() == {key(i) for i in ids}
    assert all(table.holds(key(i)) for i in ids)
    # a key straddling two slots is not held
    straddling = (key(ids[0]) + key(ids[1]))[8:24]
    assert not table.holds(straddling)
    table.release(slots[1])  # type: ignore[arg-type]
    assert not table.holds(key(ids[1]))
    assert table.hold("not a uuid") is not None
    assert table.holds(key("not a uuid"))
    table.clear()
    assert table.held() == set()


def test_function_timeouts_must_fit_in_the_brokers_consumer_timeout() -> None:
    assert longest_timeout(1800) == 1740
    assert longest_timeout(10) == 9
    check_timeouts({"f": FunctionSpec("f", False, timeout=9)}, consumer_timeout=10)
    with pytest.raises(InvalidError, match=r"slow \(timeout=30s\).*at most 9s.*consumer_timeout"):
        check_timeouts({"slow": FunctionSpec("slow", False, timeout=30)}, consumer_timeout=10)
