"""The engine's metrics: Prometheus text the client library parses, one series per
function and node, counters that only go up; and the token /metrics asks for."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp.test_utils import make_mocked_request
from prometheus_client.parser import text_string_to_metric_families
from warren.config import Settings
from warren.wire.spec import FunctionSpec
from warren_engine.container.container import FunctionConfig
from warren_engine.daemon.dashboard.access import authorized
from warren_engine.pipe.tally import SECONDS_BUCKETS, Tally
from warren_engine.pool.autoscaler import Autoscaling
from warren_engine.pool.cancel_memory import CancelMemory
from warren_engine.pool.metrics import CRASH_LIMIT, REJECTED, EngineMetrics
from warren_engine.pool.pool import ContainerPool
from warren_engine.publisher import Republisher

ROOT = Path(__file__).resolve().parents[2]


def _samples(metrics: EngineMetrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = metrics.exposition().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def _labels(function: str, **more: str) -> tuple[tuple[str, str], ...]:
    labels = {"environment": "main", "app": "shop", "function": function, "node": "n1", **more}
    return tuple(sorted(labels.items()))


def _report(**counts: int) -> Tally:
    tally = Tally(**counts)
    tally.run_seconds.observe(0.02)
    tally.run_seconds.observe(3.0)
    tally.queue_wait.observe(0.004)
    return tally


def test_a_function_s_counts_come_out_as_prometheus_text_with_its_labels() -> None:
    # Given two reports from one container of shop.pay and a dead letter
    metrics = EngineMetrics("n1")
    pay = metrics.function("main", "shop", "pay")
    first = _report(received=3, succeeded=1)
    pay.reported(first, Tally())
    pay.reported(_report(received=10, succeeded=6, failed=2, retried=3, timed_out=1), first)
    pay.dead_letter(CRASH_LIMIT)
    pay.cold_starts += 2
    metrics.function("main", "shop", "refund")  # a function nothing happened to yet
    # When the metrics are read as Prometheus would
    samples = _samples(metrics)
    # Then each counter is the container's latest count, labelled by function and node
    pay_labels = _labels("pay")
    assert samples["warren_inputs_received_total", pay_labels] == 10
    assert samples["warren_inputs_succeeded_total", pay_labels] == 6
    assert samples["warren_inputs_failed_total", pay_labels] == 2
    assert samples["warren_inputs_retried_total", pay_labels] == 3
    assert samples["warren_inputs_timed_out_total", pay_labels] == 1
    assert samples["warren_cold_starts_total", pay_labels] == 2
    assert samples["warren_inputs_dead_lettered_total", _labels("pay", cause=CRASH_LIMIT)] == 1
    assert samples["warren_inputs_dead_lettered_total", _labels("pay", cause=REJECTED)] == 0
    assert samples["warren_inputs_received_total", _labels("refund")] == 0
    # And the histograms have every bucket, cumulative, with the count and the sum
    assert samples["warren_input_run_seconds_count", pay_labels] == 2
    assert samples["warren_input_run_seconds_sum", pay_labels] == pytest.approx(3.02)
    assert samples["warren_input_run_seconds_bucket", _labels("pay", le="0.025")] == 1
    assert samples["warren_input_run_seconds_bucket", _labels("pay", le="5.0")] == 2
    assert samples["warren_input_run_seconds_bucket", _labels("pay", le="+Inf")] == 2
    assert samples["warren_input_queue_wait_seconds_bucket", _labels("pay", le="0.001")] == 0
    assert samples["warren_input_queue_wait_seconds_bucket", _labels("pay", le="0.005")] == 1
    buckets = [name for name, labels in samples if name == "warren_input_run_seconds_bucket"]
    assert len(buckets) == 2 * (len(SECONDS_BUCKETS) + 1)
    assert samples["warren_containers_running", pay_labels] == 0


def _pool(tag: str, metrics: EngineMetrics) -> ContainerPool:
    async def empty(queue: str) -> int:
        return 0  # an empty queue: the autoscaler starts nothing

    async def never(*_: Any) -> int:
        raise AssertionError("not called")

    return ContainerPool(
        FunctionConfig(
            "amqp://",
            "main",
            "shop-run-1",
            f"queue.{tag}",
            FunctionSpec(tag, False),
            "/code",
            Settings.from_environment({}),
        ),
        Autoscaling(),
        CancelMemory(),
        empty,
        never,
        Republisher(None, "main", "classic"),  # type: ignore[arg-type]
        metrics=metrics.function("main", "shop", tag),
    )


async def test_a_pool_s_gauges_are_read_while_it_runs_and_its_counters_outlive_it() -> None:
    # Given a pool that started (with no warm container) and one report counted
    metrics = EngineMetrics("n1")
    pool = _pool("pay", metrics)
    await pool.start(0)
    series = metrics.function("main", "shop", "pay")
    series.reported(_report(received=4, succeeded=4), Tally())
    assert series.gauges() == pool.gauges()
    # When it stops (a redeploy, say)
    await pool.stop(grace=1.0)
    # Then its counts stay: a counter never goes down
    assert _samples(metrics)["warren_inputs_succeeded_total", _labels("pay")] == 4


def test_metrics_live_in_a_registry_of_the_engine_s_own() -> None:
    from prometheus_client import REGISTRY

    metrics = EngineMetrics("n1")
    metrics.function("main", "shop", "pay")
    assert metrics.registry is not REGISTRY
    assert REGISTRY.get_sample_value("warren_inputs_received_total") is None


@pytest.mark.parametrize(
    ("header", "token", "matches"),
    [
        ("Bearer s3cret-token", "s3cret-token", True),
        ("bearer s3cret-token", "s3cret-token", True),
        ("Bearer  s3cret-token ", "s3cret-token", True),
        ("Bearer s3cret-tokex", "s3cret-token", False),
        ("Bearer s3cret", "s3cret-token", False),
        ("Basic s3cret-token", "s3cret-token", False),
        ("s3cret-token", "s3cret-token", False),
        (None, "s3cret-token", False),
    ],
)
def test_only_the_bearer_of_the_token_is_let_in(
    header: str | None, token: str, matches: bool
) -> None:
    request = make_mocked_request(
        "GET", "/metrics", headers={"Authorization": header} if header else {}
    )
    assert authorized(request, token) is matches


def _exported_sample_names() -> set[str]:
    metrics = EngineMetrics("n1")
    metrics.function("main", "shop", "pay")
    text = metrics.exposition().decode()
    return {
        sample.name for family in text_string_to_metric_families(text) for sample in family.samples
    }


def test_the_grafana_dashboard_queries_only_metrics_the_engine_exports() -> None:
    dashboard = json.loads((ROOT / "broker_config" / "grafana" / "warren.json").read_text())
    exprs = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    used = {name for expr in exprs for name in re.findall(r"\bwarren_[a-z_]+", expr)}
    assert used, "the dashboard queries nothing"
    assert used <= _exported_sample_names()
    titles = {panel["title"] for panel in dashboard["panels"]}
    assert {"Throughput by function", "Failures", "Run time p50 / p95", "Queue depth"} <= titles
    assert all(panel["datasource"]["uid"] == "${datasource}" for panel in dashboard["panels"])


def test_the_example_scrape_config_reads_metrics_with_the_dashboard_token() -> None:
    config = yaml.safe_load((ROOT / "broker_config" / "prometheus.yml").read_text())
    (warren,) = [job for job in config["scrape_configs"] if job["job_name"] == "warren"]
    assert warren["metrics_path"] == "/metrics"
    assert warren["authorization"]["type"] == "Bearer"
    assert warren["static_configs"][0]["targets"]
