"""The pure parts of engine nodes as peers: shares, registry entries, sealed secrets."""

from __future__ import annotations

import pytest
from warren.exceptions import DeserializationError
from warren.wire.codec import packb
from warren.wire.control import AutoscalerChanges, NodeOffer
from warren.wire.spec import FunctionSpec
from warren_engine.cluster.cluster import Cluster
from warren_engine.cluster.entries import (
    AppPut,
    AppRemoved,
    SecretPut,
    Synced,
    decode_entry,
    encode_entry,
)
from warren_engine.cluster.membership import Membership, NodeBeat, decode_beat, encode_beat
from warren_engine.cluster.sealed_secrets import SecretSealer
from warren_engine.pool.autoscaler import Autoscaling
from warren_engine.pool.node_capacity import Node
from warren_engine.pool.presence import PoolBeat
from warren_engine.pool.shares import Share, share

OFFER = NodeOffer(2.0, 1024, {}, None, None)


@pytest.mark.parametrize("total", [0, 1, 2, 5, 6, 7, 100])
@pytest.mark.parametrize("nodes", [1, 2, 3, 4])
def test_shares_over_the_nodes_add_up_to_the_total_and_differ_by_one_at_most(
    total: int, nodes: int
) -> None:
    parts = [share(total, nodes, rank) for rank in range(nodes)]
    assert sum(parts) == total
    assert max(parts) - min(parts) <= 1


def test_a_node_takes_its_share_of_min_max_and_buffer_by_its_rank_among_the_names() -> None:
    cluster = Autoscaling(min_containers=2, max_containers=6, buffer_containers=1)
    first, last = Share.among(["b", "c"], "a"), Share.among(["a", "b"], "c")
    assert (first.rank, first.nodes, last.rank) == (0, 3, 2)
    mine = first.settings(cluster, max_is_per_node=False)
    assert mine == Autoscaling(min_containers=1, max_containers=2, buffer_containers=1)
    theirs = last.settings(cluster, max_is_per_node=False)
    assert theirs == Autoscaling(min_containers=0, max_containers=2, buffer_containers=0)
    # Unset, max_containers is per node (its cores): each node keeps all of it.
    assert last.settings(cluster, max_is_per_node=True).max_containers == 6  # type: ignore[union-attr]


def test_a_node_whose_share_of_max_is_nothing_runs_no_container() -> None:
    one = Autoscaling(max_containers=1)
    assert Share.among(["a", "b"], "a").settings(one, max_is_per_node=False) == one
    assert Share.among(["a", "b"], "b").settings(one, max_is_per_node=False) is None


def test_every_registry_entry_comes_back_as_it_was_encoded() -> None:
    spec = FunctionSpec("f", is_async=False, max_containers=3)
    entries = [
        AppPut(
            "e1",
            "main",
            "shop",
            "shop",
            False,
            (spec,),
            b"code",
            ("/srv",),
            {"f": AutoscalerChanges(max_containers=2)},
            1712.5,
            None,
            "node-1",
        ),
        AppRemoved("e2", "main", "shop", 1712.5),
        SecretPut("e3", "main", "db", b"\x00sealed"),
        Synced("e4", "node-1"),
    ]
    for entry in entries:
        assert decode_entry(encode_entry(entry).body) == entry


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"\xc1", "malformed registry entry"),
        (packb([9, "synced", {}]), "version 9"),
        (packb([1, "nope", {}]), "unknown registry entry 'nope'"),
        (packb([1, "synced", {"entry_id": "x"}]), "'node' is missing"),
    ],
)
def test_a_malformed_registry_entry_is_refused_with_the_reason(body: bytes, reason: str) -> None:
    with pytest.raises(DeserializationError, match=reason):
        decode_entry(body)


def test_a_sealed_secret_opens_only_with_the_same_key_and_for_the_same_secret() -> None:
    sealer = SecretSealer(b"k" * 32)
    sealed = sealer.seal("main", "db", {"PASSWORD": "hunter2"})
    assert b"hunter2" not in sealed
    assert sealer.open("main", "db", sealed) == {"PASSWORD": "hunter2"}
    with pytest.raises(DeserializationError, match="cannot be opened"):
        SecretSealer(b"x" * 32).open("main", "db", sealed)
    with pytest.raises(DeserializationError, match="cannot be opened"):
        sealer.open("main", "other", sealed)  # moved to another secret


def test_membership_names_the_nodes_that_run_a_pool_and_the_leader() -> None:
    me = NodeBeat("a", ("main",), OFFER, (PoolBeat("q", 1, 0, 0),))
    membership = Membership("a", lambda: me)
    other = NodeBeat("b", ("main",), OFFER, (PoolBeat("q", 2, 1, 0, (7,)),), leads=("main",))
    membership.heard(decode_beat(encode_beat(other).body))
    membership.heard(NodeBeat("c", ("main",), OFFER))
    assert membership.leader("main") == "b"
    assert [beat.name for beat in membership.nodes()] == ["a", "b", "c"]


def test_a_pools_share_counts_this_node_and_the_live_peers_that_run_it() -> None:
    cluster = Cluster("b", ("main",), Node(), {}, leaderships={})
    cluster.membership.heard(NodeBeat("a", ("main",), OFFER, (PoolBeat("q", 1, 0, 0),)))
    cluster.membership.heard(NodeBeat("c", ("main",), OFFER, (PoolBeat("other", 1, 0, 0),)))
    assert cluster.share("q") == Share(rank=1, nodes=2)
    assert cluster.share("other") == Share(rank=0, nodes=2)
    assert Cluster.alone("b", ("main",), Node()).share("q") == Share()
