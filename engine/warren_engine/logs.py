"""Logging set-up for Warren's entry points (the library itself never configures logging).

JSON lines when stderr is not a terminal, readable lines when it is. The level is the
settings' ``log_level`` (``WARREN_LOG_LEVEL`` or ``--log-level``, default ``info``).
"""

from __future__ import annotations

import logging
import sys

import orjson
import structlog


def _json_dumps(obj: object, default: object = None) -> str:
    return orjson.dumps(obj, default=str).decode()


def configure(level: str = "info") -> None:
    """Configure structlog and the standard library's logging at ``level`` (``info``...)."""
    numeric = logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
    processors: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
    ]
    renderer: structlog.typing.Processor
    if sys.stderr.isatty():
        renderer = structlog.dev.ConsoleRenderer()
    else:
        renderer = structlog.processors.JSONRenderer(serializer=_json_dumps)
    structlog.configure(
        processors=[*processors, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    # aio-pika/aiormq log through the standard library: keep their noise at warnings.
    logging.basicConfig(level=max(numeric, logging.WARNING), stream=sys.stderr)
