"""Wire types and the batching policy."""

from __future__ import annotations

import pytest

from sdk import batching
from sdk.codec import packb, unpack_envelope
from sdk.exceptions import DeserializationError, InvalidError
from sdk.protocol import (
    CallBatch,
    Cancel,
    ControlReply,
    ControlRequest,
    FunctionSpec,
    ResultBatch,
)


def test_wire_types_round_trip_through_their_envelopes() -> None:
    calls = CallBatch("inv", [(0, 0, b"a"), (1, 1, b"b")], failures=1, crashes=2)
    assert CallBatch.from_body(unpack_envelope(calls.to_envelope().pack()).body) == calls
    results = ResultBatch([("inv", 0, 0, 0, b"x", 0.5)])
    assert ResultBatch.from_body(results.to_envelope().body) == results
    request = ControlRequest("ping", {"a": 1})
    assert ControlRequest.from_body(request.to_envelope().body) == request
    reply = ControlReply(False, {}, "NotFoundError", "nope")
    assert ControlReply.from_body(reply.to_envelope().body) == reply
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
@pytest.mark.parametrize("size", [1, 2, 10, 250])
def test_a_tuned_prefetch_of_steady_batches_fits_the_containers_slots(
    max_inputs: int, size: int
) -> None:
    # Given messages of a steady size (never above the client's cap)
    size = min(size, batching.max_batch(max_inputs))
    tuner = batching.PrefetchTuner(max_inputs)
    # When the container has seen enough of them
    for _ in range(30):
        tuner.observe(size)
    # Then the messages it holds carry at most max_inputs inputs, and at least one message
    assert tuner.prefetch >= 1
    assert tuner.prefetch * size <= max_inputs


def test_single_input_messages_let_a_container_fill_every_slot() -> None:
    tuner = batching.PrefetchTuner(100)
    assert tuner.prefetch == 100
    assert all(tuner.observe(1) is None for _ in range(10))
    assert tuner.prefetch == 100


def test_the_client_caps_batches_at_a_quarter_of_a_container() -> None:
    assert batching.max_batch(1) == 1
    assert batching.max_batch(3) == 1
    assert batching.max_batch(1000) == 250
