"""Warren's SDK: everything an application imports.

Example::

    import warren

    app = warren.App("hello")

    @app.function()
    def square(x: int) -> int:
        return x * x

    with app.run():
        print(square.remote(7))          # 49, computed in a container
"""

import logging as _logging
import sys as _sys

import structlog as _structlog

from warren.app import App, AppRun
from warren.client.call_logs import OutputLine
from warren.client.connection import Client
from warren.client.progress import enable_output
from warren.exceptions import (
    BlockingCallInLoopError,
    CallCancelledError,
    ConfigError,
    ConnectionError,
    DeadLetteredError,
    DeserializationError,
    EngineError,
    EngineNotFoundError,
    EnvironmentNotServedError,
    ExecutionError,
    FunctionTimeoutError,
    InvalidError,
    MessageRejectedError,
    MessageTooLargeError,
    NotFoundError,
    OutOfMemoryError,
    QueueMismatchError,
    RemoteError,
    ResultExpiredError,
    SerializationError,
    VersionMismatchError,
    WarrenError,
)
from warren.function import Function
from warren.function_call import FunctionCall
from warren.secrets import Secret
from warren.volumes import CloudBucketMount, Volume
from warren.web import web_endpoint
from warren.wire.retries import Retries

if not _structlog.is_configured():
    # A library must not print to stdout: until an entry point (or the application)
    # configures structlog, Warren's own events go to stderr, warnings and above only.
    _structlog.configure(
        wrapper_class=_structlog.make_filtering_bound_logger(_logging.WARNING),
        logger_factory=_structlog.PrintLoggerFactory(file=_sys.stderr),
    )

__all__ = [
    "App",
    "AppRun",
    "BlockingCallInLoopError",
    "CallCancelledError",
    "Client",
    "CloudBucketMount",
    "ConfigError",
    "ConnectionError",
    "DeadLetteredError",
    "DeserializationError",
    "EngineError",
    "EngineNotFoundError",
    "EnvironmentNotServedError",
    "ExecutionError",
    "Function",
    "FunctionCall",
    "FunctionTimeoutError",
    "InvalidError",
    "MessageRejectedError",
    "MessageTooLargeError",
    "NotFoundError",
    "OutOfMemoryError",
    "OutputLine",
    "QueueMismatchError",
    "RemoteError",
    "ResultExpiredError",
    "Retries",
    "Secret",
    "SerializationError",
    "VersionMismatchError",
    "Volume",
    "WarrenError",
    "enable_output",
    "web_endpoint",
]
