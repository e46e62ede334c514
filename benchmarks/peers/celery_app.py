"""Celery, as its documentation starts: RabbitMQ as the broker, the ``rpc://`` result
backend (results back over RabbitMQ too), the worker's defaults (prefork, one process
per core)."""

from __future__ import annotations

import os

from celery import Celery

from peers import work

app = Celery(
    "bench",
    broker=os.environ.get("WARREN_BROKER_URL", "amqp://guest:guest@127.0.0.1:5672//"),
    backend="rpc://",
)
# The benchmark's client sits idle between workloads, and py-amqp sends heartbeats only
# when asked to: with heartbeats off the broker keeps the idle connection.
app.conf.update(
    worker_hijack_root_logger=False,
    broker_connection_retry_on_startup=True,
    broker_heartbeat=0,
)


@app.task
def add(x: int, y: int) -> int:
    return work.add(x, y)


@app.task
def burn(rounds: int) -> int:
    return work.burn(rounds)
