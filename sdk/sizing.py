"""How many inputs the client packs into one message, learned from how long they run.

Fast functions get large batches, whatever their ``max_inputs``: a message's fixed
cost (a publish, a delivery, a signature, an acknowledgement) is then shared by
hundreds of inputs, and the container runs them in turn. Slow functions get batches
of one, so their inputs spread over every container instead of piling onto the
first. Until a run time is known, a message carries at most what one container runs
at once. The estimate is an exponentially weighted mean of the run times the
containers report with each result, one per function and client, shared by its maps
and its concurrent ``remote`` calls. Pure.
"""

from __future__ import annotations

import math

from sdk.batching import MAX_BATCH_INPUTS

TARGET_BATCH_SECONDS = 0.005
SMOOTHING = 0.2


class BatchSizer:
    def __init__(self) -> None:
        self._per_input: float | None = None

    @property
    def per_input(self) -> float | None:
        """Seconds one input is expected to run (None until a result said)."""
        return self._per_input

    def observe(self, seconds: float) -> None:
        """Learn from one input's reported run time."""
        if self._per_input is None:
            self._per_input = seconds
        else:
            self._per_input += SMOOTHING * (seconds - self._per_input)

    def size(self, ready: int, max_inputs: int, containers: int) -> int:
        """Inputs to put in the next message, when ``ready`` inputs wait to be sent.

        By time: about ``TARGET_BATCH_SECONDS`` of work. By spread: what is ready,
        shared over the containers, up to what one of them runs at once (which costs
        no waiting). The larger of the two, within ``MAX_BATCH_INPUTS``.
        """
        by_time = 1
        if self._per_input is not None:
            by_time = int(TARGET_BATCH_SECONDS / max(self._per_input, 1e-7))
        spread = min(max_inputs, math.ceil(ready / max(1, containers)))
        return max(1, min(MAX_BATCH_INPUTS, max(by_time, spread)))
