"""How many inputs the client packs into one message, learned from how long they run.

Fast functions get large batches (up to the cap that keeps a container within its
``max_inputs``), so a message's fixed cost is shared by many inputs; slow functions
get batches of one, so their inputs spread over every container instead of piling
onto the first. The estimate is an exponentially weighted mean of the run time the
containers report with each result. Pure.
"""

from __future__ import annotations

from sdk.batching import max_batch

TARGET_BATCH_SECONDS = 0.005
SMOOTHING = 0.2


class BatchSizer:
    def __init__(self, max_inputs: int) -> None:
        self.cap = max_batch(max_inputs)
        self._per_input: float | None = None

    def observe(self, seconds: float) -> None:
        """Learn from one input's reported run time."""
        if self._per_input is None:
            self._per_input = seconds
        else:
            self._per_input += SMOOTHING * (seconds - self._per_input)

    def size(self) -> int:
        """Inputs to put in the next message."""
        if self._per_input is None:
            return 1  # nothing known yet: one input, until the first result says more
        by_time = int(TARGET_BATCH_SECONDS / max(self._per_input, 1e-7))
        return max(1, min(self.cap, by_time))
