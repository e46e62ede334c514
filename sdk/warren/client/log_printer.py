"""What a running app's functions print, written to the caller's own stdout and stderr.

While ``with app.run():`` is active, each line a container captured goes to the
caller's ``sys.stdout`` or ``sys.stderr``, as the function wrote it, prefixed with the
function's name, and with the container's id too once the function has shown more than
one container. Lines a container dropped over its output budget
(``WARREN_LOG_RATE``) are announced on stderr with their count. Each batch is flushed
at once: a caller whose stdout is a pipe sees the line when the function printed it.
"""

from __future__ import annotations

import sys

from warren.wire.logs import STDOUT, LogBatch

SHORT_ID = 6


class LogPrinter:
    """Writes each batch to this process's stdout and stderr (call it on any one thread)."""

    def __init__(self) -> None:
        self._containers: dict[str, set[str]] = {}

    def __call__(self, batch: LogBatch) -> None:
        seen = self._containers.setdefault(batch.function, set())
        seen.add(batch.container)
        prefix = batch.function
        if len(seen) > 1:
            prefix += f"[{batch.container[:SHORT_ID]}]"
        stdout, stderr = sys.stdout, sys.stderr
        if batch.dropped:
            stderr.write(
                f"{prefix}: [warren] {batch.dropped} lines dropped "
                "(the function wrote faster than WARREN_LOG_RATE allows)\n"
            )
        for line in batch.lines:
            (stdout if line.stream == STDOUT else stderr).write(f"{prefix}: {line.text}\n")
        stdout.flush()
        stderr.flush()
