"""What a container counts of the inputs it runs: the outcomes, run times and queue waits.

Only a container knows how an input ended (succeeded, failed for good, retried, timed
out) and how long it ran, so it keeps a :class:`Tally` since it started and sends it
with every ``Status`` report (:mod:`warren_engine.pipe.messages`). Its engine adds the
difference between two reports to the function's metrics
(:mod:`warren_engine.pool.metrics`): counts are cumulative, so a report that is never
sent (the container was killed) loses only what happened since the last one, and the
engine's counters never go down.

Counting is an integer increment and, for the two histograms, a list append: the values
are put in their buckets in bulk when the tally is copied for a report. No lock
(outcomes are counted on the container's event loop). No I/O.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable
from dataclasses import dataclass, field

# Upper bounds, in seconds, of the buckets of both histograms (a last one, +Inf, follows):
# from a millisecond (a fast function) to half an hour (the broker's consumer timeout).
SECONDS_BUCKETS: tuple[float, ...] = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    300.0,
    1800.0,
)


class Histogram:
    """Observations in the buckets of :data:`SECONDS_BUCKETS`: a count per bucket (not
    cumulative; the last one is +Inf) and the sum of the values.

    :meth:`observe` only appends the value to a list (it *is* that list's ``append``:
    a C call, nothing else, on a container's path per input). The values are put in
    their buckets in bulk when the counts are next read (``counts``, ``total``,
    :meth:`copy`...) or :meth:`fold` is called. A negative value counts as 0.
    """

    __slots__ = ("_counts", "_pending", "_total", "observe")

    def __init__(self, counts: list[int] | None = None, total: float = 0.0) -> None:
        self._counts = counts if counts is not None else [0] * (len(SECONDS_BUCKETS) + 1)
        self._total = total
        self._pending: list[float] = []
        self.observe: Callable[[float], None] = self._pending.append

    def fold(self) -> None:
        """Count the values observed since the last fold in their buckets."""
        pending = self._pending
        if not pending:
            return
        counts, values = self._counts, pending
        total = sum(values)
        if min(values) < 0.0:  # a negative value counts as 0
            total -= sum(value for value in values if value < 0.0)
        # Bucket after bucket, the values above its bound are kept by a C-level filter
        # (most values of a fast function are in the first bucket: one pass counts them),
        # while that takes away at least half of what is left; the rest one by one.
        index = 0
        while values and index < len(SECONDS_BUCKETS):
            above = list(filter(SECONDS_BUCKETS[index].__lt__, values))
            counts[index] += len(values) - len(above)
            index += 1
            if 2 * len(above) > len(values):
                values = above
                break
            values = above
        else:
            counts[-1] += len(values)
            values = []
        for value in values:
            # A value equal to a bound belongs to that bound's bucket (Prometheus's ``le``).
            counts[bisect.bisect_left(SECONDS_BUCKETS, value)] += 1
        self._total += total
        pending.clear()

    @property
    def pending(self) -> int:
        """Values observed and not folded yet."""
        return len(self._pending)

    @property
    def counts(self) -> list[int]:
        self.fold()
        return self._counts

    @property
    def total(self) -> float:
        self.fold()
        return self._total

    @property
    def count(self) -> int:
        return sum(self.counts)

    def cumulative(self) -> list[int]:
        """Observations at or below each bound, then the total (Prometheus's buckets)."""
        running, out = 0, []
        for count in self.counts:
            running += count
            out.append(running)
        return out

    def add_difference(self, new: Histogram, old: Histogram) -> None:
        """Add what ``new`` observed since ``old`` (an earlier state of the same one)."""
        counts, old_counts = self.counts, old.counts
        for index, count in enumerate(new.counts):
            counts[index] += count - old_counts[index]
        self._total += new.total - old.total

    def copy(self) -> Histogram:
        return Histogram(list(self.counts), self.total)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Histogram):
            return NotImplemented
        return self.counts == other.counts and self.total == other.total

    __hash__ = None  # type: ignore[assignment]  # mutable, like the dataclass it was

    def __repr__(self) -> str:
        return f"Histogram(counts={self.counts!r}, total={self.total!r})"


@dataclass(slots=True)
class Tally:
    """A container's counts since it started.

    ``received``: inputs of messages a caller published, taken at their first delivery
    (not retries, nor inputs handed back or redelivered, which come again);
    ``succeeded`` and ``failed``: final outcomes (the caller got a value, or an error
    after the last attempt); ``retried``: failed attempts that are tried again;
    ``timed_out``: attempts that ran past the function's timeout (each also counts as
    failed or retried). ``run_seconds``: how long each attempt ran; ``queue_wait``: how
    long an input waited from its caller's publish to its start, where the message says
    when it was published.
    """

    received: int = 0
    succeeded: int = 0
    failed: int = 0
    retried: int = 0
    timed_out: int = 0
    run_seconds: Histogram = field(default_factory=Histogram)
    queue_wait: Histogram = field(default_factory=Histogram)

    @property
    def outcomes(self) -> int:
        """Attempts that ended: what a report is worth sending for."""
        return self.succeeded + self.failed + self.retried

    def fold(self, over: int = 0) -> None:
        """Count the run times and waits observed in their buckets (if more than ``over``
        wait to be: a container bounds what it keeps between reports)."""
        for histogram in (self.run_seconds, self.queue_wait):
            if histogram.pending > over:
                histogram.fold()

    def copy(self) -> Tally:
        return Tally(
            self.received,
            self.succeeded,
            self.failed,
            self.retried,
            self.timed_out,
            self.run_seconds.copy(),
            self.queue_wait.copy(),
        )

    def add_difference(self, new: Tally, old: Tally) -> None:
        """Add what ``new`` counted since ``old`` (an earlier report of one container)."""
        self.received += new.received - old.received
        self.succeeded += new.succeeded - old.succeeded
        self.failed += new.failed - old.failed
        self.retried += new.retried - old.retried
        self.timed_out += new.timed_out - old.timed_out
        self.run_seconds.add_difference(new.run_seconds, old.run_seconds)
        self.queue_wait.add_difference(new.queue_wait, old.queue_wait)
