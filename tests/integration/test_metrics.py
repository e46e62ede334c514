"""The engine's Prometheus metrics at <http base>/metrics, read over HTTP as Prometheus
reads them: counters that move by exactly what a map did, behind the dashboard token."""

from __future__ import annotations

import os
import signal
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import warren
from prometheus_client.parser import text_string_to_metric_families
from support import EngineProcess, engine_running, forget_environment, wait_until

ENVIRONMENT = f"test-metrics-{uuid.uuid4().hex[:8]}"
TOKEN = f"dashboard-{uuid.uuid4().hex}"
app = warren.App("test-metrics", environment=ENVIRONMENT)
INPUTS = 30  # x % 3: 0 always fails, 1 fails its first attempt, 2 succeeds


@app.function(max_inputs=4, retries=warren.Retries(max_retries=1, initial_delay=0.1))
def judge(log: str, x: int) -> int:
    if x % 3 == 0:
        raise ValueError(f"{x} is never good")
    if x % 3 == 1:
        tried = Path(log).read_text().split() if Path(log).exists() else []
        if str(x) not in tried:
            with open(log, "a") as handle:
                handle.write(f"{x}\n")
            raise RuntimeError(f"first attempt of {x}")
    return x


@app.function(timeout=1)
def dawdles(seconds: float) -> None:
    time.sleep(seconds)


@app.function()
def crashes() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


Samples = dict[tuple[str, str, tuple[tuple[str, str], ...]], float]


def _base(engine: EngineProcess) -> str:
    port = int((engine.state_dir / "http-port").read_text())  # where the daemon serves
    return f"http://127.0.0.1:{port}"


def _get(url: str, token: str | None = None) -> tuple[int, str, str]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=10) as r:
            return r.status, r.headers.get("Content-Type", ""), r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get("Content-Type", ""), exc.read().decode()


def _scrape(engine: EngineProcess, token: str | None = TOKEN) -> Samples:
    status, _, text = _get(f"{_base(engine)}/metrics", token)
    assert status == 200, text
    return {
        (sample.name, sample.labels.get("function", ""), _other_labels(sample.labels)): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.labels.get("environment") == ENVIRONMENT
    }


def _other_labels(labels: dict[str, str]) -> tuple[tuple[str, str], ...]:
    return tuple(sorted((k, v) for k, v in labels.items() if k in ("le", "cause")))


def _counter(samples: Samples, name: str, function: str, **labels: str) -> float:
    return samples.get((f"warren_{name}", function, tuple(sorted(labels.items()))), 0.0)


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory, broker_url: str) -> Iterator[EngineProcess]:
    state = tmp_path_factory.mktemp("metrics") / "engine-state"
    env = {"WARREN_DASHBOARD_TOKEN": TOKEN, "WARREN_CRASH_LIMIT": "2"}
    try:
        with engine_running(state, env) as daemon, app.run():
            yield daemon
    finally:
        forget_environment(ENVIRONMENT)


def test_metrics_need_the_dashboard_token_unless_they_are_public(engine: EngineProcess) -> None:
    url = f"{_base(engine)}/metrics"
    assert _get(url)[0] == 401
    assert _get(url, "not-the-token")[0] == 401
    status, content_type, text = _get(url, TOKEN)
    assert status == 200 and content_type.startswith("text/plain")
    names = {family.name for family in text_string_to_metric_families(text)}
    assert {"warren_inputs_received", "warren_input_run_seconds"} <= names


def test_a_map_moves_the_counters_by_exactly_the_inputs_sent_succeeded_failed_and_retried(
    engine: EngineProcess, tmp_path: Path
) -> None:
    # Given the metrics of judge before the map
    before = _scrape(engine)
    # When a map sends 30 inputs: 10 fail for good after their retry, 10 succeed at their
    # retry, 10 succeed at once
    results = list(
        judge.map([str(tmp_path / "tried")] * INPUTS, range(INPUTS), return_exceptions=True)
    )
    failures = [r for r in results if isinstance(r, ValueError)]
    assert len(failures) == INPUTS // 3
    assert [r for r in results if isinstance(r, int)] == [x for x in range(INPUTS) if x % 3]
    expected = {
        "inputs_received_total": INPUTS,
        "inputs_succeeded_total": 2 * INPUTS // 3,
        "inputs_failed_total": INPUTS // 3,
        "inputs_retried_total": 2 * INPUTS // 3,
        "inputs_timed_out_total": 0,
        "input_run_seconds_count": INPUTS + 2 * INPUTS // 3,  # every attempt
    }

    def moved() -> dict[str, float]:
        after = _scrape(engine)
        return {
            name: _counter(after, name, "judge") - _counter(before, name, "judge")
            for name in expected
        }

    # Then once the containers' reports are in, each counter moved by exactly that much
    assert wait_until(lambda: moved() == expected, 30), moved()
    time.sleep(1.0)  # a few reports later: nothing was counted twice
    assert moved() == expected
    after = _scrape(engine)
    # And every input that started from the caller's message had its queue wait measured
    waits = _counter(after, "input_queue_wait_seconds_count", "judge") - _counter(
        before, "input_queue_wait_seconds_count", "judge"
    )
    assert 0 < waits <= INPUTS
    assert _counter(after, "input_run_seconds_bucket", "judge", le="+Inf") == _counter(
        after, "input_run_seconds_count", "judge"
    )
    # And the pool's gauges and cold starts are there, labelled by node
    assert _counter(after, "containers_running", "judge") >= 1
    assert _counter(after, "cold_starts_total", "judge") >= 1
    assert _counter(after, "queue_messages", "judge") == 0


def test_a_timeout_and_a_dead_letter_by_the_crash_limit_are_counted(
    engine: EngineProcess,
) -> None:
    before = _scrape(engine)
    with pytest.raises(warren.FunctionTimeoutError):
        dawdles.remote(5.0)
    with pytest.raises(warren.DeadLetteredError):
        crashes.remote()

    def moved() -> tuple[float, ...]:
        after = _scrape(engine)
        return tuple(
            _counter(after, name, function, **labels) - _counter(before, name, function, **labels)
            for name, function, labels in (
                ("inputs_timed_out_total", "dawdles", {}),
                ("inputs_failed_total", "dawdles", {}),
                ("inputs_received_total", "dawdles", {}),
                ("inputs_dead_lettered_total", "crashes", {"cause": "crash_limit"}),
                ("inputs_failed_total", "crashes", {}),  # dead-lettered, not failed
            )
        )

    # (What a killed container counted since its last report is lost with it: here, that
    # it received the input.)
    assert wait_until(lambda: moved() == (1, 1, 1, 1, 0), 30), moved()


def test_public_metrics_answer_without_a_token(tmp_path: Path, broker_url: str) -> None:
    # An engine of a run of its own (a private control queue: the module's daemon has
    # the shared one), told its metrics are public
    public = EngineProcess(
        tmp_path / "public-state",
        {"WARREN_METRICS_PUBLIC": "1"},
        args=("--run-id", f"metrics-{uuid.uuid4().hex[:8]}"),
    )
    public.start()
    try:
        status, _, text = _get(f"{_base(public)}/metrics")
    finally:
        assert public.stop() == 0
    assert status == 200
    assert {family.name for family in text_string_to_metric_families(text)} >= {
        "warren_inputs_received",
        "warren_containers_running",
    }
