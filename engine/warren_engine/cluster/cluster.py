"""One engine node among its peers: what it serves, what it reads, whom it knows.

Engine nodes are peers: the same program, any of which answers any request of the
environments it serves (``warren engine --env a,b``). They coordinate through the
broker only:

- each environment's apps are kept in its registry stream
  (:mod:`warren_engine.cluster.registry_log`), which every node reads and applies;
- heartbeats tell each node which others are up and what they run
  (:mod:`warren_engine.cluster.membership`), so that a pool spreads over every node
  that can run it (:mod:`warren_engine.pool.shares`) within its cluster-wide
  ``max_containers`` (:mod:`warren_engine.pool.slots`);
- a single-active-consumer queue chooses each environment's leader
  (:mod:`warren_engine.cluster.leadership`), for what must happen once.

An engine started for one ``app.run()`` is a cluster of one (:meth:`Cluster.alone`):
its registry is in memory, it leads, and it knows no peers.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable

from aio_pika.abc import AbstractRobustChannel, AbstractRobustConnection
from warren import exceptions
from warren.wire.signing import Signer
from warren.wire.spec import FunctionSpec
from warren_engine.cluster.leadership import Leadership
from warren_engine.cluster.membership import Heartbeats, Membership, NodeBeat
from warren_engine.cluster.registry_log import Apply, Log, MemoryLog, StreamLog
from warren_engine.pool.node_capacity import Node
from warren_engine.pool.presence import PoolBeat
from warren_engine.pool.shares import Share


class Cluster:
    def __init__(
        self,
        name: str,
        environments: tuple[str, ...],
        node: Node,
        logs: dict[str, Log],
        leaderships: dict[str, Leadership] | None = None,
        connection: AbstractRobustConnection | None = None,
        signer: Signer | None = None,
    ) -> None:
        self.name = name
        self.environments = environments
        self.node = node
        self._logs = logs
        self._leaderships = leaderships  # None: alone, and so leading
        self._pools: Callable[[], tuple[PoolBeat, ...]] = tuple
        self.started_at = time.time()
        self.membership = Membership(name, self.beat)
        self._heartbeats = (
            Heartbeats(connection, signer, self.membership)
            if connection is not None and signer is not None and leaderships is not None
            else None
        )

    @classmethod
    def alone(cls, name: str, environments: tuple[str, ...], node: Node) -> Cluster:
        return cls(name, environments, node, {env: MemoryLog() for env in environments})

    @classmethod
    def of_peers(
        cls,
        name: str,
        environments: tuple[str, ...],
        node: Node,
        connection: AbstractRobustConnection,
        publisher: AbstractRobustChannel,
        signer: Signer,
        queue_type: str,
    ) -> Cluster:
        logs: dict[str, Log] = {
            env: StreamLog(connection, publisher, signer, env, name) for env in environments
        }
        leaderships = {env: Leadership(connection, env, name, queue_type) for env in environments}
        return cls(name, environments, node, logs, leaderships, connection, signer)

    @property
    def alone_here(self) -> bool:
        """Whether this node has no peers to share its apps with (now)."""
        return self._leaderships is None or not self.membership.others()

    # -- life cycle ----------------------------------------------------------------------

    async def start(self, apply: Apply, pools: Callable[[], tuple[PoolBeat, ...]]) -> None:
        """Hear the others, then read each environment's registry (applying it), then take
        part in choosing leaders."""
        self._pools = pools
        if self._heartbeats is not None:
            await self._heartbeats.start()
        for log in self._logs.values():
            await log.start(apply)
        for leadership in (self._leaderships or {}).values():
            await leadership.start()

    async def close(self) -> None:
        for leadership in (self._leaderships or {}).values():
            with contextlib.suppress(Exception):
                await leadership.close()
        if self._heartbeats is not None:
            await self._heartbeats.close()
        for log in self._logs.values():
            await log.close()

    # -- what the others need to know --------------------------------------------------

    def beat(self) -> NodeBeat:
        leads = tuple(env for env in self.environments if self.leading(env))
        return NodeBeat(
            self.name, self.environments, self.node.offer(), self._pools(), leads, self.started_at
        )

    # -- questions -----------------------------------------------------------------------

    def serves(self, environment: str) -> bool:
        return environment in self._logs

    def log(self, environment: str) -> Log:
        log = self._logs.get(environment)
        if log is None:
            raise exceptions.EnvironmentNotServedError(
                f"engine node {self.name!r} serves {', '.join(self.environments)}, not "
                f"{environment!r} (start one with `warren engine --env {environment}`)"
            )
        return log

    def leading(self, environment: str) -> bool:
        if self._leaderships is None:
            return True
        leadership = self._leaderships.get(environment)
        return leadership is not None and leadership.leading

    def leader(self, environment: str) -> str | None:
        if self._leaderships is None:
            return self.name
        return self.membership.leader(environment)

    def share(self, queue: str) -> Share:
        """This node's place among the live nodes that run a pool of ``queue`` (asked by
        this node's own pool of it, every tick: from the others' last beats, without
        making this node's beat)."""
        if self._leaderships is None:
            return Share()
        return Share.among([name for name, _ in self.elsewhere(queue)], self.name)

    def elsewhere(self, queue: str) -> list[tuple[str, PoolBeat]]:
        """What the other live nodes run of a pool, by node."""
        return [
            (beat.name, pool)
            for beat in self.membership.others()
            for pool in beat.pools
            if pool.queue == queue
        ]

    def can_run_elsewhere(self, spec: FunctionSpec) -> str | None:
        """The name of a live peer that offers what ``spec`` asks for, if any."""
        for beat in self.membership.others():
            if Node.offered(beat.offer).problem(spec) is None:
                return beat.name
        return None

    def describe_others(self) -> list[str]:
        return [
            f"{beat.name} ({_describe(Node.offered(beat.offer))})"
            for beat in self.membership.others()
        ]


def _describe(node: Node) -> str:
    labels = [
        f"region {node.region}" if node.region else "",
        f"cloud {node.cloud}" if node.cloud else "",
    ]
    gpus = ", ".join(f"{kind}:{n}" for kind, n in node.gpus.items())
    return ", ".join(part for part in [*labels, gpus] if part) or "no labels"
