"""Warren's SDK: everything an application imports.

Example::

    import sdk

    app = sdk.App("hello")

    @app.function()
    def square(x: int) -> int:
        return x * x

    with app.run():
        print(square.remote(7))          # 49, computed in a container
"""

import logging as _logging
import sys as _sys

import structlog as _structlog

from sdk.app import App, AppRun
from sdk.calls import FunctionCall
from sdk.client import Client
from sdk.exceptions import (
    BlockingCallInLoopError,
    CallCancelledError,
    ConnectionError,
    DeadLetteredError,
    DeserializationError,
    EngineError,
    EngineNotFoundError,
    ExecutionError,
    FunctionTimeoutError,
    InvalidError,
    MessageRejectedError,
    MessageTooLargeError,
    NotFoundError,
    OutOfMemoryError,
    RemoteError,
    ResultExpiredError,
    SerializationError,
    VersionMismatchError,
    WarrenError,
)
from sdk.function import Function
from sdk.retries import Retries
from sdk.secrets import Secret
from sdk.volumes import CloudBucketMount, Volume
from sdk.web import web_endpoint

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
    "ConnectionError",
    "DeadLetteredError",
    "DeserializationError",
    "EngineError",
    "EngineNotFoundError",
    "ExecutionError",
    "Function",
    "FunctionCall",
    "FunctionTimeoutError",
    "InvalidError",
    "MessageRejectedError",
    "MessageTooLargeError",
    "NotFoundError",
    "OutOfMemoryError",
    "RemoteError",
    "ResultExpiredError",
    "Retries",
    "Secret",
    "SerializationError",
    "VersionMismatchError",
    "Volume",
    "WarrenError",
    "web_endpoint",
]
