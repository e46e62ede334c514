"""How a pool's cluster-wide settings split over the nodes that run it (pure).

Every node that runs a pool sees the same queue and, through the heartbeats
(:mod:`warren_engine.cluster.membership`), the same list of nodes that run it. Each
takes its share of ``min_containers``, ``max_containers``, ``buffer_containers`` and of
the queued inputs by its rank in that list (names sorted), and the autoscaler
(:mod:`warren_engine.pool.autoscaler`) decides on the share as it would for a node
alone. Shares of ``n`` over ``k`` nodes add up to ``n`` exactly: the first ``n % k``
nodes take one more. When a node dies or joins, the list changes and so do the shares:
the survivors make up the dead node's containers, a node above its new share stops its
extras. While two nodes see the list differently (a beat apart), the slots of
:mod:`warren_engine.pool.slots` keep ``max_containers`` exact.

A ``max_containers`` left unset is per node: one container per core of each node, so
that adding a node adds its cores.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from warren_engine.pool.autoscaler import Autoscaling


def share(total: int, nodes: int, rank: int) -> int:
    """Node ``rank``'s part of ``total`` over ``nodes`` (the parts add up to ``total``)."""
    if nodes <= 1:
        return total
    return total // nodes + (1 if rank < total % nodes else 0)


@dataclass(frozen=True, slots=True)
class Share:
    """This node's place among the nodes that run a pool."""

    rank: int = 0
    nodes: int = 1

    @classmethod
    def among(cls, names: list[str], me: str) -> Share:
        ordered = sorted(set(names) | {me})
        return cls(ordered.index(me), len(ordered))

    def of(self, total: int) -> int:
        return share(total, self.nodes, self.rank)

    def settings(self, cluster: Autoscaling, *, max_is_per_node: bool) -> Autoscaling | None:
        """The autoscaler settings this node applies for its share of the pool; None when
        its share is no container at all (fewer slots than nodes)."""
        if self.nodes <= 1:
            return cluster
        most = cluster.max_containers if max_is_per_node else self.of(cluster.max_containers)
        if most == 0:
            return None
        return dataclasses.replace(
            cluster,
            min_containers=self.of(cluster.min_containers),
            max_containers=most,
            buffer_containers=self.of(cluster.buffer_containers),
        )
