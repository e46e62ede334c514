"""The event loops Warren makes for itself: uvloop's where it is installed.

Warren runs its own loops in the blocking facade's thread, in every container and in
the engine; uvloop (a libuv event loop) halves the cost of the socket and scheduling
work a call spends there. A loop the user made (``asyncio.run`` around ``.aio``
calls) stays whatever the user chose. ``WARREN_EVENT_LOOP=asyncio`` keeps the
standard loop everywhere (read through :mod:`warren.config`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from warren.config import settings


def loop_factory(kind: str | None = None) -> Callable[[], asyncio.AbstractEventLoop]:
    """What makes Warren's own event loops of ``kind`` (``uvloop`` or ``asyncio``; default
    the process's settings): uvloop's, unless unavailable or turned off."""
    if (kind or settings().event_loop) == "uvloop":
        try:
            import uvloop
        except ImportError:
            pass
        else:
            return uvloop.new_event_loop
    return asyncio.new_event_loop


def new_event_loop() -> asyncio.AbstractEventLoop:
    return loop_factory()()


def runner(kind: str | None = None) -> asyncio.Runner:
    """An ``asyncio.Runner`` on Warren's kind of loop (``with runner() as r: r.run(main())``);
    an entry point passes the ``event_loop`` of the settings it built."""
    return asyncio.Runner(loop_factory=loop_factory(kind))
