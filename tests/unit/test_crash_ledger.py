"""The crash ledger: only a container that died counts as a crash."""

from __future__ import annotations

import asyncio

import pytest

from engine.crashes import CRASHED, HEALTHY, REPLACED, CrashLedger
from engine.hosted import check_timeouts, longest_timeout
from sdk.exceptions import InvalidError
from sdk.protocol import FunctionSpec


async def test_a_crash_is_reported_until_the_copies_that_count_it_are_queued() -> None:
    ledger = CrashLedger(wait=0.1)
    ledger.took(1, "m1")
    ledger.exited(1, crashed=True)
    assert await ledger.verdict("m1", asker=2) == CRASHED
    # the container told so could not requeue it: the next one is told again
    assert await ledger.verdict("m1", asker=3) == CRASHED


async def test_a_crashed_message_replaced_by_its_copies_is_never_run_again() -> None:
    ledger = CrashLedger(wait=0.1)
    ledger.took(1, "m1")
    ledger.exited(1, crashed=True)
    assert await ledger.verdict("m1", asker=2) == CRASHED
    ledger.replaced("m1")
    assert await ledger.verdict("m1", asker=3) == REPLACED


async def test_settled_messages_and_deliberate_exits_are_not_crashes() -> None:
    ledger = CrashLedger(wait=0.1)
    ledger.took(1, "settled")
    ledger.released(1, "settled")
    ledger.took(1, "stopping")
    ledger.exited(1, crashed=False)
    assert await ledger.verdict("settled", asker=2) == HEALTHY
    assert await ledger.verdict("stopping", asker=2) == HEALTHY


async def test_a_verdict_waits_for_a_holder_that_is_dying() -> None:
    # Given the broker redelivered m1 before the engine saw its holder exit
    ledger = CrashLedger(wait=5.0)
    ledger.took(1, "m1")
    asking = asyncio.ensure_future(ledger.verdict("m1", asker=2))
    await asyncio.sleep(0.05)
    assert not asking.done()
    # When the holder's exit is seen, Then the verdict is a crash
    ledger.exited(1, crashed=True)
    assert await asking == CRASHED


async def test_a_holder_still_alive_did_not_crash() -> None:
    ledger = CrashLedger(wait=0.05)
    ledger.took(1, "m1")
    assert await ledger.verdict("m1", asker=2) == HEALTHY  # its connection dropped
    assert await ledger.verdict("m1", asker=1) == HEALTHY  # redelivered to its own holder


def test_function_timeouts_must_fit_in_the_brokers_consumer_timeout() -> None:
    assert longest_timeout(1800) == 1740
    assert longest_timeout(10) == 9
    check_timeouts({"f": FunctionSpec("f", False, timeout=9)}, consumer_timeout=10)
    with pytest.raises(InvalidError, match=r"slow \(timeout=30s\).*at most 9s.*consumer_timeout"):
        check_timeouts({"slow": FunctionSpec("slow", False, timeout=30)}, consumer_timeout=10)
