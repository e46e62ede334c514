"""A RabbitMQ cluster of three nodes: clients, engines and containers given every node in
WARREN_BROKER_URL connect past a dead node, and with quorum queues a map and spawned
calls lose nothing when the node leading the function's queue is killed (Step 11)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import warren
from cluster import RabbitCluster
from support import engine_running, running_in_own_environment, settings_afresh
from warren.wire import naming

pytestmark = pytest.mark.cluster

ENVIRONMENT = f"test-cluster-{uuid.uuid4().hex[:8]}"
app = warren.App("test-cluster", environment=ENVIRONMENT)
MAP_INPUTS = 5000
SPAWNS = 200


@app.function()
def square(x: int) -> int:
    return x * x


@pytest.fixture
def on_cluster(rabbit_cluster: RabbitCluster) -> Iterator[RabbitCluster]:
    """This process (its clients) and the engines it starts use the three nodes, with
    quorum queues (replicated on all three)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("WARREN_BROKER_URL", rabbit_cluster.url)
        patch.setenv("WARREN_QUEUE_TYPE", "quorum")
        settings_afresh(patch)
        yield rabbit_cluster


def engine_env(cluster: RabbitCluster) -> dict[str, str]:
    return {"WARREN_BROKER_URL": cluster.url, "WARREN_QUEUE_TYPE": "quorum"}


def function_queue(cluster: RabbitCluster) -> str:
    names = cluster.queues(f"{naming.PREFIX}.{ENVIRONMENT}.")
    (queue,) = [name for name in names if naming.function_of_queue(name) is not None]
    return queue


@pytest.mark.timeout(180)
def test_a_client_and_an_engine_connect_past_a_dead_first_node(
    on_cluster: RabbitCluster, tmp_path: Path
) -> None:
    # Given the first node of WARREN_BROKER_URL killed
    on_cluster.kill(1)
    try:
        assert not on_cluster.is_up(1)
        # When an engine starts and a client runs an app there
        with (
            engine_running(tmp_path / "state", engine_env(on_cluster), tmp_path / "engine.log"),
            running_in_own_environment(app, ENVIRONMENT),
        ):
            # Then a call goes through the other nodes
            assert square.remote(7) == 49
            # (node 1 back before the app's queues go: RabbitMQ 3.10 deleting a quorum
            # queue with a member down takes long and may close its clients' connections)
            on_cluster.restart(1)
    finally:
        on_cluster.restore()


@pytest.mark.timeout(240)
def test_a_map_and_spawned_calls_survive_the_queue_leader_killed(
    on_cluster: RabbitCluster, tmp_path: Path
) -> None:
    with (
        engine_running(
            tmp_path / "state", engine_env(on_cluster), tmp_path / "engine.log"
        ) as engine,
        running_in_own_environment(app, ENVIRONMENT),
    ):
        assert square.remote(2) == 4
        queue = function_queue(on_cluster)
        # Given a map of 5000 inputs under way
        leader = on_cluster.leader_of(queue)
        results = []
        try:
            for position, result in enumerate(square.map(range(MAP_INPUTS))):
                results.append(result)
                if position == MAP_INPUTS // 5:
                    # When the node leading the function's quorum queue is killed
                    on_cluster.kill(leader)
            # Then every result comes back exactly once and in order
            assert results == [x * x for x in range(MAP_INPUTS)]
            # And another node leads the queue now, and calls carry on
            assert on_cluster.leader_of(queue) != leader
            assert square.remote(3) == 9
        finally:
            on_cluster.restart(leader)
        # Given spawns under way
        leader = on_cluster.leader_of(queue)
        ids = []
        try:
            for x in range(SPAWNS):
                ids.append(square.spawn(x).object_id)
                if x == SPAWNS // 2:
                    # When the leader is killed again
                    on_cluster.kill(leader)
            # Then every spawned call is fetchable by id
            fetched = [warren.FunctionCall.from_id(i).get(timeout=60) for i in ids]
            assert fetched == [x * x for x in range(SPAWNS)]
            assert engine.process is not None and engine.process.poll() is None
        finally:
            on_cluster.restart(leader)
