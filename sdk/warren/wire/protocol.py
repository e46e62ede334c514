"""Wire types: what travels between clients, the engine and containers.

Every message is an :class:`~warren.wire.codec.Envelope` whose ``kind`` says which of these
types its body holds. Types carry their own ``version`` so a reader can refuse what it
does not understand. Inputs and results are plain tuples inside their batch: a map
moves hundreds of thousands of them, and a dataclass per item would cost more than the
rest of the hot path.

An *invocation* is one ``remote`` call or one ``map``; each of its inputs has an index,
so an input's id is ``(invocation_id, index)``. Several inputs may share one message
(a :class:`CallBatch`), and several results one reply (a :class:`ResultBatch`).
"""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass
from typing import Any, Final, Self

from warren.exceptions import DeserializationError
from warren.wire.codec import Envelope, packb, unpackb

KIND_CALLS: Final = "calls"
KIND_RESULTS: Final = "results"
# Control requests and replies: their bodies are warren.wire.control's.
KIND_CONTROL: Final = "control"
KIND_CONTROL_REPLY: Final = "control_reply"
KIND_CANCEL: Final = "cancel"

STATUS_OK: Final = 0
STATUS_ERROR: Final = 1
STATUS_CANCELLED: Final = 2

WIRE_VERSION: Final = 2

# (index, format, encoded [args, kwargs])
InputItem = tuple[int, int, bytes]
# (invocation id, index, status, format, encoded value or failure, seconds spent running)
ResultItem = tuple[str, int, int, int, bytes, float]


def input_id(invocation_id: str, index: int) -> str:
    """The id of one input of an invocation, as a cancel names it: ``<invocation>/<index>``."""
    return f"{invocation_id}/{index}"


def split_input_id(entry: str) -> tuple[str, int] | None:
    """``(invocation, index)`` of an input id; None for the id of a whole invocation."""
    invocation_id, slash, index = entry.rpartition("/")
    if not slash or not index.isdigit():
        return None
    return invocation_id, int(index)


def python_version() -> str:
    """``major.minor`` of this interpreter: pickled code only loads on the same one."""
    return f"{sys.version_info.major}.{sys.version_info.minor}"


def _check_version(name: str, version: Any) -> None:
    if version != WIRE_VERSION:
        raise DeserializationError(f"{name} version {version!r} is not supported")


@dataclass(frozen=True, slots=True)
class CallBatch:
    """Inputs of one invocation bound for one function queue.

    ``failures`` counts the attempts of these inputs that failed already (retries carry
    one input each); ``crashes`` the containers that died while running them.
    ``json_results`` asks for results as JSON, not pickles (web endpoint calls).
    """

    invocation_id: str
    inputs: list[InputItem]
    failures: int = 0
    crashes: int = 0
    json_results: bool = False
    version: int = WIRE_VERSION

    def to_envelope(self) -> Envelope:
        fields = [self.invocation_id, self.inputs, self.failures, self.crashes, self.json_results]
        return Envelope(KIND_CALLS, packb([self.version, *fields]))

    def with_inputs(self, inputs: list[InputItem]) -> CallBatch:
        """The same invocation and counts, for other inputs of it."""
        return dataclasses.replace(self, inputs=inputs)

    def single(
        self, item: InputItem, *, failures: int | None = None, crashes: int | None = None
    ) -> CallBatch:
        """One of these inputs in a batch of its own, with its counts (optionally) updated."""
        return dataclasses.replace(
            self,
            inputs=[item],
            failures=self.failures if failures is None else failures,
            crashes=self.crashes if crashes is None else crashes,
        )

    @classmethod
    def from_body(cls, body: bytes) -> Self:
        try:
            version, invocation_id, inputs, failures, crashes, json_results = unpackb(body)
        except (ValueError, TypeError) as exc:
            raise DeserializationError(f"malformed call batch: {exc}") from exc
        _check_version("call batch", version)
        if (
            not isinstance(invocation_id, str)
            or not isinstance(inputs, list)
            or not isinstance(failures, int)
            or not isinstance(crashes, int)
            or not isinstance(json_results, bool)
        ):
            raise DeserializationError("malformed call batch: wrong field types")
        items: list[InputItem] = []
        for item in inputs:
            if not (
                isinstance(item, list)
                and len(item) == 3
                and isinstance(item[0], int)
                and isinstance(item[1], int)
                and isinstance(item[2], bytes)
            ):
                raise DeserializationError("malformed call batch: bad input item")
            items.append((item[0], item[1], item[2]))
        return cls(invocation_id, items, failures, crashes, json_results, version)


@dataclass(frozen=True, slots=True)
class ResultBatch:
    """Outcomes of inputs, possibly of several invocations of one client."""

    items: list[ResultItem]
    version: int = WIRE_VERSION

    def to_envelope(self) -> Envelope:
        return Envelope(KIND_RESULTS, packb([self.version, self.items]))

    @classmethod
    def from_body(cls, body: bytes) -> Self:
        try:
            version, items = unpackb(body)
        except (ValueError, TypeError) as exc:
            raise DeserializationError(f"malformed result batch: {exc}") from exc
        _check_version("result batch", version)
        return cls([tuple(item) for item in items], version)


@dataclass(frozen=True, slots=True)
class Cancel:
    """Broadcast to containers: drop queued inputs of these invocations, stop running ones.

    An entry is an invocation id (all its inputs) or an input id (:func:`input_id`).
    """

    invocation_ids: list[str]
    version: int = WIRE_VERSION

    def to_envelope(self) -> Envelope:
        return Envelope(KIND_CANCEL, packb([self.version, self.invocation_ids]))

    @classmethod
    def from_body(cls, body: bytes) -> Self:
        try:
            version, ids = unpackb(body)
        except (ValueError, TypeError) as exc:
            raise DeserializationError(f"malformed cancel: {exc}") from exc
        _check_version("cancel", version)
        return cls([str(i) for i in ids], version)
