"""Settings read from the environment, in one place.

==========================  ======================================  ==========================
variable                    meaning                                 default
==========================  ======================================  ==========================
WARREN_BROKER_URL           AMQP URL of RabbitMQ                    amqp://guest:guest@127.0.0.1:5672/
WARREN_ENVIRONMENT          environment (name prefix) to work in    main
WARREN_QUEUE_TYPE           ``classic`` or ``quorum`` function      classic
                            queues (decided when a queue is made)
WARREN_RESULT_QUEUE_EXPIRY  seconds an unused result queue lives    600
WARREN_ENGINE_START_TIMEOUT seconds to wait for a child engine      60
WARREN_RESULT_RETENTION     seconds a spawned call's result is kept 86400 (24 hours)
WARREN_STOP_GRACE           seconds a stopping container lets its    30
                            running inputs finish (then they are
                            requeued for another container)
==========================  ======================================  ==========================
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from sdk import naming
from sdk.exceptions import InvalidError

DEFAULT_BROKER_URL = "amqp://guest:guest@127.0.0.1:5672/"
QUEUE_TYPES = ("classic", "quorum")


def _float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise InvalidError(f"{name} must be a number, got {raw!r}") from None
    if value <= 0:
        raise InvalidError(f"{name} must be positive, got {raw!r}")
    return value


def _broker_url() -> str:
    return os.environ.get("WARREN_BROKER_URL") or DEFAULT_BROKER_URL


def _environment() -> str:
    return naming.check_part("environment", os.environ.get("WARREN_ENVIRONMENT") or "main")


def _queue_type() -> str:
    value = os.environ.get("WARREN_QUEUE_TYPE") or "classic"
    if value not in QUEUE_TYPES:
        raise InvalidError(f"WARREN_QUEUE_TYPE must be one of {QUEUE_TYPES}, got {value!r}")
    return value


@dataclass(frozen=True, slots=True)
class Settings:
    broker_url: str = field(default_factory=_broker_url)
    environment: str = field(default_factory=_environment)
    queue_type: str = field(default_factory=_queue_type)
    result_queue_expiry: float = field(
        default_factory=lambda: _float("WARREN_RESULT_QUEUE_EXPIRY", 600.0)
    )
    engine_start_timeout: float = field(
        default_factory=lambda: _float("WARREN_ENGINE_START_TIMEOUT", 60.0)
    )
    result_retention: float = field(
        default_factory=lambda: _float("WARREN_RESULT_RETENTION", 86400.0)
    )
    stop_grace: float = field(default_factory=lambda: _float("WARREN_STOP_GRACE", 30.0))


def settings() -> Settings:
    """Current settings; read afresh each time so tests and child processes can change them."""
    return Settings()
