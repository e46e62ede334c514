"""One call's journey: where it goes, publishing it, and turning its result into a value.

``Target`` names a function's queue; :func:`call_one` sends one input (through the
client's call stream for that function, :mod:`warren.client.call_stream`) and waits for its
outcome; :func:`publish_cancel` tells containers to drop an invocation's inputs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from warren.exceptions import MessageTooLargeError, NotFoundError
from warren.wire import failure, naming
from warren.wire.codec import decode_value, encode_call_args
from warren.wire.protocol import STATUS_OK, Cancel
from warren.wire.signing import ENVELOPE_OVERHEAD
from warren.wire.spec import FunctionSpec

if TYPE_CHECKING:
    from warren.client.connection import Client


@dataclass(frozen=True, slots=True)
class Target:
    """Where a function's inputs go: its environment, app instance and queue."""

    environment: str
    app: str
    instance: str
    spec: FunctionSpec
    web_base: str = ""  # the base URL of the engine's HTTP gateway

    @property
    def web_url(self) -> str | None:
        """Where a web endpoint answers (a variant's requests run its original)."""
        if self.spec.web is None or not self.web_base:
            return None
        return f"{self.web_base}/{self.environment}/{self.instance}/{self.spec.tag}"

    @property
    def queue(self) -> str:
        return naming.function_queue(
            self.environment, self.instance, self.spec.tag, self.spec.variant
        )

    @property
    def display_name(self) -> str:
        return f"{self.app}.{self.spec.tag}"


def encode_input(
    args: tuple[Any, ...], kwargs: dict[str, Any], target: Target, max_size: int
) -> tuple[int, bytes]:
    """Encode one input's arguments; raise ``MessageTooLargeError`` if no message can hold them."""
    fmt, data = encode_call_args(args, kwargs)
    room = max_size - ENVELOPE_OVERHEAD
    if len(data) > room:
        raise MessageTooLargeError(
            f"the arguments of {target.display_name} take {len(data) / 2**20:.1f} MiB, and one "
            f"call may carry at most {room / 2**20:.1f} MiB (WARREN_MAX_MESSAGE_SIZE); nothing "
            "was sent. Pass large data by reference instead (a path on shared storage, a key)"
        )
    return fmt, data


def result_value(status: int, fmt: int, data: bytes, function_name: str) -> Any:
    """The value of one result, or the exception it carries (rebuilt, not raised)."""
    if status == STATUS_OK:
        return decode_value(fmt, data, what=f"the result of {function_name}")
    return failure.rebuild(data, function_name)


def outcome(status: int, fmt: int, data: bytes, function_name: str) -> Any:
    """The value of one result, or raise the exception it carries."""
    value = result_value(status, fmt, data, function_name)
    if status != STATUS_OK:
        raise value
    return value


async def publish_cancel(client: Client, environment: str, invocation_ids: list[str]) -> None:
    """Tell every container of the environment to drop these invocations' inputs (or
    these single inputs, by :func:`~warren.wire.protocol.input_id`)."""
    await client.broadcast(naming.cancel_exchange(environment), Cancel(invocation_ids))


async def call_one(
    client: Client, target: Target, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    status, fmt, data = await call_raw(client, target, args, kwargs)
    return outcome(status, fmt, data, target.display_name)


async def call_raw(
    client: Client,
    target: Target,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    *,
    json_results: bool = False,
) -> tuple[int, int, bytes]:
    """Run one call; its outcome as ``(status, format, data)``, decoded by nobody yet.

    The call goes through the client's call stream for the function (see
    :mod:`warren.client.call_stream`), with the calls made at the same time. With ``json_results``
    the container sends the value as JSON, never a pickle.
    """
    fmt, data = encode_input(args, kwargs, target, client.signer.max_size)
    return await client.stream(target, json_results).call(target, fmt, data)


class NotRunningError(NotFoundError):
    """The function's queue does not exist (raised by the publish, never by the function)."""


def not_running(target: Target) -> NotFoundError:
    return NotRunningError(
        f"function {target.display_name!r} is not running in environment "
        f"{target.environment!r}: start its app with `with app.run():` (or `warren run`) "
        "or deploy it"
    )
