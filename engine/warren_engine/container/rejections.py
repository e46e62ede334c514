"""What a container does with a message it will not simply run.

* A message that fails verification (unsigned, another key, tampered with,
  oversized, malformed) is never decoded further: it is moved to the dead-letter
  queue with the reason, and nobody is answered. A genuine one that is only past its
  expiry goes there too, and its caller gets an ``ExecutionError`` saying so.
* A redelivered message whose last holder crashed (the engine's crash ledger says so)
  counts one more crash for each of its inputs: they go back to the queue one input
  per message, with the count in the (signed) message, so that a poison input is
  told apart from the inputs that shared its message. An input that reaches the
  crash limit is moved to the dead-letter queue and its caller gets
  ``DeadLetteredError`` naming the limit.
"""

from __future__ import annotations

import structlog
from warren.client.publisher import BROKER_ERRORS
from warren.exceptions import DeadLetteredError, EngineError, ExecutionError, WarrenError
from warren.wire import failure, naming
from warren.wire.protocol import CallBatch, ResultItem
from warren.wire.signing import MessageExpiredError, Signer

from warren_engine.container.inbound import Inbound
from warren_engine.container.replies import Replies
from warren_engine.pipe.messages import HEALTHY, AskVerdict, DeadLetter
from warren_engine.pipe.pipes import EngineLink


class Rejections:
    def __init__(
        self,
        *,
        environment: str,
        function: str,
        crash_limit: int,
        signer: Signer,
        link: EngineLink,
        replies: Replies,
        log: structlog.typing.FilteringBoundLogger,
    ) -> None:
        self._environment = environment
        self._function = function
        self._crash_limit = crash_limit
        self._signer = signer
        self._link = link
        self._replies = replies
        self._log = log

    async def reject(self, message: Inbound, reason: str) -> None:
        """Dead-letter a message that failed verification; never run, never answered."""
        self._log.error("input_rejected", reason=reason, message_id=message.message_id)
        try:
            await self._link.request(_dead_letter(message, message.body, reason))
        except EngineError:
            # The queue's own dead-letter exchange still keeps it (without our reason).
            message.reject(requeue=False)
            return
        message.ack()

    async def verdict(self, message: Inbound) -> str:
        """Whether this redelivered message was running in a container that died
        (``CRASHED``), was replaced by copies already (``REPLACED``), or neither."""
        if not message.redelivered or not message.message_id:
            return HEALTHY
        try:
            answer = await self._link.request(AskVerdict(message.message_id))
        except EngineError as exc:
            self._log.warning("crash_verdict_unavailable", reason=str(exc))
            return HEALTHY
        return answer.verdict

    async def expired(self, message: Inbound, exc: MessageExpiredError) -> None:
        """A genuine input that waited past its expiry: dead-lettered, and its caller told."""
        try:
            batch = CallBatch.from_body(exc.envelope.body)
        except WarrenError:
            await self.reject(message, str(exc))
            return
        items = failure.error_results(
            batch,
            ExecutionError(
                f"the input of {self._function} was not run: it waited in its queue past its "
                "expiry (WARREN_MESSAGE_EXPIRY, or the result retention of a spawned call)"
            ),
        )
        try:
            if message.reply_to:
                await self._replies.publish_results(message.reply_to, items)
        except BROKER_ERRORS as publish_error:
            self._log.warning("expired_input_not_answered", reason=str(publish_error))
            message.nack(requeue=True)
            return
        await self.reject(message, str(exc))

    async def after_crash(self, message: Inbound, batch: CallBatch, expires_at: int) -> None:
        """Count the crash: requeue the inputs one by one, or dead-letter them at the limit."""
        crashes = batch.crashes + 1
        self._log.warning(
            "input_crashed_its_container",
            invocation=batch.invocation_id,
            inputs=len(batch.inputs),
            crashes=crashes,
            limit=self._crash_limit,
        )
        singles = [batch.single(item, crashes=crashes) for item in batch.inputs]
        try:
            if crashes >= self._crash_limit:
                await self._dead_letter(message, singles, expires_at)
            else:
                await self._replies.requeue(
                    message, singles, expires_at=expires_at, replaces=message.message_id
                )
        except (EngineError, *BROKER_ERRORS) as exc:
            self._log.warning("crashed_input_not_requeued", reason=f"{type(exc).__name__}: {exc}")
            message.nack(requeue=True)
            return
        message.ack()

    async def _dead_letter(
        self, message: Inbound, singles: list[CallBatch], expires_at: int
    ) -> None:
        dead_letter_queue = naming.dead_letter_queue(self._environment)
        reason = (
            f"its container died each of the {singles[0].crashes} times it ran "
            f"(the crash limit, WARREN_CRASH_LIMIT, is {self._crash_limit})"
        )
        results: list[ResultItem] = []
        for single in singles:
            index = single.inputs[0][0]
            error = DeadLetteredError(
                f"input {index} of {self._function} was moved to the dead-letter queue "
                f"{dead_letter_queue!r}: {reason}"
            )
            results.append(failure.error_result(single.invocation_id, index, error))
        # The callers' answers first: once the engine has the dead letters, the message is
        # marked replaced and will never run (or be answered) again.
        if message.reply_to:
            await self._replies.publish_results(message.reply_to, results)
        for single in singles:
            body = self._signer.seal(
                single.to_envelope(),
                reply_to=message.reply_to,
                correlation_id=message.correlation_id,
                expires_at=expires_at,
            )
            await self._link.request(
                _dead_letter(message, body, reason, replaces=message.message_id)
            )


def _dead_letter(
    message: Inbound, body: bytes, reason: str, replaces: str | None = None
) -> DeadLetter:
    """A dead letter of ``body`` with the properties a copy of ``message`` carries over."""
    return DeadLetter(
        body,
        reason,
        message_id=message.message_id,
        correlation_id=message.correlation_id,
        reply_to=message.reply_to,
        type=message.type,
        replaces=replaces,
    )
