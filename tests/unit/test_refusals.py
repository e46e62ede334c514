"""The pauses between attempts at a publish the broker refused."""

from __future__ import annotations

import asyncio

from warren.wire.refusals import FIRST_PAUSE, LONGEST_PAUSE, RefusalBackoff


def test_pauses_double_from_the_first_to_the_longest_with_jitter_below_each() -> None:
    backoff = RefusalBackoff(deadline=1_000.0)
    pauses = [backoff.pause(0.0) for _ in range(10)]
    ceilings = [min(FIRST_PAUSE * 2**n, LONGEST_PAUSE) for n in range(10)]
    for pause, ceiling in zip(pauses, ceilings, strict=True):
        assert pause is not None and ceiling / 2 <= pause <= ceiling
    assert backoff.refusals == 10


def test_no_pause_is_offered_past_the_deadline() -> None:
    backoff = RefusalBackoff(deadline=10.0)
    assert backoff.pause(9.0) is not None
    assert backoff.pause(10.0) is None
    # Nor one that would end after it
    assert RefusalBackoff(deadline=10.0).pause(9.99) is None


async def test_waiting_sleeps_a_pause_until_the_deadline_then_says_no_at_once() -> None:
    now = asyncio.get_running_loop().time()
    backoff = RefusalBackoff(deadline=now + 1.0)
    assert await backoff.waited()
    # Past the deadline: no sleep, the refusal is the publisher's error
    past = RefusalBackoff(deadline=now)
    assert not await asyncio.wait_for(past.waited(), 0.01)
    assert past.refusals == 1
