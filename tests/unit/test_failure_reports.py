"""Failed attempts: what a container reports to its engine, and what a pool keeps."""

from __future__ import annotations

from warren.wire import failure
from warren_engine.container.failure_reports import MAX_TRACEBACK, FailureReports
from warren_engine.pipe.messages import Event, Raised
from warren_engine.pool.failure_log import LIMIT, FailureLog


def record(message: str = "bad input") -> bytes:
    try:
        raise ValueError(message)
    except ValueError as exc:
        return failure.capture(exc)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_failed_attempt_is_reported_with_its_type_message_and_traceback() -> None:
    sent: list[Event] = []
    reports = FailureReports(sent.append)
    reports.report("call-1", 3, attempt=2, retrying=False, record=record("bad input 3"))
    (event,) = sent
    assert isinstance(event, Raised)
    assert (event.call, event.index, event.attempt, event.retrying) == ("call-1", 3, 2, False)
    assert (event.error_type, event.message) == ("ValueError", "bad input 3")
    assert "Traceback" in event.traceback and "raise ValueError(message)" in event.traceback
    assert event.unreported == 0


def test_a_flood_of_failures_is_reported_within_the_budget_and_the_rest_counted() -> None:
    # Given a container whose every input fails, 1,000 in the same instant
    sent: list[Event] = []
    clock = Clock()
    reports = FailureReports(sent.append, rate=10, clock=clock)
    data = record()
    for index in range(1000):
        reports.report("call", index, 1, False, data)
    # Then only the burst went to the engine, and the others are counted
    assert len(sent) == 10
    assert reports.unreported == 990
    # When the budget has refilled, the next report says how many were left out
    clock.now = 1.0
    reports.report("call", 1000, 1, False, data)
    last = sent[-1]
    assert isinstance(last, Raised) and last.unreported == 990 and last.index == 1000
    assert reports.unreported == 0


def test_a_huge_traceback_is_cut_and_an_engine_gone_is_not_an_error() -> None:
    def gone(event: Event) -> None:
        raise BrokenPipeError("the engine is gone")

    FailureReports(gone).report("call", 0, 1, False, record())  # no exception
    sent: list[Event] = []
    FailureReports(sent.append).report("call", 0, 1, False, record("x" * 100_000))
    (event,) = sent
    assert isinstance(event, Raised)
    assert len(event.traceback) < MAX_TRACEBACK + 100 and "characters cut" in event.traceback
    assert len(event.message) < 1100


def test_a_pool_keeps_its_last_failures_newest_first_and_counts_them_all() -> None:
    log = FailureLog()
    for index in range(LIMIT + 5):
        unreported = 7 if index == 0 else 0
        raised = Raised(float(index), "c", index, 1, False, "E", f"m{index}", "", unreported)
        log.add("container-1", raised)
    recent = log.recent()
    assert len(recent) == LIMIT
    assert [attempt.raised.index for attempt in recent[:2]] == [LIMIT + 4, LIMIT + 3]
    assert (
        recent[0].container == "container-1" and recent[0].as_dict()["message"] == f"m{LIMIT + 4}"
    )
    assert log.total == LIMIT + 5 + 7
