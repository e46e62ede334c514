"""Settings read from the environment, in one place.

==========================  ======================================  ==========================
variable                    meaning                                 default
==========================  ======================================  ==========================
WARREN_BROKER_URL           AMQP URL of RabbitMQ                    amqp://guest:guest@127.0.0.1:5672/
WARREN_CONTAINER_BROKER_URL the URL an engine's containers use:     WARREN_BROKER_URL
                            a user that may only consume function
                            queues and publish results
WARREN_ENVIRONMENT          environment (name prefix) to work in    main
WARREN_QUEUE_TYPE           ``classic`` or ``quorum`` function      classic
                            queues (decided when a queue is made)
WARREN_RESULT_QUEUE_EXPIRY  seconds an unused result queue lives    600
WARREN_ENGINE_START_TIMEOUT seconds to wait for a child engine      60
WARREN_RESULT_RETENTION     seconds a spawned call's result is kept 86400 (24 hours)
WARREN_STOP_GRACE           seconds a stopping container lets its    30
                            running inputs finish (then they are
                            requeued for another container)
WARREN_SECRET_KEY           the key every message is signed with     (see warren.wire.signing)
WARREN_SECRET_KEY_FILE      a file holding that key instead          ~/.config/warren/secret-key
WARREN_MAX_MESSAGE_SIZE     bytes one call or result may take        2097152 (2 MiB)
WARREN_MESSAGE_EXPIRY       seconds a signed message stays valid     86400
WARREN_CRASH_LIMIT          container deaths an input may cause      3
                            before it is dead-lettered
WARREN_BROKER_CONSUMER_TIMEOUT  the broker's ``consumer_timeout``    1800 (RabbitMQ's default)
                            in seconds: the engine refuses longer
                            function timeouts
WARREN_RECONNECT_TIMEOUT    seconds a client waits for a lost        300
                            broker before failing its calls
WARREN_HTTP_HOST            where the engine serves web endpoints    127.0.0.1
WARREN_HTTP_PORT            ... and on which port (0: any free one)  0
WARREN_PUBLIC_URL           the endpoints' public base URL           http://<host>:<port>
WARREN_EVENT_LOOP           ``uvloop`` (where installed) or          uvloop
                            ``asyncio``: Warren's own event loops
WARREN_PIN_CONTAINERS       ``0``: no core of its own for each       1
                            single-slot sync container
==========================  ======================================  ==========================
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from warren.exceptions import InvalidError
from warren.wire import naming

DEFAULT_BROKER_URL = "amqp://guest:guest@127.0.0.1:5672/"
# Seconds between a robust connection's attempts to come back (aio-pika's default is 5).
RECONNECT_INTERVAL = 1.0
QUEUE_TYPES = ("classic", "quorum")
EVENT_LOOPS = ("uvloop", "asyncio")


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


def _int(name: str, default: int, minimum: int = 1) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise InvalidError(f"{name} must be an integer, got {raw!r}") from None
    if value < minimum:
        raise InvalidError(f"{name} must be at least {minimum}, got {raw!r}")
    return value


def _broker_url() -> str:
    return os.environ.get("WARREN_BROKER_URL") or DEFAULT_BROKER_URL


def _environment() -> str:
    return naming.check_part("environment", os.environ.get("WARREN_ENVIRONMENT") or "main")


def _event_loop() -> str:
    value = os.environ.get("WARREN_EVENT_LOOP") or "uvloop"
    if value not in EVENT_LOOPS:
        raise InvalidError(f"WARREN_EVENT_LOOP must be one of {EVENT_LOOPS}, got {value!r}")
    return value


def _queue_type() -> str:
    value = os.environ.get("WARREN_QUEUE_TYPE") or "classic"
    if value not in QUEUE_TYPES:
        raise InvalidError(f"WARREN_QUEUE_TYPE must be one of {QUEUE_TYPES}, got {value!r}")
    return value


@dataclass(frozen=True, slots=True)
class Settings:
    broker_url: str = field(default_factory=_broker_url)
    container_broker_url: str = field(
        default_factory=lambda: os.environ.get("WARREN_CONTAINER_BROKER_URL") or _broker_url()
    )
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
    max_message_size: int = field(
        default_factory=lambda: _int("WARREN_MAX_MESSAGE_SIZE", 2 * 1024 * 1024, minimum=4096)
    )
    message_expiry: float = field(default_factory=lambda: _float("WARREN_MESSAGE_EXPIRY", 86400.0))
    crash_limit: int = field(default_factory=lambda: _int("WARREN_CRASH_LIMIT", 3))
    broker_consumer_timeout: float = field(
        default_factory=lambda: _float("WARREN_BROKER_CONSUMER_TIMEOUT", 1800.0)
    )
    reconnect_timeout: float = field(
        default_factory=lambda: _float("WARREN_RECONNECT_TIMEOUT", 300.0)
    )
    http_host: str = field(
        default_factory=lambda: os.environ.get("WARREN_HTTP_HOST") or "127.0.0.1"
    )
    http_port: int = field(default_factory=lambda: _int("WARREN_HTTP_PORT", 0, minimum=0))
    public_url: str | None = field(
        default_factory=lambda: os.environ.get("WARREN_PUBLIC_URL") or None
    )
    event_loop: str = field(default_factory=_event_loop)
    pin_containers: bool = field(
        default_factory=lambda: os.environ.get("WARREN_PIN_CONTAINERS", "1") != "0"
    )


def settings() -> Settings:
    """Current settings; read afresh each time so tests and child processes can change them."""
    return Settings()
