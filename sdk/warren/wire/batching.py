"""Batches on the wire, and how many messages a container takes at once.

Several inputs may share one message, and a container may *hold* more inputs than
it *runs*: it runs at most ``max_inputs`` at once and starts the others in turn as
slots free up (see ``warren_engine.container.executor``). RabbitMQ counts prefetch in *messages*,
while a container's capacity is in *inputs*, so the two are reconciled here:

* The client sizes messages by time (:mod:`warren.client.batch_sizer`): a few milliseconds of work
  each, so a fast function sends hundreds of inputs per message whatever its
  ``max_inputs``, and a slow one sends one per message. A message carries at most
  :data:`MAX_BATCH_INPUTS` inputs and stays within the message size limit.
* A container sets its prefetch from the sizes of the messages it receives and the
  run times it sees (:class:`PrefetchTuner`): enough messages to fill its slots
  (``max_inputs`` while they carry one input each, so that concurrent ``remote``
  calls all run at once), plus one when they run quickly, so that the next is there
  when one ends; never more for slow inputs, which must not wait in one container
  while another is free.
* A container that finds itself holding far more work than that (a map whose later
  inputs are slower than its first) hands the inputs it has not started back to the
  queue, for other containers.

Pure; no I/O.
"""

from __future__ import annotations

import math

MAX_BATCH_INPUTS = 1000
SMOOTHING = 0.3
# A message whose inputs take less than this to run gets the next one fetched ahead.
FETCH_AHEAD_SECONDS = 0.05
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


def prefetch_for(max_inputs: int, mean_size: float, per_input: float | None = None) -> int:
    """Messages a container of ``max_inputs`` takes at once, for messages of ``mean_size``
    inputs that run ``per_input`` seconds each (None: not known yet).

    Enough messages to fill the slots (one per slot while they carry one input each),
    plus one fetched ahead when a message's inputs run quickly: then the next is there
    when one ends, instead of a round trip to the broker later. For slow ones that
    round trip costs nothing next to their run time, and a message held ahead would
    keep its inputs from other containers.
    """
    if mean_size < 1.5:
        filling, size = max_inputs, 1.0
    else:
        size = round(mean_size)  # a running mean approaches a steady size from below
        filling = min(max_inputs, math.ceil(max_inputs / size))
    if per_input is None:
        return filling
    seconds_per_message = per_input * max(1.0, size / max_inputs)
    return filling + (1 if seconds_per_message < FETCH_AHEAD_SECONDS else 0)


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

    def reset(self) -> None:
        """Back to one message per slot (the container handed back what it held)."""
        self._mean_size = 1.0
        self.prefetch = self.max_inputs

    def observe(self, size: int, per_input: float | None = None) -> int | None:
        """Record one message's input count (and the container's run time per input, if
        known); returns a new prefetch when it should change."""
        self._mean_size += SMOOTHING * (size - self._mean_size)
        desired = prefetch_for(self.max_inputs, self._mean_size, per_input)
        # Shrink at once (holding single inputs beyond the slots keeps them from other
        # containers); grow only on a marked change, since each change is a round trip.
        if (
            desired < self.prefetch
            or desired > 2 * self.prefetch
            or (desired > self.prefetch and self.prefetch <= 2)
        ):
            self.prefetch = desired
            return desired
        return None
