"""What ``warren dead list`` and ``warren dead show`` print: dead inputs for people.

Pure: the command line asks the engine (:mod:`warren_engine.daemon.dead_letters`) and
prints these lines; ``--json`` prints the replies' ``as_dict`` instead.
"""

from __future__ import annotations

import time

from warren.wire.control import DeadInput, DeadInputDetail, DeadInputListing

WHERE_CHARS = 32


def when(stamp: float | None) -> str:
    """A Unix time as local time to the second; ``-`` when unknown."""
    return "-" if stamp is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(stamp))


def size(count: int) -> str:
    """Bytes, in the unit that keeps the figure short."""
    if count < 1024:
        return f"{count} B"
    if count < 1024 * 1024:
        return f"{count / 1024:.1f} KiB"
    return f"{count / (1024 * 1024):.1f} MiB"


def where(dead: DeadInput) -> str:
    """``app.function``, or the queue it came from, or ``?``."""
    if dead.app is not None and dead.function is not None:
        return f"{dead.app}.{dead.function}"
    return dead.queue or "?"


def listing_lines(listing: DeadInputListing, environment: str) -> list[str]:
    """One line per dead input: id, app.function, when, size, reason."""
    if not listing.inputs:
        return [f"no dead-lettered inputs in environment {environment!r}"]
    lines = [f"{'id':<12}  {'function':<{WHERE_CHARS}}  {'dead since':<19}  {'size':>9}  reason"]
    for dead in listing.inputs:
        copies = f" ({dead.copies} copies)" if dead.copies > 1 else ""
        lines.append(
            f"{dead.id:<12}  {where(dead):<{WHERE_CHARS}}  {when(dead.dead_at):<19}  "
            f"{size(dead.size):>9}  {dead.reason}{copies}"
        )
    listed = sum(dead.copies for dead in listing.inputs)
    if listing.total > listed:
        lines.append(f"... and {listing.total - listed} more messages (see --limit)")
    return lines


def detail_lines(shown: DeadInputDetail) -> list[str]:
    """Everything known of one dead input, a field a line."""
    dead = shown.input
    fields: list[tuple[str, str]] = [
        ("id", dead.id),
        ("function", where(dead)),
        ("queue", dead.queue or "-"),
        ("reason", dead.reason),
        ("dead since", when(dead.dead_at)),
        ("size", f"{dead.size} bytes"),
        ("copies", str(dead.copies)),
        ("signature", _signature(shown)),
        ("call", _call(shown)),
        ("result to", _result_to(shown)),
        ("message id", shown.message_id or "-"),
        ("correlation id", shown.correlation_id or "-"),
        ("type", shown.type or "-"),
    ]
    fields += [(f"header {key}", value) for key, value in shown.headers.items()]
    for argument in shown.arguments:
        shown_as = argument.preview
        if shown_as is None:
            shown_as = (
                "(not shown: loading a pickle runs code)"
                if argument.format == "pickle"
                else "(cannot be decoded)"
            )
        fields.append(
            (f"input {argument.index}", f"{argument.format}, {argument.size} bytes: {shown_as}")
        )
    width = max(len(name) for name, _ in fields)
    return [f"{name:<{width}}  {value}" for name, value in fields]


def _signature(shown: DeadInputDetail) -> str:
    if shown.problem is not None:
        return f"{shown.problem} (it cannot be retried)"
    return f"valid until {when(shown.expires_at)}"


def _call(shown: DeadInputDetail) -> str:
    dead = shown.input
    if dead.invocation is None:
        return "- (not decoded: this engine's key does not vouch for it)"
    indexes = ", ".join(str(index) for index in dead.inputs)
    return f"{dead.invocation}, input {indexes}, {dead.crashes} crashes"


def _result_to(shown: DeadInputDetail) -> str:
    if shown.reply_to is None:
        return "- (nobody)"
    if shown.stored_result:
        return f"{shown.reply_to} (a spawned call: a retry's result replaces its error)"
    return f"{shown.reply_to} (a waiting caller: it was answered already)"
