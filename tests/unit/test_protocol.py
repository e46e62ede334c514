"""Wire types and the batching policy."""

from __future__ import annotations

import pytest
from warren.client.batch_sizer import TARGET_BATCH_SECONDS, BatchSizer
from warren.exceptions import DeserializationError, InvalidError
from warren.wire import batching
from warren.wire.batching import MAX_BATCH_INPUTS
from warren.wire.codec import packb, unpack_envelope
from warren.wire.protocol import CallBatch, Cancel, ResultBatch
from warren.wire.spec import FunctionSpec


def test_wire_types_round_trip_through_their_envelopes() -> None:
    calls = CallBatch("inv", [(0, 0, b"a"), (1, 1, b"b")], failures=1, crashes=2)
    assert CallBatch.from_body(unpack_envelope(calls.to_envelope().pack()).body) == calls
    results = ResultBatch([("inv", 0, 0, 0, b"x", 0.5)])
    assert ResultBatch.from_body(results.to_envelope().body) == results
    cancel = Cancel(["a", "b"])
    assert Cancel.from_body(cancel.to_envelope().body) == cancel


def test_a_call_batch_with_a_bad_item_is_refused() -> None:
    with pytest.raises(DeserializationError, match="bad input item"):
        CallBatch.from_body(packb([2, "inv", [[0, 0, "not bytes"]], 0, 0, False]))
    with pytest.raises(DeserializationError, match="version"):
        CallBatch.from_body(packb([1, "inv", [], 0, 0, False]))
    with pytest.raises(DeserializationError, match="malformed"):
        CallBatch.from_body(packb([2, "inv", []]))


def test_a_single_keeps_the_invocation_and_updates_its_counts() -> None:
    batch = CallBatch("inv", [(0, 0, b"a"), (1, 0, b"b")], failures=1, crashes=0)
    assert batch.single((1, 0, b"b"), crashes=1) == CallBatch("inv", [(1, 0, b"b")], 1, 1)
    assert batch.single((0, 0, b"a"), failures=2) == CallBatch("inv", [(0, 0, b"a")], 2, 0)


def test_function_specs_round_trip_and_ignore_unknown_fields() -> None:
    spec = FunctionSpec("f", is_async=True, max_containers=3, max_inputs=8, timeout=5)
    assert FunctionSpec.from_wire({**spec.to_wire(), "from_the_future": 1}) == spec


@pytest.mark.parametrize(
    "kwargs",
    [{"max_containers": 0}, {"max_inputs": -1}, {"max_inputs": True}, {"timeout": 0}],
)
def test_function_specs_refuse_invalid_limits(kwargs: dict[str, object]) -> None:
    with pytest.raises(InvalidError):
        FunctionSpec("f", is_async=False, **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("max_inputs", [1, 2, 3, 4, 5, 7, 8, 100, 1000, 1001])
@pytest.mark.parametrize("size", [2, 10, 250, 1000])
def test_a_container_holds_enough_batches_to_fill_its_slots_and_one_more_only_when_fast(
    max_inputs: int, size: int
) -> None:
    # Given messages of a steady size, of fast inputs for one container, slow for another
    fast, slow = batching.PrefetchTuner(max_inputs), batching.PrefetchTuner(max_inputs)
    for _ in range(30):
        fast.observe(size, per_input=1e-6)
        slow.observe(size, per_input=1.0)
    # Then both hold enough messages to fill every slot, and no message more than that
    filling = slow.prefetch
    assert filling * size >= max_inputs
    assert (filling - 1) * size < max_inputs
    # And the fast one fetches one batch ahead, so that it never waits for the next
    assert fast.prefetch == filling + 1


def test_single_input_messages_let_a_container_fill_every_slot() -> None:
    tuner = batching.PrefetchTuner(100)
    assert tuner.prefetch == 100
    assert all(tuner.observe(1, per_input=1e-6) is None for _ in range(10))
    assert tuner.prefetch == 100


def test_a_reset_tuner_takes_one_message_per_slot_again() -> None:
    tuner = batching.PrefetchTuner(10)
    for _ in range(30):
        tuner.observe(1000, per_input=1e-6)
    assert tuner.prefetch == 2
    tuner.reset()
    assert (tuner.prefetch, tuner.mean_size) == (10, 1.0)


@pytest.mark.parametrize("max_inputs", [1, 10, 1000])
def test_fast_functions_get_large_batches_whatever_their_max_inputs(max_inputs: int) -> None:
    sizer = BatchSizer()
    sizer.observe(2e-6)
    assert sizer.size(ready=5000, max_inputs=max_inputs, containers=2) == MAX_BATCH_INPUTS
    sizer.observe(1e-3)  # slower now: the estimate moves towards 1 ms an input
    assert 5 <= sizer.size(ready=5000, max_inputs=1, containers=2) < MAX_BATCH_INPUTS


def test_slow_functions_go_one_input_per_message_unless_a_container_runs_several() -> None:
    sizer = BatchSizer()
    sizer.observe(0.5)
    assert sizer.size(ready=200, max_inputs=1, containers=4) == 1
    # a container that runs 10 at once takes what is ready, spread over the containers
    assert sizer.size(ready=20, max_inputs=10, containers=4) == 5
    assert sizer.size(ready=200, max_inputs=10, containers=4) == 10


def test_before_any_run_time_is_known_a_message_carries_what_one_container_runs_at_once() -> None:
    sizer = BatchSizer()
    assert sizer.size(ready=2000, max_inputs=1, containers=2) == 1
    assert sizer.size(ready=2000, max_inputs=100, containers=2) == 100
    assert sizer.size(ready=3, max_inputs=100, containers=2) == 2


def test_until_a_run_time_is_known_a_client_sends_only_what_fills_the_slots() -> None:
    sizer = BatchSizer()
    # 2,000 ready, 2 containers of 1 slot, nothing in flight: a probe of 2
    assert sizer.sendable(2000, max_inputs=1, containers=2, in_flight=0) == 2
    assert sizer.sendable(2000, max_inputs=1, containers=2, in_flight=2) == 0
    assert sizer.sendable(2000, max_inputs=10, containers=2, in_flight=5) == 15
    # the first result says how long an input takes: everything may go
    sizer.observe(1e-5)
    assert sizer.sendable(2000, max_inputs=1, containers=2, in_flight=2) == 2000


def test_no_result_within_the_probe_wait_means_slow() -> None:
    sizer = BatchSizer()
    sizer.at_least(0.5)
    assert sizer.known
    assert sizer.size(ready=100, max_inputs=1, containers=4) == 1
    sizer.observe(1e-6)  # results tell otherwise later: the estimate follows them
    assert sizer.per_input is not None and sizer.per_input < 0.5


def test_a_new_map_probes_again_and_its_first_result_replaces_what_earlier_work_taught() -> None:
    # Given a sizer that learned 5 µs an input from an earlier map
    sizer = BatchSizer()
    sizer.observe(5e-6)
    assert sizer.size(ready=2000, max_inputs=1, containers=2) == MAX_BATCH_INPUTS
    # When a new map begins, it probes: one input a message, only what fills the slots
    sizer.relearn()
    assert not sizer.known
    assert sizer.sendable(2000, max_inputs=1, containers=2, in_flight=0) == 2
    assert sizer.size(ready=2, max_inputs=1, containers=2) == 1
    # And its first result (5 ms) sets the estimate at once, not a fifth of the way
    sizer.observe(5e-3)
    assert sizer.known and sizer.per_input == 5e-3
    assert sizer.size(ready=2000, max_inputs=1, containers=2) == round(TARGET_BATCH_SECONDS / 5e-3)
    # A probe with no result in the probe wait says slow, whatever was known before
    sizer.relearn()
    sizer.at_least(0.5)
    assert sizer.known and sizer.per_input == 0.5
