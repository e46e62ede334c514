"""Carrying an exception from a container back to its caller.

The container captures the exception as a record: its type's qualified name, its
message, the formatted traceback, and the exception itself pickled when it can be.
The caller rebuilds the original exception (same type, same arguments) and attaches
the remote traceback as a note; when it cannot (the class does not exist on the
caller, or refuses to unpickle) it raises :class:`~sdk.exceptions.RemoteError` with the
same information.
"""

from __future__ import annotations

import pickle
import traceback
from typing import Any

import cloudpickle

from sdk.codec import PICKLE_PROTOCOL, packb, unpackb
from sdk.exceptions import RemoteError


def _type_name(exc: BaseException) -> str:
    kind = type(exc)
    module = kind.__module__
    return kind.__qualname__ if module == "builtins" else f"{module}.{kind.__qualname__}"


def capture(exc: BaseException) -> bytes:
    """Encode ``exc`` (with its traceback) as bytes for a result."""
    try:
        pickled: bytes | None = cloudpickle.dumps(exc, protocol=PICKLE_PROTOCOL)
    except Exception:
        pickled = None
    record = {
        "type": _type_name(exc),
        "message": str(exc),
        "traceback": "".join(traceback.format_exception(exc)),
        "pickle": pickled,
    }
    return packb(record)


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
