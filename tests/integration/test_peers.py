"""Engine nodes as peers: several ``warren engine --env E`` processes serving one
environment share its work, its bounds and its registry, and survive each other."""

from __future__ import annotations

import os
import time
from pathlib import Path

import warren
from peers import ContainerWatch, new_environment, peers
from support import max_overlap


def timed_nap(x: int) -> tuple[int, float, float]:
    started = time.time()
    time.sleep(0.2)
    return os.getpid(), started, time.time()


def test_a_bounded_function_spreads_over_three_nodes_and_never_runs_more_than_its_max(
    tmp_path: Path,
) -> None:
    """Given three nodes and a deployed function with max_containers=6
    When 300 inputs of 0.2 s are mapped
    Then containers of every node ran some, and never more than 6 ran at one instant."""
    environment = new_environment()
    with peers(tmp_path, environment, 3) as nodes:
        app = warren.App("bounded", environment=environment)
        nap = app.function(max_containers=6)(timed_nap)
        app.deploy()

        with ContainerWatch(nodes) as watch:
            results = list(nap.map(range(300)))

        assert len(results) == 300
        pids = {pid for pid, _, _ in results}
        assert pids <= watch.node_of.keys(), "a result came from no node's container"
        assert {watch.node_of[pid] for pid in pids} == {"node-0", "node-1", "node-2"}
        assert max_overlap([(start, end) for _, start, end in results]) <= 6
