"""How many inputs share a message, and how many messages a container holds.

RabbitMQ counts prefetch in messages, not inputs. A container of ``max_inputs`` slots
takes at most ``prefetch_messages(max_inputs)`` messages of at most
``max_batch(max_inputs)`` inputs each, and their product never exceeds ``max_inputs``:
so a batch is never larger than the container's free slots, and a container never
holds (or runs) more inputs than ``max_inputs``, however the inputs are batched.

Pure functions; no I/O.
"""

from __future__ import annotations

MAX_PREFETCH_MESSAGES = 4


def prefetch_messages(max_inputs: int) -> int:
    """Messages a container may hold unacknowledged (its AMQP prefetch count)."""
    return max(1, min(max_inputs, MAX_PREFETCH_MESSAGES))


def max_batch(max_inputs: int) -> int:
    """Largest number of inputs one message may carry to a container of ``max_inputs``."""
    return max(1, max_inputs // prefetch_messages(max_inputs))
