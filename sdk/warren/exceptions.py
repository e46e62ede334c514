"""Every error Warren raises, under one base class.

::

    WarrenError
    ├── InvalidError ............ bad arguments or configuration, caught before anything is sent
    │   ├── ConfigError           a WARREN_* variable (or the flag over it) has an unusable value
    │   │   └── QueueMismatchError    a queue exists with other arguments (classic vs quorum)
    │   └── BlockingCallInLoopError   a blocking call made inside a running event loop
    ├── SerializationError ...... a value cannot be encoded for the wire
    │   └── MessageTooLargeError  an argument or result above the message size limit
    ├── DeserializationError .... a message or value cannot be decoded
    │   ├── VersionMismatchError  code pickled by another Python minor version or protocol
    │   └── MessageRejectedError  unsigned, tampered, expired or oversized message
    ├── NotFoundError ........... no running or deployed function / app by that name
    │   └── ResultExpiredError    a spawned call's result outlived its retention period
    ├── ConnectionError ......... the broker cannot be reached, or the connection was lost
    ├── EngineError ............. the engine refused a request or could not be started
    │   ├── EngineNotFoundError   no engine listens on the control queue
    │   └── EnvironmentNotServedError   the engine asked does not serve that environment
    ├── ExecutionError .......... the call was accepted but could not produce a value
    │   ├── FunctionTimeoutError  the function ran past its timeout
    │   ├── CallCancelledError    the call was cancelled (FunctionCall.cancel)
    │   ├── DeadLetteredError     the input crashed its container too often (crash limit)
    │   └── OutOfMemoryError      the function went past its memory limit (not retried)
    └── RemoteError ............. the function raised an exception whose type cannot be rebuilt here

A remote exception whose type *can* be rebuilt (``ValueError``, or your own class) is
re-raised as itself, not wrapped: the remote traceback is attached as a note.
"""

from __future__ import annotations

__all__ = [
    "BlockingCallInLoopError",
    "CallCancelledError",
    "ConfigError",
    "ConnectionError",
    "DeadLetteredError",
    "DeserializationError",
    "EngineError",
    "EngineNotFoundError",
    "EnvironmentNotServedError",
    "ExecutionError",
    "FunctionTimeoutError",
    "InvalidError",
    "MessageRejectedError",
    "MessageTooLargeError",
    "NotFoundError",
    "OutOfMemoryError",
    "QueueMismatchError",
    "RemoteError",
    "ResultExpiredError",
    "SerializationError",
    "VersionMismatchError",
    "WarrenError",
]


class WarrenError(Exception):
    """Base class of every error raised by Warren itself."""


class InvalidError(WarrenError):
    """An argument or a configuration value is not acceptable."""


class ConfigError(InvalidError):
    """A setting (a ``WARREN_*`` variable, or the command-line flag that overrides it) has a
    value Warren cannot use; the message names the variable or flag (and the value, unless
    it is secret)."""


class QueueMismatchError(ConfigError):
    """A queue Warren declares exists on the broker with other arguments: typically a
    classic queue met by an engine started with ``WARREN_QUEUE_TYPE=quorum``, or the
    reverse. RabbitMQ cannot change a queue's type; the message names the queue, both
    values, and the two ways out (delete the queue, or set the variable back)."""


class BlockingCallInLoopError(InvalidError):
    """A blocking method was called from inside a running event loop.

    The message names the ``.aio`` form to use instead.
    """


class SerializationError(WarrenError):
    """A value could not be encoded for the wire."""


class MessageTooLargeError(SerializationError):
    """An argument or result is larger than a message may be (``WARREN_MAX_MESSAGE_SIZE``).

    Raised before anything is published. Pass large data by reference instead (a path
    on a shared volume, an object store key).
    """


class DeserializationError(WarrenError):
    """A message or a value could not be decoded."""


class MessageRejectedError(DeserializationError):
    """A message failed verification: unsigned, signed with another key, tampered with,
    expired, or oversized. Nothing in it was unpickled."""


class VersionMismatchError(DeserializationError):
    """Code or a message was produced by an incompatible Python or protocol version."""


class NotFoundError(WarrenError):
    """The function, app or call does not exist (not running, not deployed, or removed)."""


class ResultExpiredError(NotFoundError):
    """A spawned call's result is gone: its retention period ended (or the id is unknown)."""


class ConnectionError(WarrenError):
    """The broker could not be reached, or the connection was lost for good."""


class EngineError(WarrenError):
    """The engine refused a request or could not be started."""


class EngineNotFoundError(EngineError):
    """No engine is listening: start one with ``warren engine``."""


class EnvironmentNotServedError(EngineError):
    """The engine node asked does not serve that environment (``warren engine --env``)."""


class ExecutionError(WarrenError):
    """A call was accepted but did not produce a value."""


class FunctionTimeoutError(ExecutionError):
    """The function ran longer than its ``timeout``."""


class CallCancelledError(ExecutionError):
    """The call was cancelled before it produced a value."""


class DeadLetteredError(ExecutionError):
    """The input was moved to the dead-letter queue instead of being run again.

    It was running each time its container died, as many times as the crash limit
    (``WARREN_CRASH_LIMIT``) allows; the message names the limit and the queue.
    """


class OutOfMemoryError(ExecutionError):
    """The function went past its ``memory`` limit. Told apart from a crash: not retried."""


class RemoteError(WarrenError):
    """The remote function raised an exception whose type cannot be rebuilt locally.

    ``type_name`` is the qualified name of the remote type, ``remote_traceback`` the
    formatted traceback from the container.
    """

    def __init__(self, type_name: str, message: str, remote_traceback: str) -> None:
        super().__init__(f"{type_name}: {message}")
        self.type_name = type_name
        self.message = message
        self.remote_traceback = remote_traceback

    def __reduce__(self) -> tuple[type[RemoteError], tuple[str, str, str]]:
        return (type(self), (self.type_name, self.message, self.remote_traceback))

    def __str__(self) -> str:
        return f"{self.type_name}: {self.message}\n\nRemote traceback:\n{self.remote_traceback}"
