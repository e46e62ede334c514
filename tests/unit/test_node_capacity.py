"""What an engine node offers, and whether a function's containers can ever run on it."""

from __future__ import annotations

import pytest
from warren.wire.control import NodeOffer
from warren.wire.spec import FunctionSpec
from warren_engine.pool.node_capacity import Node


def _spec(**fields: object) -> FunctionSpec:
    return FunctionSpec("app.f", False, **fields)  # type: ignore[arg-type]


def test_a_node_can_run_a_function_that_asks_for_nothing() -> None:
    assert Node(cpus=1, memory=256).problem(_spec()) is None


def test_a_node_can_run_a_function_whose_requests_match_its_capacity_exactly() -> None:
    node = Node(cpus=2, memory=1024, gpus={"H100": 2}, region="eu", cloud="aws")
    spec = _spec(cpu=[2.0, None], memory=[1024, None], gpu="h100:2", region=["eu"], cloud=["aws"])
    assert node.problem(spec) is None


def test_limits_beyond_the_node_s_capacity_do_not_keep_a_function_off_it() -> None:
    # requests count against a node; limits are only put on the container process
    node = Node(cpus=2, memory=1024)
    assert node.problem(_spec(cpu=[1.0, 8.0], memory=[512, 8192])) is None


CPU_TOO_LARGE = "app.f requests cpu=4 and memory=0 MiB; this node has 2 cores and 1024 MiB"
MEMORY_TOO_LARGE = "app.f requests cpu=0 and memory=2048 MiB; this node has 2 cores and 1024 MiB"


@pytest.mark.parametrize(
    ("fields", "message"),
    [({"cpu": [4.0, None]}, CPU_TOO_LARGE), ({"memory": [2048, None]}, MEMORY_TOO_LARGE)],
)
def test_a_request_larger_than_the_node_is_named_with_what_the_node_has(
    fields: dict[str, object], message: str
) -> None:
    assert Node(cpus=2, memory=1024).problem(_spec(**fields)) == message


def test_a_gpu_the_node_lacks_is_named_with_the_gpus_it_has() -> None:
    node = Node(cpus=8, memory=4096, gpus={"A100": 1, "T4": 2})
    assert node.problem(_spec(gpu="H100")) == (
        "app.f asks for gpu='H100', and no engine node offers it (this node has A100:1, T4:2)"
    )


def test_a_node_without_gpus_says_so_when_a_function_asks_for_one() -> None:
    problem = Node(cpus=8, memory=4096).problem(_spec(gpu="any"))
    assert problem is not None and problem.endswith("(this node has no GPUs)")


def test_more_gpus_of_a_kind_than_the_node_has_are_refused() -> None:
    node = Node(cpus=8, memory=4096, gpus={"H100": 2})
    assert node.problem(_spec(gpu="H100:2")) is None
    assert node.problem(_spec(gpu="H100:3")) is not None


def test_any_gpu_counts_the_gpus_of_every_kind() -> None:
    node = Node(cpus=8, memory=4096, gpus={"A100": 1, "T4": 2})
    assert node.problem(_spec(gpu="any:3")) is None
    assert node.problem(_spec(gpu="any:4")) is not None


def test_a_node_in_one_of_the_wanted_regions_can_run_the_function() -> None:
    node = Node(cpus=1, memory=256, region="us")
    assert node.problem(_spec(region=["eu", "us"])) is None


def test_a_node_in_another_region_says_where_it_is() -> None:
    problem = Node(cpus=1, memory=256, region="ap").problem(_spec(region=["eu", "us"]))
    assert problem == (
        "app.f asks for region eu or us, and no engine node is there (this node: region ap)"
    )


def test_a_node_without_a_cloud_label_refuses_a_function_that_wants_one() -> None:
    problem = Node(cpus=1, memory=256).problem(_spec(cloud=["gcp"]))
    assert problem is not None and problem.endswith("(this node: cloud not set)")


def test_a_node_without_labels_runs_functions_that_want_none() -> None:
    assert Node(cpus=1, memory=256, region="eu").problem(_spec(region=[], cloud=[])) is None


def test_reservations_add_up_fractions_of_a_core_without_rounding_errors() -> None:
    # 0.1 + 0.1 + 0.1 is a little more than 0.3 in floating point: it still fits
    node = Node(cpus=0.3, memory=1024)
    spec = _spec(cpu=[0.1, None])
    assert all(node.reserve(spec) for _ in range(3))
    assert not node.reserve(spec)


def test_memory_reservations_stop_at_the_node_s_memory() -> None:
    node = Node(cpus=8, memory=1000)
    spec = _spec(memory=[400, None])
    assert node.reserve(spec) and node.reserve(spec)
    assert not node.reserve(spec)
    assert (node.reserved_cpu, node.reserved_memory) == (0.0, 800)


def test_a_refused_reservation_takes_nothing() -> None:
    node = Node(cpus=1, memory=1000)
    assert not node.reserve(_spec(cpu=[0.5, None], memory=[2000, None]))
    assert (node.reserved_cpu, node.reserved_memory) == (0.0, 0)


def test_functions_that_request_nothing_always_fit() -> None:
    node = Node(cpus=1, memory=1)
    assert all(node.reserve(_spec(cpu=[None, 4.0])) for _ in range(100))


def test_releasing_more_than_was_reserved_leaves_nothing_reserved() -> None:
    node = Node(cpus=4, memory=1024)
    spec = _spec(cpu=[1.0, None], memory=[256, None])
    node.reserve(spec)
    node.release(spec)
    node.release(spec)
    assert (node.reserved_cpu, node.reserved_memory) == (0.0, 0)


def test_a_node_s_capacity_and_labels_travel_in_its_offer_but_its_reservations_do_not() -> None:
    node = Node(cpus=4.5, memory=2048, gpus={"H100": 2}, region="eu", cloud="aws")
    node.reserve(_spec(cpu=[1.0, None]))
    copy = Node.offered(node.offer())
    assert copy == Node(cpus=4.5, memory=2048, gpus={"H100": 2}, region="eu", cloud="aws")
    assert copy.reserved_cpu == 0.0


def test_a_node_offered_without_gpus_or_labels_has_none() -> None:
    node = Node.offered(NodeOffer(2, 512, {}, None, None))
    assert (node.gpus, node.region, node.cloud) == ({}, None, None)


def test_a_node_made_from_an_offer_does_not_share_its_gpus() -> None:
    offer = NodeOffer(2, 512, {"H100": 1}, None, None)
    node = Node.offered(offer)
    node.gpus["H100"] = 0
    assert offer.gpus == {"H100": 1}


def test_a_container_sees_as_many_gpus_as_its_function_asks_for() -> None:
    node = Node(cpus=8, memory=4096, gpus={"H100": 4})
    assert node.cuda_visible_devices(_spec()) is None
    for gpu, count in (("H100", 1), ("H100:3", 3)):
        devices = node.cuda_visible_devices(_spec(gpu=gpu))
        assert devices is not None and len(set(devices.split(","))) == count
