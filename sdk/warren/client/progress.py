"""The live progress line of ``map``, ``starmap`` and ``for_each``, under :func:`enable_output`.

Each running map is one line on the terminal (stderr): inputs done of all, sent,
failed, the rate and the time left. The display reads the map's own counters
(:class:`MapCounters`) when it redraws, at most ``REFRESH_HZ`` times a second from
rich's refresh thread, so a map does no work per input for it; outside
``enable_output``, or when stderr is not a terminal, nothing is drawn and rich is not
even imported. A map's line is drawn once more with its final counts and erased when
the map ends, however it ends::

    with warren.enable_output():
        results = list(square.map(range(10_000)))
"""

from __future__ import annotations

import collections
import contextlib
import sys
import threading
import time
from collections.abc import Iterable, Iterator, Sized
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from rich.console import RenderableType
    from rich.live import Live

REFRESH_HZ = 10
RATE_WINDOW = 10.0  # seconds of history the rate is measured over
BAR_WIDTH = 24


class MapCounters(Protocol):
    """What a running map tells its progress line; read from another thread, never locked."""

    @property
    def sent(self) -> int: ...

    @property
    def done(self) -> int: ...

    @property
    def failed(self) -> int: ...

    @property
    def total(self) -> int | None:
        """The number of inputs, once known (a sized input, or all inputs read)."""
        ...


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The counters of one map at one moment."""

    sent: int
    done: int
    failed: int
    total: int | None

    @classmethod
    def of(cls, counters: MapCounters) -> Snapshot:
        return cls(counters.sent, counters.done, counters.failed, counters.total)


def sized_total(iterables: Iterable[Any]) -> int | None:
    """The number of inputs a map of these iterables (zipped) will have, if they tell it."""
    lengths = []
    for iterable in iterables:
        if not isinstance(iterable, Sized):
            return None
        lengths.append(len(iterable))
    return min(lengths) if lengths else None


class RateMeter:
    """Inputs done per second, over the last ``window`` seconds of samples."""

    def __init__(self, window: float = RATE_WINDOW) -> None:
        self.window = window
        self._samples: collections.deque[tuple[float, int]] = collections.deque()

    def sample(self, now: float, done: int) -> float | None:
        """Record ``done`` at ``now``; the rate, or None until two samples span some time."""
        samples = self._samples
        samples.append((now, done))
        while len(samples) > 2 and samples[1][0] <= now - self.window:
            samples.popleft()
        first_time, first_done = samples[0]
        if now <= first_time:
            return None
        return (done - first_done) / (now - first_time)


def format_rate(rate: float | None) -> str:
    """``1.2k/s``, ``35/s``, ``0.50/s``; ``-/s`` while unknown."""
    if rate is None:
        return "-/s"
    if rate >= 1_000_000:
        return f"{rate / 1_000_000:.1f}M/s"
    if rate >= 10_000:
        return f"{rate / 1000:.0f}k/s"
    if rate >= 1000:
        return f"{rate / 1000:.1f}k/s"
    if rate >= 10:
        return f"{rate:.0f}/s"
    return f"{rate:.2f}/s"


def format_duration(seconds: float) -> str:
    """``0:07``, ``12:05``, ``1:02:03`` (rounded up, so a running map never shows 0:00)."""
    whole = max(0, int(-(-seconds // 1)))
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}:{minutes:02}:{secs:02}"
    return f"{minutes}:{secs:02}"


def time_left(snapshot: Snapshot, rate: float | None) -> float | None:
    """Seconds until the last input is done at ``rate``; None if the total or rate is unknown."""
    if snapshot.total is None or not rate:
        return None
    return max(0, snapshot.total - snapshot.done) / rate


def describe(snapshot: Snapshot, rate: float | None) -> str:
    """The counts of a progress line: ``120/300 sent 200 failed 3 45/s 0:04 left``."""
    of = "?" if snapshot.total is None else str(snapshot.total)
    left = time_left(snapshot, rate)
    eta = "-:-- left" if left is None else f"{format_duration(left)} left"
    return (
        f"{snapshot.done}/{of}  sent {snapshot.sent}  failed {snapshot.failed}  "
        f"{format_rate(rate)}  {eta}"
    )


class _Line:
    def __init__(self, name: str, counters: MapCounters) -> None:
        self.name = name
        self.counters = counters
        self.meter = RateMeter()


class _Board:
    """The maps on screen, one line each, and the rich live display drawing them."""

    def __init__(self) -> None:
        # _screen orders the starts, final draws and stops of the display; _lock guards
        # only the list, which rich's refresh thread reads while it holds its own lock.
        self._screen = threading.Lock()
        self._lock = threading.Lock()
        self._lines: list[_Line] = []
        self._live: Live | None = None

    def render(self) -> RenderableType:
        from rich.progress_bar import ProgressBar
        from rich.table import Table

        grid = Table.grid(padding=(0, 1))
        now = time.monotonic()
        with self._lock:
            lines = list(self._lines)
        for line in lines:
            snapshot = Snapshot.of(line.counters)
            rate = line.meter.sample(now, snapshot.done)
            total = snapshot.total if snapshot.total is not None else max(snapshot.sent, 1)
            bar = ProgressBar(total=total, completed=snapshot.done, width=BAR_WIDTH)
            grid.add_row(line.name, bar, describe(snapshot, rate))
        return grid

    def add(self, line: _Line) -> None:
        with self._screen:
            with self._lock:
                self._lines.append(line)
            if self._live is None:
                self._live = self._start()

    def remove(self, line: _Line) -> None:
        with self._screen:
            live = self._live
            if live is None:
                return
            live.refresh()  # its final counts, drawn once before the line goes
            with self._lock:
                self._lines.remove(line)
                last = not self._lines
            if last:
                self._live = None
                live.stop()  # transient: the display erases itself
            else:
                live.refresh()

    def _start(self) -> Live:
        from rich.console import Console
        from rich.live import Live

        console = Console(file=sys.stderr, force_terminal=True)
        live = Live(
            console=console,
            get_renderable=self.render,
            refresh_per_second=REFRESH_HZ,
            transient=True,
        )
        live.start()
        return live


class _Output:
    """Whether :func:`enable_output` is in force (in any thread: a blocking map runs on
    Warren's own loop thread, so a context variable would not reach it)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._depth = 0
        self.board = _Board()

    @property
    def enabled(self) -> bool:
        return self._depth > 0

    def enter(self) -> None:
        with self._lock:
            self._depth += 1

    def exit(self) -> None:
        with self._lock:
            self._depth -= 1


_OUTPUT = _Output()


@contextlib.contextmanager
def enable_output() -> Iterator[None]:
    """Show a live progress line for each ``map``, ``starmap`` and ``for_each`` run inside.

    The lines go to stderr, only when it is a terminal; ``warren run`` enables them
    for its entrypoint::

        with warren.enable_output():
            for result in square.map(range(10_000)):
                ...
    """
    _OUTPUT.enter()
    try:
        yield
    finally:
        _OUTPUT.exit()


def _terminal() -> bool:
    stream = sys.stderr
    return stream is not None and stream.isatty()


@contextlib.contextmanager
def shown(name: str, counters: MapCounters) -> Iterator[None]:
    """Draw one map's progress line while the block runs, if output is enabled."""
    if not _OUTPUT.enabled or not _terminal():
        yield
        return
    line = _Line(name, counters)
    board = _OUTPUT.board
    board.add(line)
    try:
        yield
    finally:
        board.remove(line)
