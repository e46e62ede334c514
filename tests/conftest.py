"""Shared fixtures: the real RabbitMQ every integration test runs against."""

from __future__ import annotations

import os
import socket
from urllib.parse import urlparse

import pytest

from sdk.config import settings

# Spawned calls' result queues outlive the test run; keep them for minutes, not a day.
os.environ.setdefault("WARREN_RESULT_RETENTION", "600")


@pytest.fixture(scope="session")
def broker_url() -> str:
    """The broker's URL, after checking that it answers (tests never fake it)."""
    url = settings().broker_url
    parsed = urlparse(url)
    host, port = parsed.hostname or "127.0.0.1", parsed.port or 5672
    try:
        socket.create_connection((host, port), timeout=5).close()
    except OSError as exc:
        pytest.fail(f"RabbitMQ does not answer at {host}:{port} ({exc}); run ./dev test")
    return url
