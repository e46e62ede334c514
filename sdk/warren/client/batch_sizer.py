"""How many inputs the client packs into one message, learned from how long they run.

Fast functions get large batches, whatever their ``max_inputs``: a message's fixed
cost (a publish, a delivery, a signature, an acknowledgement) is then shared by
hundreds of inputs, and the container runs them in turn. Slow functions get batches
of one, so their inputs spread over every container instead of piling onto the
first. The estimate is an exponentially weighted mean of the run times the
containers report with each result, one per function and client, shared by its maps
and its concurrent ``remote`` calls.

Until a run time is known, a client *probes*: it sends only as many inputs as the
containers have slots, one per message, and holds the others back until the first
result says how long an input takes (or ``PROBE_WAIT`` passes without one, which says
it is slow). Then a burst of 2,000 concurrent calls to a fast function goes out in a
few messages, and one to a slow function still spreads. Each map probes again
(:meth:`BatchSizer.relearn`), and its first result replaces the estimate instead of
moving it a fifth of the way: the same function may take a thousand times longer on
this map's arguments than on the last one's, and 2,000 inputs of 5 ms sent at the
pace of 5 µs ones would land, a few hundred per message, on one container. Pure.
"""

from __future__ import annotations

import math

from warren.wire.batching import MAX_BATCH_INPUTS

TARGET_BATCH_SECONDS = 0.05
SMOOTHING = 0.2
PROBE_WAIT = 0.5


class BatchSizer:
    def __init__(self) -> None:
        self._per_input: float | None = None
        self._stale = False  # known from earlier work only: probe before trusting it

    @property
    def per_input(self) -> float | None:
        """Seconds one input is expected to run (None until a result said)."""
        return self._per_input

    @property
    def known(self) -> bool:
        return self._per_input is not None and not self._stale

    def relearn(self) -> None:
        """New work begins (a map): probe again, and let its first result set the estimate."""
        self._stale = self._per_input is not None

    def at_least(self, seconds: float) -> None:
        """No result came in ``seconds``: an input takes at least that long."""
        self._per_input = max(seconds, self._per_input or 0.0)
        self._stale = False

    def sendable(self, ready: int, max_inputs: int, containers: int, in_flight: int) -> int:
        """How many of ``ready`` inputs to send now, with ``in_flight`` sent and unanswered:
        all of them once the run time is known, else enough to fill every slot."""
        if self.known:
            return ready
        return max(0, min(ready, max_inputs * max(1, containers) - in_flight))

    def observe(self, seconds: float) -> None:
        """Learn from one input's reported run time."""
        if self._per_input is None or self._stale:
            self._per_input = seconds
            self._stale = False
        else:
            self._per_input += SMOOTHING * (seconds - self._per_input)

    def size(self, ready: int, max_inputs: int, containers: int) -> int:
        """Inputs to put in the next message, when ``ready`` inputs wait to be sent.

        By time: about ``TARGET_BATCH_SECONDS`` of work. By spread: what is ready,
        shared over the containers, up to what one of them runs at once (which costs
        no waiting). The larger of the two, within ``MAX_BATCH_INPUTS``.
        """
        by_time = 1
        if self.known:
            by_time = int(TARGET_BATCH_SECONDS / max(self._per_input or 0.0, 1e-7))
        spread = min(max_inputs, math.ceil(ready / max(1, containers)))
        return max(1, min(MAX_BATCH_INPUTS, max(by_time, spread)))
