"""A three-node RabbitMQ cluster on this machine, for tests of failover across nodes.

The nodes (warren1..3@localhost, AMQP on 127.0.0.1:5701-5703) are run by
``broker_config/local_cluster.sh``; the session fixture starts them when they are not
up (CI runs on this machine, so it never skips) and restarts, at the end, any node a
test killed::

    @pytest.mark.cluster
    def test_calls_survive_the_leader(rabbit_cluster: RabbitCluster) -> None:
        leader = rabbit_cluster.leader_of("warren.fn.app.f")
        rabbit_cluster.kill(leader)
        ...
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "broker_config" / "local_cluster.sh"
NODES = (1, 2, 3)
CTL = "/usr/lib/rabbitmq/bin/rabbitmqctl"
# The nodes share the package node's Erlang cookie, kept in the rabbitmq user's home.
CTL_ENV = {**os.environ, "HOME": "/var/lib/rabbitmq"}


def node_name(index: int) -> str:
    return f"warren{index}@localhost"


def node_url(index: int) -> str:
    return f"amqp://guest:guest@127.0.0.1:{5700 + index}/"


def _script(*args: str, timeout: float = 180) -> str:
    done = subprocess.run(
        [str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"local_cluster.sh {' '.join(args)} failed: {done.stderr.strip()}")
    return done.stdout


class RabbitCluster:
    """Handle on the local three-node cluster; node indices are 1, 2 and 3."""

    def __init__(self) -> None:
        self.urls = [node_url(index) for index in NODES]
        self.url = ",".join(self.urls)
        self.killed: set[int] = set()

    def kill(self, index: int) -> None:
        """kill -9 the node's Erlang VM (no clean shutdown, as a crashed host)."""
        self.killed.add(index)
        _script("kill", str(index))

    def restart(self, index: int) -> None:
        """Start a node again and wait until it has booted and rejoined."""
        _script("restart", str(index))
        self.killed.discard(index)

    def is_up(self, index: int) -> bool:
        return self._ctl(index, "status") is not None

    def queues(self, prefix: str) -> list[str]:
        """The cluster's queues whose names start with ``prefix``, asked of a live node."""
        for index in NODES:
            if index in self.killed:
                continue
            listing = self._ctl(index, "list_queues", "name", "--formatter", "json")
            if listing is not None:
                return [
                    row["name"] for row in json.loads(listing) if row["name"].startswith(prefix)
                ]
        raise LookupError("no node answers")

    def leader_of(self, queue: str) -> int:
        """The index of the node leading quorum queue ``queue``, asked of a live node."""
        for index in NODES:
            if index in self.killed:
                continue
            listing = self._ctl(index, "list_queues", "name", "leader", "--formatter", "json")
            if listing is None:
                continue
            for row in json.loads(listing):
                if row["name"] == queue and row.get("leader"):
                    return int(str(row["leader"]).removeprefix("warren").split("@")[0])
        raise LookupError(f"no node leads queue {queue!r}")

    def restore(self) -> None:
        """Restart every node a test killed."""
        for index in sorted(self.killed):
            self.restart(index)

    def _ctl(self, index: int, *args: str) -> str | None:
        done = subprocess.run(
            [CTL, "-n", node_name(index), "-q", *args],
            capture_output=True,
            text=True,
            env=CTL_ENV,
            timeout=60,
            check=False,
        )
        return done.stdout if done.returncode == 0 else None


@pytest.fixture(scope="session")
def rabbit_cluster() -> Iterator[RabbitCluster]:
    """The local three-node cluster, started if needed; every node up again at the end."""
    _script("start")
    cluster = RabbitCluster()
    try:
        yield cluster
    finally:
        cluster.restore()
        _script("start")  # and any node that went down otherwise
