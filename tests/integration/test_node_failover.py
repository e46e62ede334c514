"""A client and an engine given every node of a RabbitMQ cluster in WARREN_BROKER_URL
carry on through the death (kill -9) of a broker node: of a node they are not on, and
of the node they are connected to, whose connections move to the other nodes (Step 11).

Quorum queues (WARREN_QUEUE_TYPE=quorum), replicated on the three nodes, so the
function's queue outlives any one node."""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import warren
from cluster import CTL, CTL_ENV, NODES, RabbitCluster, node_name
from support import (
    EngineProcess,
    engine_running,
    forget_environment,
    running_in_own_environment,
    settings_afresh,
    wait_until,
)

pytestmark = pytest.mark.cluster

ENVIRONMENT = f"test-failover-{uuid.uuid4().hex[:8]}"
app = warren.App("test-failover", environment=ENVIRONMENT)


@app.function()
def double(x: int) -> int:
    return 2 * x


def amqp_port(index: int) -> int:
    return 5700 + index


def connection_ports(cluster: RabbitCluster, since_ms: int) -> list[int]:
    """The server port (so the node) of every connection to the cluster opened since
    ``since_ms`` (epoch milliseconds), asked of a live node: the test's client, engine and
    containers (an earlier test's client, still open, is left out)."""
    for index in NODES:
        if index in cluster.killed:
            continue
        done = subprocess.run(
            [
                CTL,
                "-n",
                node_name(index),
                "-q",
                "list_connections",
                "port",
                "connected_at",
                "--formatter",
                "json",
            ],
            capture_output=True,
            text=True,
            env=CTL_ENV,
            timeout=60,
            check=False,
        )
        if done.returncode == 0:
            rows = json.loads(done.stdout)
            return sorted(int(row["port"]) for row in rows if row["connected_at"] >= since_ms)
    raise LookupError("no node answers")


@dataclass(frozen=True)
class OnCluster:
    engine: EngineProcess
    ports: Callable[[], list[int]]  # of the connections made since the setup began


@pytest.fixture
def engine_on_cluster(rabbit_cluster: RabbitCluster, tmp_path: Path) -> Iterator[OnCluster]:
    """An engine, this process's client and the app in ENVIRONMENT, all on the three nodes
    (node 1 first), with quorum queues; every killed node restarted after the test, before
    the app and the engine are stopped (RabbitMQ 3.10 takes tens of seconds to delete a
    quorum queue or a stream with a member down, and may close the connections of its
    consumers meanwhile)."""
    variables = {"WARREN_BROKER_URL": rabbit_cluster.url, "WARREN_QUEUE_TYPE": "quorum"}
    since_ms = int(time.time() * 1000) - 1000  # the broker's clock may lag a little
    with pytest.MonkeyPatch.context() as patch:
        for name, value in variables.items():
            patch.setenv(name, value)
        settings_afresh(patch)
        try:
            with (
                engine_running(tmp_path / "state", variables, tmp_path / "engine.log") as engine,
                running_in_own_environment(app, ENVIRONMENT),
            ):
                try:
                    yield OnCluster(engine, lambda: connection_ports(rabbit_cluster, since_ms))
                finally:
                    rabbit_cluster.restore()
            # The engine served ENVIRONMENT until it stopped: what it made again goes now.
            forget_environment(ENVIRONMENT)
        finally:
            rabbit_cluster.restore()


@pytest.mark.timeout(240)
def test_calls_carry_on_when_a_node_nobody_is_connected_to_is_killed(
    rabbit_cluster: RabbitCluster, engine_on_cluster: OnCluster
) -> None:
    # Given a client and an engine on node 1, the first URL, and a call that went through
    assert double.remote(1) == 2
    ports = engine_on_cluster.ports()
    assert ports and set(ports) == {amqp_port(1)}
    # When node 3 is killed
    rabbit_cluster.kill(3)
    assert not rabbit_cluster.is_up(3)
    # Then calls go through as before, on the same connections
    assert [double.remote(x) for x in range(5)] == [0, 2, 4, 6, 8]
    assert engine_on_cluster.ports() == ports
    process = engine_on_cluster.engine.process
    assert process is not None and process.poll() is None


@pytest.mark.timeout(240)
def test_a_client_and_an_engine_move_to_another_node_when_theirs_is_killed(
    rabbit_cluster: RabbitCluster, engine_on_cluster: OnCluster
) -> None:
    # Given a client, an engine and its container connected to node 1, the first URL
    assert double.remote(1) == 2
    before = engine_on_cluster.ports()
    assert len(before) >= 3 and set(before) == {amqp_port(1)}
    # When node 1 is killed -9
    rabbit_cluster.kill(1)
    assert not rabbit_cluster.is_up(1)
    # Then calls go through the other nodes, the same engine process serving them
    assert [double.remote(x) for x in range(5)] == [0, 2, 4, 6, 8]
    process = engine_on_cluster.engine.process
    assert process is not None and process.poll() is None
    # And every connection came back, on node 2 or 3
    assert wait_until(lambda: len(engine_on_cluster.ports()) >= len(before), 30)
    assert set(engine_on_cluster.ports()) <= {amqp_port(2), amqp_port(3)}
