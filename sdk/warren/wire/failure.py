"""Carrying an exception from a container back to its caller.

The container captures the exception as a record: its type's qualified name, its
message, the formatted traceback, and the exception itself pickled when it can be.
The caller rebuilds the original exception (same type, same arguments) and attaches
the remote traceback as a note; when it cannot (the class does not exist on the
caller, or refuses to unpickle) it raises :class:`~warren.exceptions.RemoteError` with the
same information.
"""

from __future__ import annotations

import pickle
import traceback
from typing import Any

import cloudpickle

from warren.exceptions import RemoteError
from warren.wire.codec import FORMAT_MSGPACK, PICKLE_PROTOCOL, packb, unpackb
from warren.wire.protocol import STATUS_ERROR, CallBatch, ResultItem


def _type_name(exc: BaseException) -> str:
    kind = type(exc)
    module = kind.__module__
    return kind.__qualname__ if module == "builtins" else f"{module}.{kind.__qualname__}"


# A failure must fit in a result message whatever the exception holds: the pickled
# exception is left out past this size (the caller then gets RemoteError), and the
# message and traceback texts are cut.
MAX_PICKLE = 256 * 1024
MAX_TEXT = 64 * 1024


def _cut(text: str) -> str:
    if len(text) <= MAX_TEXT:
        return text
    half = MAX_TEXT // 2
    return f"{text[:half]}\n[... {len(text) - MAX_TEXT} characters cut ...]\n{text[-half:]}"


def capture(exc: BaseException) -> bytes:
    """Encode ``exc`` (with its traceback) as bytes for a result, within a bounded size."""
    try:
        pickled: bytes | None = cloudpickle.dumps(exc, protocol=PICKLE_PROTOCOL)
    except Exception:
        pickled = None
    if pickled is not None and len(pickled) > MAX_PICKLE:
        pickled = None
    record = {
        "type": _type_name(exc),
        "message": _cut(str(exc)),
        "traceback": _cut("".join(traceback.format_exception(exc))),
        "pickle": pickled,
    }
    return packb(record)


def error_result(invocation_id: str, index: int, exc: BaseException) -> ResultItem:
    """The result of an input that failed with ``exc`` before (or instead of) running."""
    return (invocation_id, index, STATUS_ERROR, FORMAT_MSGPACK, capture(exc), 0.0)


def error_results(batch: CallBatch, exc: BaseException) -> list[ResultItem]:
    """The same failure as the result of every input of ``batch`` (captured once)."""
    error = capture(exc)
    return [
        (batch.invocation_id, index, STATUS_ERROR, FORMAT_MSGPACK, error, 0.0)
        for index, _, _ in batch.inputs
    ]


def rebuild(data: bytes, function_name: str) -> BaseException:
    """Turn a captured record back into an exception to raise on the caller."""
    record: dict[str, Any] = unpackb(data)
    tb_text = str(record.get("traceback", ""))
    type_name = str(record.get("type", "Exception"))
    pickled = record.get("pickle")
    if isinstance(pickled, bytes):
        try:
            exc = pickle.loads(pickled)
        except Exception:
            exc = None
        if isinstance(exc, BaseException):
            exc.add_note(f"\nRemote traceback (from {function_name}):\n{tb_text.rstrip()}")
            return exc
    return RemoteError(type_name, str(record.get("message", "")), tb_text)


def describe(data: bytes) -> dict[str, str]:
    """Type name, message and traceback text of a captured record, without unpickling."""
    record: dict[str, Any] = unpackb(data)
    return {
        "type": str(record.get("type", "Exception")),
        "message": str(record.get("message", "")),
        "traceback": str(record.get("traceback", "")),
    }
