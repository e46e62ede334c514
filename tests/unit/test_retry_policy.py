"""The retry policy and the size-bounded batching it travels with."""

from __future__ import annotations

import pytest
from warren.exceptions import InvalidError
from warren.wire.batching import slices_within
from warren.wire.retries import Retries
from warren.wire.spec import FunctionSpec


def test_delays_grow_by_the_coefficient_up_to_the_maximum() -> None:
    policy = Retries(5, backoff_coefficient=2.0, initial_delay=1.0, max_delay=5.0)
    assert [policy.delay(n) for n in range(1, 6)] == [1.0, 2.0, 4.0, 5.0, 5.0]


def test_an_int_means_that_many_retries_with_the_default_backoff() -> None:
    assert Retries.coerce(2) == Retries(2)
    assert Retries.coerce(None).max_retries == 0
    policy = Retries(1, initial_delay=0.5)
    assert Retries.coerce(policy) is policy


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_retries": -1},
        {"max_retries": 1.5},
        {"max_retries": True},
        {"max_retries": 101},
        {"max_retries": 1, "backoff_coefficient": 0.5},
        {"max_retries": 1, "initial_delay": -1},
        {"max_retries": 1, "max_delay": "soon"},
    ],
)
def test_bad_policies_are_refused(kwargs: dict[str, object]) -> None:
    with pytest.raises(InvalidError):
        Retries(**kwargs)  # type: ignore[arg-type]


def test_retries_must_be_an_int_or_a_policy() -> None:
    with pytest.raises(InvalidError, match="retries must be"):
        Retries.coerce("3")  # type: ignore[arg-type]


def test_a_function_spec_carries_its_retry_policy_over_the_wire() -> None:
    spec = FunctionSpec("f", False, max_retries=3, initial_delay=0.5)
    assert FunctionSpec.from_wire(spec.to_wire()).retries == Retries(3, initial_delay=0.5)
    with pytest.raises(InvalidError):
        FunctionSpec("f", False, max_retries=-2)


def test_slices_respect_both_the_count_and_the_byte_budget() -> None:
    assert slices_within([1] * 5, max_count=2, max_bytes=100) == [(0, 2), (2, 4), (4, 5)]
    assert slices_within([40, 40, 40, 10], max_count=10, max_bytes=90) == [(0, 2), (2, 4)]
    assert slices_within([500, 1], max_count=10, max_bytes=100) == [(0, 1), (1, 2)]
    assert slices_within([], max_count=3, max_bytes=10) == []
