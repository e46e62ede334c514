"""Shared fixtures: the real RabbitMQ every integration test runs against."""

from __future__ import annotations

import os
import socket
from urllib.parse import urlparse

import pytest
from warren.config import settings, split_urls

# Queues that outlive their test (spawned calls' results, the result queue of every
# client process) must not pile up on the broker: RabbitMQ 3.10 restarting with
# thousands of durable queues (as the fault tests make it) can take very long to boot.
os.environ.setdefault("WARREN_RESULT_RETENTION", "120")
os.environ.setdefault("WARREN_RESULT_QUEUE_EXPIRY", "60")


@pytest.fixture(scope="session")
def broker_url() -> str:
    """The broker's URL, after checking that it answers (tests never fake it)."""
    url = settings().broker_url
    parsed = urlparse(split_urls(url)[0])
    host, port = parsed.hostname or "127.0.0.1", parsed.port or 5672
    try:
        socket.create_connection((host, port), timeout=5).close()
    except OSError as exc:
        pytest.fail(f"RabbitMQ does not answer at {host}:{port} ({exc}); run ./dev test")
    return url
