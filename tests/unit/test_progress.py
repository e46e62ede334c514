"""The pure parts of map's progress line: counts, rate, time left, and when it is drawn."""

from __future__ import annotations

import asyncio
import io
import sys
from dataclasses import dataclass

import pytest
import warren
from warren.client import progress
from warren.client.batch_sizer import BatchSizer
from warren.client.mapping import _MapSink
from warren.client.progress import RateMeter, Snapshot, describe, format_duration, format_rate
from warren.client.reorder_buffer import OutputBuffer
from warren.wire.protocol import STATUS_OK


@dataclass
class Counts:
    sent: int = 0
    done: int = 0
    failed: int = 0
    total: int | None = None


@pytest.mark.parametrize(
    ("rate", "text"),
    [
        (None, "-/s"),
        (0.5, "0.50/s"),
        (35.4, "35/s"),
        (1234.0, "1.2k/s"),
        (45_600.0, "46k/s"),
        (2_500_000.0, "2.5M/s"),
    ],
)
def test_a_rate_is_short_and_scaled(rate: float | None, text: str) -> None:
    assert format_rate(rate) == text


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0.2, "0:01"), (7.0, "0:07"), (725.0, "12:05"), (3723.0, "1:02:03"), (-1.0, "0:00")],
)
def test_a_duration_reads_like_a_clock_and_rounds_up(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


def test_the_rate_is_measured_over_the_recent_window_only() -> None:
    # Given a meter of a 10 s window, and a map that did 1000 inputs in its first second
    meter = RateMeter(window=10.0)
    assert meter.sample(0.0, 0) is None
    meter.sample(1.0, 1000)
    # When it then does 10 a second for 20 s
    rate = None
    for second in range(2, 22):
        rate = meter.sample(float(second), 1000 + 10 * (second - 1))
    # Then the rate is 10/s: the burst has left the window
    assert rate == pytest.approx(10.0)


def test_a_line_shows_done_of_total_sent_failed_rate_and_time_left() -> None:
    snapshot = Snapshot(sent=200, done=120, failed=3, total=300)
    assert describe(snapshot, 45.0) == "120/300  sent 200  failed 3  45/s  0:04 left"


def test_a_line_without_a_total_or_a_rate_leaves_them_unknown() -> None:
    snapshot = Snapshot(sent=20, done=0, failed=0, total=None)
    assert describe(snapshot, None) == "0/?  sent 20  failed 0  -/s  -:-- left"


def test_the_total_comes_from_the_shortest_sized_input_and_none_if_any_is_unsized() -> None:
    assert progress.sized_total([range(300), [1, 2, 3]]) == 3
    assert progress.sized_total([range(300), iter(range(3))]) is None
    assert progress.sized_total([]) is None


def test_the_map_counts_sent_done_failed_and_learns_its_total_when_inputs_end() -> None:
    # Given a map's sink over its buffer, with 3 inputs sent
    buffer: OutputBuffer[tuple[int, int, bytes]] = OutputBuffer(ordered=True)
    sink = _MapSink(buffer, BatchSizer(), fail_fast=False)
    for _ in range(3):
        buffer.sent_index()
    # When one result succeeds and one fails
    sink.deliver(0, STATUS_OK, 0, b"", 0.01)
    sink.deliver(1, STATUS_OK + 1, 0, b"", 0.01)
    # Then it counts them, and the total is unknown while inputs may still come
    assert Snapshot.of(sink) == Snapshot(sent=3, done=2, failed=1, total=None)


def test_nothing_is_drawn_outside_enable_output(monkeypatch: pytest.MonkeyPatch) -> None:
    stream = _Tty()
    monkeypatch.setattr(sys, "stderr", stream)
    with progress.shown("square.map", Counts(sent=1)):
        pass
    assert stream.getvalue() == ""


def test_nothing_is_drawn_when_stderr_is_not_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    stream = io.StringIO()
    monkeypatch.setattr(sys, "stderr", stream)
    with warren.enable_output(), progress.shown("square.map", Counts(sent=1)):
        pass
    assert stream.getvalue() == ""


def test_a_terminal_shows_the_final_counts_of_each_map(monkeypatch: pytest.MonkeyPatch) -> None:
    # Given output enabled on a terminal, and two maps running at once
    stream = _Tty()
    monkeypatch.setattr(sys, "stderr", stream)
    first, second = Counts(sent=5, total=5), Counts(sent=7, total=7)
    output = warren.enable_output()
    with output, progress.shown("a.map", first), progress.shown("b.starmap", second):
        first.done, second.done = 5, 7
    # Then each line was drawn with its final counts
    assert "a.map" in stream.getvalue() and "5/5" in stream.getvalue()
    assert "b.starmap" in stream.getvalue() and "7/7" in stream.getvalue()


def test_a_line_is_erased_when_its_map_is_cancelled(monkeypatch: pytest.MonkeyPatch) -> None:
    stream = _Tty()
    monkeypatch.setattr(sys, "stderr", stream)

    async def cancelled_map() -> None:
        with progress.shown("a.map", Counts(sent=5)):
            await asyncio.sleep(10)

    async def main() -> None:
        task = asyncio.create_task(cancelled_map())
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    with warren.enable_output():
        asyncio.run(main())
    # Then the display is gone: a new map starts a new one
    assert progress._OUTPUT.board._live is None


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True
