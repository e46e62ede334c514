"""How long a client waits for a broker that went away, and who is told when it gives up."""

from __future__ import annotations

import asyncio

import pytest
from warren.client.outage import Outage

SHORT = 0.005


class GiveUp:
    """Counts the times the outage gave up, and hands it the error to raise."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self) -> Exception:
        self.calls += 1
        return ConnectionError(f"gave up ({self.calls})")


async def _value_after(event: asyncio.Event, value: str) -> str:
    await event.wait()
    return value


async def test_a_wait_returns_the_work_s_result_while_the_broker_is_there() -> None:
    outage = Outage(SHORT, GiveUp())
    assert await outage.unless_lost(asyncio.sleep(0, "done")) == "done"


async def test_a_wait_passes_on_the_work_s_own_error() -> None:
    async def failing() -> None:
        raise LookupError("not found")

    outage = Outage(SHORT, GiveUp())
    with pytest.raises(LookupError, match="not found"):
        await outage.unless_lost(failing())


async def test_waits_fail_with_connection_error_when_the_broker_stays_away_too_long() -> None:
    # Given two waits on work that never ends, and a lost connection
    give_up = GiveUp()
    outage = Outage(SHORT, give_up)
    never = asyncio.Event()
    waits = [asyncio.ensure_future(outage.unless_lost(_value_after(never, "x"))) for _ in "ab"]
    await asyncio.sleep(0)
    outage.lost(object(), RuntimeError("connection reset"))
    # Then, past the timeout, both fail with the error the client gave up with
    outcomes = await asyncio.wait_for(asyncio.gather(*waits, return_exceptions=True), 1.0)
    assert [str(outcome) for outcome in outcomes] == ["gave up (1)", "gave up (1)"]
    assert all(isinstance(outcome, ConnectionError) for outcome in outcomes)
    assert give_up.calls == 1


async def test_the_work_is_cancelled_when_the_outage_gives_up() -> None:
    cancelled = asyncio.Event()

    async def work() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            cancelled.set()

    outage = Outage(SHORT, GiveUp())
    outage.lost()
    with pytest.raises(ConnectionError):
        await asyncio.wait_for(outage.unless_lost(work()), 1.0)
    assert cancelled.is_set()


async def test_nothing_is_given_up_when_the_broker_comes_back_in_time() -> None:
    # Given a wait in progress when the connection is lost
    give_up = GiveUp()
    outage = Outage(0.01, give_up)
    release = asyncio.Event()
    wait = asyncio.ensure_future(outage.unless_lost(_value_after(release, "result")))
    outage.lost()
    # When it comes back before the timeout
    outage.restored()
    await asyncio.sleep(0.02)
    # Then the wait goes on, and ends with its work
    assert not wait.done()
    release.set()
    assert await asyncio.wait_for(wait, 1.0) == "result"
    assert give_up.calls == 0


async def test_losing_the_connection_again_before_the_timeout_gives_up_once() -> None:
    give_up = GiveUp()
    outage = Outage(SHORT, give_up)
    for _ in range(3):
        outage.lost()
    await asyncio.sleep(SHORT * 4)
    assert give_up.calls == 1


async def test_cancelling_the_outage_stops_a_pending_give_up() -> None:
    give_up = GiveUp()
    outage = Outage(SHORT, give_up)
    outage.lost()
    outage.cancel()
    await asyncio.sleep(SHORT * 4)
    assert give_up.calls == 0


async def test_a_new_loss_after_a_restore_starts_a_new_countdown() -> None:
    give_up = GiveUp()
    outage = Outage(SHORT, give_up)
    outage.lost()
    outage.restored()
    outage.lost()
    await asyncio.sleep(SHORT * 4)
    assert give_up.calls == 1


async def test_cancelling_a_wait_cancels_its_work() -> None:
    cancelled = asyncio.Event()

    async def work() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            cancelled.set()

    outage = Outage(SHORT, GiveUp())
    wait = asyncio.ensure_future(outage.unless_lost(work()))
    await asyncio.sleep(0)
    wait.cancel()
    with pytest.raises(asyncio.CancelledError):
        await wait
    assert cancelled.is_set()
