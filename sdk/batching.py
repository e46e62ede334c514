"""Batches on the wire, and how many messages a container takes at once.

Several inputs may share one message. RabbitMQ counts prefetch in *messages*, while a
container's capacity (``max_inputs``) is in *inputs*, so the two are reconciled here:

* The client never puts more than ``max_batch(max_inputs)`` inputs in one message.
* A container sets its prefetch from the sizes of the messages it has been receiving
  (:class:`PrefetchTuner`): ``max_inputs`` messages while they carry one input each (so
  concurrent ``remote`` calls all run at once), few while they carry many.
* A container never runs more than ``max_inputs`` inputs: what arrives beyond its free
  slots (while the prefetch is adjusting) is published back to the queue before the
  message is acknowledged, so a batch never takes more than the container's free slots.

Pure; no I/O.
"""

from __future__ import annotations

BATCH_DIVISOR = 4
SMOOTHING = 0.3
# msgpack framing of one input or result inside its batch, beyond its value's bytes.
ITEM_OVERHEAD = 64


def slices_within(sizes: list[int], max_count: int, max_bytes: int) -> list[tuple[int, int]]:
    """Cut consecutive items into ``(start, end)`` slices of at most ``max_count`` items
    whose sizes add up to at most ``max_bytes`` (an item larger than that goes alone)."""
    slices: list[tuple[int, int]] = []
    start, total = 0, 0
    for index, size in enumerate(sizes):
        if index > start and (index - start >= max_count or total + size > max_bytes):
            slices.append((start, index))
            start, total = index, 0
        total += size
    if start < len(sizes):
        slices.append((start, len(sizes)))
    return slices


def max_batch(max_inputs: int) -> int:
    """Largest number of inputs one message may carry to a container of ``max_inputs``.

    A quarter of the container, so that it can hold the next batches while it runs one.
    """
    return max(1, max_inputs // BATCH_DIVISOR)


class PrefetchTuner:
    """A container's prefetch (in messages), from a running mean of message sizes."""

    def __init__(self, max_inputs: int) -> None:
        self.max_inputs = max_inputs
        self.prefetch = max_inputs
        self._mean_size = 1.0

    @property
    def mean_size(self) -> float:
        """Running mean of the inputs per message received."""
        return self._mean_size

    def observe(self, size: int) -> int | None:
        """Record one message's input count; returns a new prefetch when it should change."""
        self._mean_size += SMOOTHING * (size - self._mean_size)
        desired = max(1, min(self.max_inputs, int(self.max_inputs / max(1.0, self._mean_size))))
        # Shrink at once (holding too much makes the container hand inputs back); grow
        # only on a marked change, since each change is a round trip to the broker.
        if (
            desired < self.prefetch
            or desired > 2 * self.prefetch
            or (desired > self.prefetch and self.prefetch <= 2)
        ):
            self.prefetch = desired
            return desired
        return None
