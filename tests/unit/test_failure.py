"""Carrying exceptions across: rebuilt as themselves, or RemoteError."""

from __future__ import annotations

import pickle

import pytest
from warren.exceptions import RemoteError
from warren.wire import failure
from warren.wire.codec import packb
from warren.wire.protocol import STATUS_ERROR, CallBatch


def _raise_and_capture(exc: BaseException) -> bytes:
    try:
        raise exc
    except BaseException as caught:
        return failure.capture(caught)


def test_a_builtin_exception_comes_back_as_itself_with_the_remote_traceback_noted() -> None:
    rebuilt = failure.rebuild(_raise_and_capture(ValueError("bad x")), "app.f")
    assert type(rebuilt) is ValueError
    assert rebuilt.args == ("bad x",)
    (note,) = rebuilt.__notes__
    assert "Remote traceback (from app.f)" in note
    assert "raise exc" in note


class Unpicklable(Exception):
    def __init__(self, a: int, b: int) -> None:  # pickle calls cls(*args): args mismatch
        super().__init__(f"{a}/{b}")


def test_an_exception_that_cannot_be_rebuilt_becomes_remote_error_with_the_details() -> None:
    with pytest.raises(TypeError):
        pickle.loads(pickle.dumps(Unpicklable(1, 2)))
    rebuilt = failure.rebuild(_raise_and_capture(Unpicklable(1, 2)), "app.f")
    assert isinstance(rebuilt, RemoteError)
    assert rebuilt.type_name.endswith("Unpicklable")
    assert rebuilt.message == "1/2"
    assert "raise exc" in rebuilt.remote_traceback
    assert pickle.loads(pickle.dumps(rebuilt)).type_name == rebuilt.type_name


def test_a_record_without_a_pickle_becomes_remote_error() -> None:
    record = packb({"type": "lib.Custom", "message": "m", "traceback": "tb", "pickle": None})
    rebuilt = failure.rebuild(record, "app.f")
    assert isinstance(rebuilt, RemoteError)
    assert str(rebuilt).startswith("lib.Custom: m")


def test_error_results_answer_every_input_of_a_batch_with_the_same_failure() -> None:
    # Given a batch of three inputs that will not run
    batch = CallBatch("inv1", [(0, 0, b""), (4, 0, b""), (9, 0, b"")])
    # When they are answered with one error
    items = failure.error_results(batch, ValueError("not run"))
    # Then each input gets an error result that rebuilds as that error
    assert [(item[0], item[1], item[2]) for item in items] == [
        ("inv1", index, STATUS_ERROR) for index in (0, 4, 9)
    ]
    for item in items:
        rebuilt = failure.rebuild(item[4], "f")
        assert isinstance(rebuilt, ValueError) and str(rebuilt) == "not run"
    single = failure.error_result("inv2", 3, KeyError("k"))
    assert single[:4] == ("inv2", 3, STATUS_ERROR, items[0][3]) and single[5] == 0.0
