"""Dramatiq, as its documentation starts: the RabbitMQ broker, results in Redis (its
Results middleware needs a backend; Redis is the one it documents), the worker's
defaults (one process per core, 8 threads each)."""

from __future__ import annotations

import os

import dramatiq
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from dramatiq.results import Results
from dramatiq.results.backends import RedisBackend

from peers import work

# The benchmark's client sits idle between workloads (pika's blocking connection sends
# heartbeats only when used): with heartbeats off the broker keeps it.
broker = RabbitmqBroker(
    url=os.environ.get("WARREN_BROKER_URL", "amqp://guest:guest@127.0.0.1:5672/") + "?heartbeat=0"
)
broker.add_middleware(
    Results(backend=RedisBackend(url=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")))
)
dramatiq.set_broker(broker)


@dramatiq.actor(store_results=True, max_retries=0)
def add(x: int, y: int) -> int:
    return work.add(x, y)


@dramatiq.actor(store_results=True, max_retries=0, time_limit=600_000)
def burn(rounds: int) -> int:
    return work.burn(rounds)
