"""The autoscaler's decision: a pure function, tested without a broker."""

from __future__ import annotations

import pytest
from warren.exceptions import InvalidError
from warren_engine.pool.autoscaler import Autoscaling, ContainerView, decide, desired_containers


def idle(key: int, seconds: float) -> ContainerView:
    return ContainerView(key=key, running=0, idle_for=seconds)


def busy(key: int, running: int = 1) -> ContainerView:
    return ContainerView(key=key, running=running, idle_for=0.0)


def test_containers_start_from_zero_on_demand() -> None:
    settings = Autoscaling(min_containers=0, max_containers=5)
    assert decide(settings, 1, queued=0, containers=[]).start == 0
    assert decide(settings, 1, queued=1, containers=[]).start == 1


def test_the_backlog_is_counted_in_inputs_per_container() -> None:
    settings = Autoscaling(max_containers=10)
    assert desired_containers(settings, max_inputs=4, queued=9, running=0) == 3
    assert desired_containers(settings, max_inputs=4, queued=9, running=3) == 3
    assert desired_containers(settings, max_inputs=1, queued=100, running=0) == 10  # capped


def test_min_containers_are_kept_warm_and_buffer_containers_added_while_busy() -> None:
    settings = Autoscaling(min_containers=2, max_containers=10, buffer_containers=2)
    assert desired_containers(settings, 1, queued=0, running=0) == 2
    assert desired_containers(settings, 1, queued=1, running=0) == 3
    assert decide(settings, 1, queued=0, containers=[]).start == 2


def test_containers_already_starting_are_not_started_twice() -> None:
    settings = Autoscaling(max_containers=4)
    assert decide(settings, 1, queued=4, containers=[busy(1)], starting=2).start == 1


def test_an_idle_container_stops_only_after_the_scaledown_window() -> None:
    settings = Autoscaling(min_containers=1, max_containers=3, scaledown_window=10)
    pool = [idle(1, 30), idle(2, 5), idle(3, 11)]
    # one stays for min_containers; the one idle for only 5 s stays too
    assert set(decide(settings, 1, queued=0, containers=pool).stop) == {1, 3}


def test_busy_containers_are_never_scaled_down_by_idleness() -> None:
    settings = Autoscaling(max_containers=3, scaledown_window=0)
    assert decide(settings, 1, queued=0, containers=[busy(1), busy(2)]).stop == ()


def test_lowering_max_containers_stops_the_extras_idle_ones_first() -> None:
    settings = Autoscaling(max_containers=1)
    pool = [busy(1), idle(2, 0.1), busy(3)]
    decision = decide(settings, 1, queued=5, containers=pool)
    assert decision.start == 0
    assert len(decision.stop) == 2
    assert 2 in decision.stop


def test_containers_already_stopping_do_not_count() -> None:
    settings = Autoscaling(max_containers=2)
    pool = [busy(1), ContainerView(key=2, running=1, idle_for=0, stopping=True)]
    assert decide(settings, 1, queued=3, containers=pool).start == 1


@pytest.mark.parametrize(
    "changes",
    [
        {"min_containers": -1},
        {"max_containers": 0},
        {"min_containers": 5, "max_containers": 2},
        {"scaledown_window": -1},
        {"buffer_containers": 1.5},
        {"max_containers": True},
    ],
)
def test_invalid_settings_raise_a_clear_error(changes: dict[str, object]) -> None:
    with pytest.raises(InvalidError):
        Autoscaling(max_containers=3).updated(changes)


def test_updates_keep_unspecified_values_and_refuse_unknown_names() -> None:
    base = Autoscaling(min_containers=1, max_containers=4, buffer_containers=1, scaledown_window=30)
    assert base.updated({"max_containers": 2, "min_containers": None}) == Autoscaling(
        min_containers=1, max_containers=2, buffer_containers=1, scaledown_window=30
    )
    with pytest.raises(InvalidError, match="unknown"):
        base.updated({"max_replicas": 3})
