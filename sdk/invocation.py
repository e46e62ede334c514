"""One call's journey: where it goes, publishing it, and turning its result into a value.

``Target`` names a function's queue; :func:`call_one` publishes one input and waits for
its outcome; :func:`publish_cancel` tells containers to drop an invocation's inputs.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from typing import Any

from sdk import failure, naming
from sdk.client import Client
from sdk.codec import decode_value, encode_call_args
from sdk.exceptions import MessageTooLargeError, NotFoundError
from sdk.protocol import STATUS_OK, CallBatch, Cancel, FunctionSpec
from sdk.signing import ENVELOPE_OVERHEAD


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


def outcome(status: int, fmt: int, data: bytes, function_name: str) -> Any:
    """The value of one result, or raise the exception it carries."""
    if status == STATUS_OK:
        return decode_value(fmt, data, what=f"the result of {function_name}")
    raise failure.rebuild(data, function_name)


class _OneResult:
    """Sink for a single call: resolves one future, counts duplicates."""

    __slots__ = ("duplicates", "future")

    def __init__(self, future: asyncio.Future[tuple[int, int, bytes]]) -> None:
        self.future = future
        self.duplicates = 0

    def deliver(self, index: int, status: int, fmt: int, data: bytes, duration: float) -> None:
        if self.future.done():
            self.duplicates += 1
        else:
            self.future.set_result((status, fmt, data))

    def fail(self, exc: BaseException) -> None:
        if not self.future.done():
            self.future.set_exception(exc)


async def publish_cancel(client: Client, environment: str, invocation_ids: list[str]) -> None:
    """Tell every container of the environment to drop these invocations' inputs."""
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

    With ``json_results`` the container sends the value as JSON, never a pickle.
    """
    fmt, data = encode_input(args, kwargs, target, client.signer.max_size)
    invocation_id = uuid.uuid4().hex
    future: asyncio.Future[tuple[int, int, bytes]] = asyncio.get_running_loop().create_future()
    client.add_sink(invocation_id, _OneResult(future))
    # The broker hands a persistent message to a consumer before it has written it to
    # disk and confirmed it: wait for the result and the confirm together, not in turn.
    publishing = asyncio.ensure_future(
        client.publisher.publish(
            target.queue,
            CallBatch(invocation_id, [(0, fmt, data)], json_results=json_results).to_envelope(),
            correlation_id=invocation_id,
        )
    )
    try:
        await asyncio.wait((publishing, future), return_when=asyncio.FIRST_COMPLETED)
        if publishing.done():
            publishing.result()  # a refused publish raises here; no result will come
        status, rfmt, rdata = await future
        # With the result in hand the confirm no longer matters (a publish re-sent after a
        # lost connection would only run the call again): the finally below cancels it.
    except NotFoundError:
        raise not_running(target) from None
    except asyncio.CancelledError:
        await asyncio.shield(publish_cancel(client, target.environment, [invocation_id]))
        raise
    finally:
        if not publishing.done():
            publishing.cancel()
        await asyncio.gather(publishing, return_exceptions=True)
        client.remove_sink(invocation_id)
    return status, rfmt, rdata


class NotRunningError(NotFoundError):
    """The function's queue does not exist (raised by the publish, never by the function)."""


def not_running(target: Target) -> NotFoundError:
    return NotRunningError(
        f"function {target.display_name!r} is not running in environment "
        f"{target.environment!r}: start its app with `with app.run():` (or `warren run`) "
        "or deploy it"
    )
