"""The dashboard's chart: a bounded ring of frames, and the points made from them."""

from __future__ import annotations

import pytest
from warren.wire.control import PoolStats
from warren_engine.daemon.dashboard.history import History, Point

SQUARE = ("main", "app", "square")
CUBE = ("main", "app", "cube")


def stats(queued: int = 0, running: int = 0, containers: int = 1, received: int = 0) -> PoolStats:
    return PoolStats(queued, running, containers, inputs_received=received)


def test_the_throughput_is_the_inputs_taken_per_second_between_two_frames() -> None:
    # Given frames two seconds apart, as a map of 100 inputs goes through
    history = History(window=600, period=2)
    history.record(100.0, {SQUARE: stats(queued=0, received=0)})
    history.record(102.0, {SQUARE: stats(queued=60, running=1, received=40)})
    history.record(104.0, {SQUARE: stats(queued=0, received=100)})
    # Then each point has the depth seen then and the rate since the frame before
    assert history.points(SQUARE) == (
        Point(102.0, 60, 1, 1, 20.0),
        Point(104.0, 0, 0, 1, 30.0),
    )


def test_every_pool_is_summed_when_none_is_named_and_a_pool_new_in_a_frame_counts_nothing() -> None:
    history = History()
    history.record(0.0, {SQUARE: stats(received=10)})
    history.record(2.0, {SQUARE: stats(queued=5, received=30), CUBE: stats(queued=1, received=7)})
    history.record(4.0, {SQUARE: stats(received=30), CUBE: stats(received=17)})
    assert [(p.queued, p.containers, p.rate) for p in history.points()] == [
        (6, 2, 10.0),  # cube's first 7 inputs have nothing to be compared with
        (0, 2, 5.0),
    ]


def test_a_pool_made_again_counts_its_inputs_from_zero() -> None:
    # Given a redeploy between two frames (the new pool's count restarts)
    history = History()
    history.record(0.0, {SQUARE: stats(received=500)})
    history.record(2.0, {SQUARE: stats(received=8)})
    # Then the rate is the new pool's 8 inputs, never negative
    assert history.points(SQUARE)[0].rate == 4.0


def test_pools_whose_node_did_not_answer_are_left_out() -> None:
    history = History()
    history.record(0.0, {SQUARE: stats(received=0)})
    history.record(2.0, {SQUARE: PoolStats(node="gpu-1", error="the node did not answer")})
    assert history.points(SQUARE) == (Point(2.0, 0, 0, 0, 0.0),)


@pytest.mark.parametrize(("window", "period"), [(600.0, 2.0), (10.0, 3.0)])
def test_only_the_window_is_kept_however_long_the_engine_runs(window: float, period: float) -> None:
    history = History(window=window, period=period)
    for step in range(10_000):
        history.record(step * period, {SQUARE: stats(received=step)})
    points = history.points(SQUARE)
    # frames cover the window (rounded up to a whole frame), points join them
    assert len(points) == -(-window // period)
    assert points[-1].time == 9_999 * period
    assert all(point.rate == pytest.approx(1 / period) for point in points)
    assert points[0].as_dict()["t"] >= 9_999 * period - window - period
