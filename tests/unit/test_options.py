"""Function options: checking, variants' names, and where nodes place them."""

from __future__ import annotations

import pytest
import warren
from warren.exceptions import InvalidError
from warren.options import (
    OPTIONS,
    VARIANT_OPTIONS,
    check_options,
    check_variant_options,
)
from warren.wire.control import NodeOffer
from warren.wire.spec import (
    OVERRIDABLE,
    FunctionSpec,
    InlineSecret,
    NamedSecret,
    VolumeRef,
    parse_gpu,
    variant_name,
)
from warren_engine.cluster.cluster import Cluster
from warren_engine.cluster.membership import NodeBeat
from warren_engine.pool.node_capacity import Node


def test_options_become_spec_fields() -> None:
    fields = check_options(
        cpu=(0.5, 2),
        memory=512,
        gpu="a100:2",
        env={"A": "1", "B": None},
        secrets=[warren.Secret.from_dict({"K": "v"}), warren.Secret.from_name("db")],
        volumes={"/data/": warren.Volume.from_name("cache")},
        retries=2,
        region="eu",
        timeout=None,
    )
    assert fields["cpu"] == [0.5, 2.0] and fields["memory"] == [512, None]
    assert fields["secrets"] == (InlineSecret({"K": "v"}), NamedSecret("db"))
    assert fields["volumes"] == {"/data": VolumeRef("cache", create_if_missing=False)}
    assert fields["max_retries"] == 2 and fields["region"] == ["eu"]
    assert "timeout" not in fields  # None: not given
    assert parse_gpu("a100:2") == ("A100", 2) and parse_gpu("any") == ("any", 1)


def test_identical_options_name_the_same_variant_and_others_another() -> None:
    a = check_options(timeout=5, env={"X": "1", "Y": "2"})
    b = check_options(env={"Y": "2", "X": "1"}, timeout=5.0)
    assert variant_name(a) == variant_name(b)
    assert variant_name(a) != variant_name(check_options(timeout=6, env={"X": "1", "Y": "2"}))
    spec = FunctionSpec("f", False).with_overrides(a)
    assert spec.timeout == 5 and spec.variant == variant_name(a)


@pytest.mark.parametrize(
    "options",
    [
        {"cpu": 0},
        {"cpu": (2, 1)},
        {"memory": (1, 2, 3)},
        {"gpu": ""},
        {"gpu": "H100:x"},
        {"env": {"1A": "x"}},
        {"env": {"A": 1}},
        {"secrets": ["not a secret"]},
        {"volumes": {"/": warren.Volume.from_name("v")}},
        {"region": [""]},
        {"nope": 1},
    ],
)
def test_bad_options_are_refused(options: dict[str, object]) -> None:
    with pytest.raises(InvalidError):
        check_options(**options)


# A valid value of every option.
SAMPLES: dict[str, object] = {
    "max_containers": 2,
    "buffer_containers": 1,
    "scaledown_window": 5.0,
    "timeout": 10.0,
    "retries": 3,
    "cpu": 1.0,
    "memory": 256,
    "gpu": "any",
    "env": {"A": "1"},
    "secrets": [warren.Secret.from_name("db")],
    "volumes": {"/data": warren.Volume.from_name("cache")},
    "region": "eu",
    "cloud": ["aws"],
    "max_inputs": 4,
    "min_containers": 1,
}


def test_the_options_a_variant_may_change_are_those_the_spec_lets_it_override() -> None:
    assert set(SAMPLES) == set(OPTIONS)
    for name, value in SAMPLES.items():
        fields = set(check_options(**{name: value}))
        assert fields <= OVERRIDABLE if name in VARIANT_OPTIONS else not fields & OVERRIDABLE
    spec = FunctionSpec("f", False, **check_options(**SAMPLES))  # every option: one spec
    assert spec.with_overrides(check_variant_options(timeout=1)).timeout == 1


def test_a_variant_cannot_change_the_options_fixed_per_deploy() -> None:
    with pytest.raises(InvalidError, match="with_options cannot change max_inputs"):
        check_variant_options(max_inputs=2, timeout=1)
    with pytest.raises(InvalidError, match="unknown options: nope"):
        check_variant_options(nope=1)


def test_a_node_knows_which_of_its_peers_offer_what_a_function_asks() -> None:
    here = Node(cpus=2, memory=1024, region="eu")
    cluster = Cluster("eu-1", ("main",), here, {})
    cluster.membership.heard(
        NodeBeat("gpu-1", ("main",), NodeOffer(8, 4096, {"H100": 4}, "us", None))
    )
    assert here.problem(FunctionSpec("f", False, region=["eu"])) is None
    assert cluster.can_run_elsewhere(FunctionSpec("f", False, gpu="H100:2")) == "gpu-1"
    assert cluster.can_run_elsewhere(FunctionSpec("f", False, cpu=[4.0, None])) == "gpu-1"
    assert cluster.can_run_elsewhere(FunctionSpec("f", False, region=["ap"])) is None
    assert cluster.describe_others() == ["gpu-1 (region us, H100:4)"]


def test_a_node_reserves_requests_within_its_capacity() -> None:
    node = Node(cpus=2, memory=1024)
    spec = FunctionSpec("f", False, cpu=[1.0, None], memory=[512, None])
    assert node.reserve(spec) and node.reserve(spec)
    assert not node.reserve(spec)
    node.release(spec)
    assert node.reserve(spec)
