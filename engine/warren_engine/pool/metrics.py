"""The engine's Prometheus metrics: what its pools saw, per environment, app and function.

The HTTP gateway serves them at ``/metrics`` (see :mod:`warren_engine.daemon.gateway`),
from a registry of the engine's own, never ``prometheus_client``'s global one. Every
series has the labels ``environment``, ``app`` (the app's name, not a run's instance),
``function`` (its tag: a function and its ``with_options`` variants are one series) and
``node`` (the engine node's name); never a call id, so their number stays bounded.

=====================================  =========  ===========================================
metric                                 type       what it counts
=====================================  =========  ===========================================
warren_inputs_received_total           counter    inputs of callers' messages that a
                                                  container took, at their first delivery
warren_inputs_succeeded_total          counter    inputs whose caller got a value
warren_inputs_failed_total             counter    inputs whose caller got an error (after
                                                  the last attempt)
warren_inputs_retried_total            counter    failed attempts tried again (``retries``)
warren_inputs_timed_out_total          counter    attempts that ran past their timeout
warren_inputs_dead_lettered_total      counter    dead letters, by ``cause``: ``crash_limit``
                                                  (one per input) or ``rejected`` (a message
                                                  that failed verification or expired)
warren_cold_starts_total               counter    containers started
warren_input_run_seconds               histogram  how long each attempt ran
warren_input_queue_wait_seconds        histogram  from a caller's publish to the input's start
warren_containers_running              gauge      containers ready to run inputs
warren_containers_starting             gauge      containers started and not ready yet
warren_inputs_running                  gauge      inputs containers hold (running or next)
warren_queue_messages                  gauge      messages ready in the function's queue
warren_queue_inputs                    gauge      ... and the inputs they hold, estimated
=====================================  =========  ===========================================

The outcome counts and the histograms come from the containers' tallies
(:mod:`warren_engine.pipe.tally`), added as their reports arrive; the gauges are read
from the live pools when Prometheus scrapes. Counters belong to the engine, not to a
pool, so they never go down when an app is redeployed or stopped. No I/O.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import CollectorRegistry

from warren_engine.pipe.tally import SECONDS_BUCKETS, Histogram, Tally

CONTENT_TYPE = CONTENT_TYPE_LATEST
LABELS = ("environment", "app", "function", "node")
CRASH_LIMIT = "crash_limit"  # the causes of a dead letter
REJECTED = "rejected"
# The ``le`` labels, as prometheus_client writes its own (``0.001``, ``1.0``, ``+Inf``).
_BOUNDS = [repr(float(bound)) for bound in SECONDS_BUCKETS] + ["+Inf"]

# (name without _total, help, the count in a function's tally)
_OUTCOMES: tuple[tuple[str, str, Callable[[Tally], int]], ...] = (
    (
        "warren_inputs_received",
        "Inputs of callers' messages taken by a container.",
        lambda tally: tally.received,
    ),
    ("warren_inputs_succeeded", "Inputs whose caller got a value.", lambda tally: tally.succeeded),
    (
        "warren_inputs_failed",
        "Inputs whose caller got an error, after the last attempt.",
        lambda tally: tally.failed,
    ),
    ("warren_inputs_retried", "Failed attempts tried again.", lambda tally: tally.retried),
    (
        "warren_inputs_timed_out",
        "Attempts that ran past the function's timeout.",
        lambda tally: tally.timed_out,
    ),
)


@dataclass(frozen=True, slots=True)
class PoolGauges:
    """What one pool runs now, read when Prometheus scrapes."""

    containers_running: int = 0
    containers_starting: int = 0
    inputs_running: int = 0
    queue_messages: int = 0
    queue_inputs: int = 0


_GAUGES: tuple[tuple[str, str, Callable[[PoolGauges], int]], ...] = (
    (
        "warren_containers_running",
        "Containers ready to run inputs.",
        lambda g: g.containers_running,
    ),
    ("warren_containers_starting", "Containers not ready yet.", lambda g: g.containers_starting),
    ("warren_inputs_running", "Inputs containers hold.", lambda g: g.inputs_running),
    ("warren_queue_messages", "Messages ready in the queue.", lambda g: g.queue_messages),
    ("warren_queue_inputs", "Inputs ready in the queue (estimated).", lambda g: g.queue_inputs),
)


class GaugeSource(Protocol):
    def gauges(self) -> PoolGauges: ...


class FunctionMetrics:
    """One function's series on this node: its pools add to them and are read by them.

    Owned by :class:`EngineMetrics` (one per function, kept while the engine runs); a
    pool is given its own at construction.
    """

    __slots__ = ("_pools", "cold_starts", "dead_lettered", "key", "tally")

    def __init__(self, key: tuple[str, str, str]) -> None:
        self.key = key  # environment, app, function
        self.tally = Tally()
        self.cold_starts = 0
        self.dead_lettered: dict[str, int] = {}
        self._pools: list[GaugeSource] = []

    def reported(self, new: Tally, old: Tally) -> None:
        """A container reported ``new``; its report before was ``old``."""
        self.tally.add_difference(new, old)

    def dead_letter(self, cause: str) -> None:
        self.dead_lettered[cause] = self.dead_lettered.get(cause, 0) + 1

    def attach(self, pool: GaugeSource) -> None:
        """Read ``pool``'s gauges from now on (a function may have several: its variants)."""
        if pool not in self._pools:
            self._pools.append(pool)

    def detach(self, pool: GaugeSource) -> None:
        if pool in self._pools:
            self._pools.remove(pool)

    def gauges(self) -> PoolGauges:
        read = [pool.gauges() for pool in self._pools]
        return PoolGauges(
            sum(g.containers_running for g in read),
            sum(g.containers_starting for g in read),
            sum(g.inputs_running for g in read),
            sum(g.queue_messages for g in read),
            sum(g.queue_inputs for g in read),
        )


class EngineMetrics:
    """Every function's series on this engine node, and the registry that exposes them."""

    def __init__(self, node: str) -> None:
        self.node = node
        self._functions: dict[tuple[str, str, str], FunctionMetrics] = {}
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_Collector(self))

    def function(self, environment: str, app: str, function: str) -> FunctionMetrics:
        """The series of one function (made on first use)."""
        key = (environment, app, function)
        found = self._functions.get(key)
        if found is None:
            found = self._functions[key] = FunctionMetrics(key)
        return found

    def functions(self) -> list[FunctionMetrics]:
        return [self._functions[key] for key in sorted(self._functions)]

    def exposition(self) -> bytes:
        """The metrics in Prometheus's text format (served as :data:`CONTENT_TYPE`)."""
        return generate_latest(self.registry)


class _Collector:
    """Turns the engine's series into metric families at each scrape."""

    def __init__(self, metrics: EngineMetrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterable[Metric]:
        functions = self._metrics.functions()
        node = self._metrics.node
        labelled = [(metrics, [*metrics.key, node]) for metrics in functions]
        for name, documentation, count in _OUTCOMES:
            counter = CounterMetricFamily(name, documentation, labels=LABELS)
            for metrics, labels in labelled:
                counter.add_metric(labels, count(metrics.tally))
            yield counter
        yield self._dead_letters(labelled)
        cold = CounterMetricFamily("warren_cold_starts", "Containers started.", labels=LABELS)
        for metrics, labels in labelled:
            cold.add_metric(labels, metrics.cold_starts)
        yield cold
        run = HistogramMetricFamily(
            "warren_input_run_seconds", "How long each attempt ran.", labels=LABELS
        )
        wait = HistogramMetricFamily(
            "warren_input_queue_wait_seconds",
            "From a caller's publish to the input's start in a container.",
            labels=LABELS,
        )
        for metrics, labels in labelled:
            _add_histogram(run, labels, metrics.tally.run_seconds)
            _add_histogram(wait, labels, metrics.tally.queue_wait)
        yield run
        yield wait
        yield from self._gauges(labelled)

    @staticmethod
    def _dead_letters(labelled: list[tuple[FunctionMetrics, list[str]]]) -> Metric:
        family = CounterMetricFamily(
            "warren_inputs_dead_lettered",
            "Dead letters, by cause: crash_limit (one per input) or rejected (a message).",
            labels=(*LABELS, "cause"),
        )
        for metrics, labels in labelled:
            for cause in (CRASH_LIMIT, REJECTED):
                family.add_metric([*labels, cause], metrics.dead_lettered.get(cause, 0))
        return family

    @staticmethod
    def _gauges(labelled: list[tuple[FunctionMetrics, list[str]]]) -> Iterable[Metric]:
        read = [(metrics.gauges(), labels) for metrics, labels in labelled]
        for name, documentation, value in _GAUGES:
            gauge = GaugeMetricFamily(name, documentation, labels=LABELS)
            for gauges, labels in read:
                gauge.add_metric(labels, value(gauges))
            yield gauge


def _add_histogram(family: HistogramMetricFamily, labels: list[str], seen: Histogram) -> None:
    buckets = list(zip(_BOUNDS, seen.cumulative(), strict=True))
    family.add_metric(labels, buckets, sum_value=seen.total)
