"""A container's capture of its function's output: lines, inputs, budgets, batches."""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from warren.exceptions import DeserializationError
from warren.wire.codec import packb
from warren.wire.logs import NO_INDEX, STDERR, STDOUT, LogBatch, LogLine
from warren_engine.container import output
from warren_engine.container.log_shipper import LINE_OVERHEAD, MAX_PENDING, LogShipper
from warren_engine.container.output import MAX_LINE, CapturedStream, current_input
from warren_engine.log_view import parse_duration


class Sink:
    def __init__(self) -> None:
        self.lines: list[tuple[int, str]] = []

    def write(self, stream: int, text: str) -> None:
        self.lines.append((stream, text))


class Channel:
    """What the shipper uses of a channel: whether it is closed, and publish."""

    def __init__(self) -> None:
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.bodies: list[bytes] = []

    def publish(self, body: bytes, *, exchange: str) -> None:
        self.bodies.append(body)


def test_print_hands_over_each_line_as_it_ends_without_its_newline() -> None:
    sink = Sink()
    stream = CapturedStream(sink, STDOUT, sys.__stdout__)  # type: ignore[arg-type]
    print("hello", "world", file=stream)
    stream.write("part")
    assert sink.lines == [(STDOUT, "hello world")]
    stream.write("ial\nnext\n\n")
    assert sink.lines[1:] == [(STDOUT, "partial"), (STDOUT, "next"), (STDOUT, "")]


def test_bytes_written_to_the_buffer_are_captured_as_text_even_split_mid_character() -> None:
    sink = Sink()
    stream = CapturedStream(sink, STDOUT, sys.__stdout__)  # type: ignore[arg-type]
    encoded = "héllo\n".encode()
    stream.buffer.write(encoded[:2])
    stream.buffer.write(encoded[2:])
    stream.reconfigure(line_buffering=True)
    assert sink.lines == [(STDOUT, "héllo")]


def test_a_line_longer_than_the_limit_is_cut_in_pieces_of_the_limit() -> None:
    sink = Sink()
    stream = CapturedStream(sink, STDERR, sys.__stderr__)  # type: ignore[arg-type]
    stream.write("a" * (2 * MAX_LINE + 5))
    assert [len(text) for _, text in sink.lines] == [MAX_LINE, MAX_LINE]
    stream.write("\n")
    assert [len(text) for _, text in sink.lines] == [MAX_LINE, MAX_LINE, 5]


def test_two_threads_printing_at_once_never_splice_their_lines() -> None:
    sink = Sink()
    stream = CapturedStream(sink, STDOUT, sys.__stdout__)  # type: ignore[arg-type]

    def talk(word: str) -> None:
        for _ in range(2000):
            stream.write(word)
            stream.write(word + "\n")

    threads = [threading.Thread(target=talk, args=(word,)) for word in ("ab", "cd")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted({text for _, text in sink.lines}) == ["abab", "cdcd"]


@pytest.fixture
def root_logger() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    stdout, stderr = sys.stdout, sys.stderr
    try:
        yield
    finally:
        sys.stdout, sys.stderr = stdout, stderr
        root.handlers[:] = handlers
        root.setLevel(level)


@pytest.mark.usefixtures("root_logger")
def test_capture_takes_prints_and_info_logging_but_not_debug() -> None:
    sink = Sink()
    output.capture(sink)
    print("to stdout")
    print("to stderr", file=sys.stderr)
    logging.getLogger("user").info("logged %d", 42)
    logging.getLogger("user").debug("not at the default level")
    assert sink.lines == [
        (STDOUT, "to stdout"),
        (STDERR, "to stderr"),
        (STDERR, "INFO:user:logged 42"),
    ]


async def test_lines_carry_the_input_that_was_running_when_written() -> None:
    shipper = LogShipper("app", "fn", "c1", rate=1_000_000)
    channel = Channel()
    shipper.open(channel, "warren.v1.main.logs")  # type: ignore[arg-type]
    shipper.write(STDOUT, "at import")
    token = current_input.set(("call-1", 3))
    shipper.write(STDERR, "in the input")
    current_input.reset(token)
    shipper.flush()
    (body,) = channel.bodies
    batch = LogBatch.from_body(body)
    assert (batch.app, batch.function, batch.container, batch.dropped) == ("app", "fn", "c1", 0)
    assert [(line.stream, line.call, line.index, line.text) for line in batch.lines] == [
        (STDOUT, "", NO_INDEX, "at import"),
        (STDERR, "call-1", 3, "in the input"),
    ]


async def test_lines_over_the_rate_are_dropped_and_the_next_batch_counts_them() -> None:
    rate = 10_000
    shipper = LogShipper("app", "fn", "c1", rate=rate)
    channel = Channel()
    shipper.open(channel, "logs")  # type: ignore[arg-type]
    line = "x" * (100 - LINE_OVERHEAD)  # each line costs 100
    for _ in range(1000):  # 100,000: ten seconds of the rate at once
        shipper.write(STDOUT, line)
    shipper.flush()
    batches = [LogBatch.from_body(body) for body in channel.bodies]
    kept = sum(len(batch.lines) for batch in batches)
    assert 200 <= kept <= 201  # the burst: two seconds of the rate
    assert batches[0].dropped == 1000 - kept
    assert all(batch.dropped == 0 for batch in batches[1:])
    assert all(len(batch.to_body()) < 128 * 1024 for batch in batches)


def test_without_a_channel_what_waits_stays_within_its_bound() -> None:
    shipper = LogShipper("app", "fn", "c1", rate=10**9)
    line = "y" * 1000
    for _ in range(2 * MAX_PENDING // 1000):
        shipper.write(STDOUT, line)
    assert shipper._pending <= MAX_PENDING
    assert shipper._dropped > 0


def test_a_log_batch_round_trips() -> None:
    batch = LogBatch("app", "fn", "c1", (LogLine(1.5, STDERR, "call", 0, "text ünïcode"),), 7)
    assert LogBatch.from_body(batch.to_body()) == batch


@pytest.mark.parametrize(
    "fields",
    [
        [2, "app", "fn", "c1", [], 0],  # another version
        [1, "app", "fn", "c1", [[1.0, 3, "call", 0, "text"]], 0],  # no such stream
        [1, "app", "fn", "c1", [[1.0, 1, "call", "0", "text"]], 0],  # index not an int
        [1, "app", "fn", "c1", [[1.0, 1, "call", 0, b"text"]], 0],  # text not a str
        [1, "app", 5, "c1", [], 0],
        [1, "app", "fn", "c1", []],  # a field missing
    ],
)
def test_a_malformed_log_batch_is_refused(fields: list[Any]) -> None:
    with pytest.raises(DeserializationError):
        LogBatch.from_body(packb(fields))


@pytest.mark.parametrize(
    ("text", "seconds"), [("90s", 90), ("10m", 600), ("2h", 7200), ("1d", 86400), ("5", 5)]
)
def test_a_duration_is_read_in_its_unit(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "m", "ten minutes", "-5m", "nanm", "infs"])
def test_a_bad_duration_is_refused(text: str) -> None:
    with pytest.raises(Exception, match="duration"):
        parse_duration(text)
