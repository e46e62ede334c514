"""``warren serve``: an app run that reloads its code when its files change.

The server runs the script's app ephemerally, as ``app.run()`` does (with the engine
daemon if one listens, else a child engine of its own), prints what its functions print,
and watches the script's directory for changes to Python files (with watchfiles, which
uses the operating system's file events). On a change it imports the script afresh in
a child process (:mod:`warren_engine.app_packer`) and sends the new code to the engine
under the same app instance: its queues and its web endpoints' URLs stay, the engine
starts containers of the new code and then stops the old ones. A script that fails to
import, or code the engine refuses, is reported and the previous version keeps serving.
Ctrl-C (or ``--timeout``) stops the app.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pickle
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path, PurePath

import structlog
import watchfiles
from warren.client.app_run import PackedApp, RunHandle, reload_run, start_run, stop_run
from warren.client.connection import Client
from warren.client.log_printer import LogPrinter
from warren.client.log_reader import LogReader
from warren.config import Settings
from warren.exceptions import InvalidError, WarrenError

log = structlog.get_logger(__name__)

# How far the clocks of the server, its containers and the broker may differ.
CLOCK_SLACK_SECONDS = 2.0
# How long a burst of file events (an editor's save, a checkout) is gathered into one reload.
SETTLE_MILLISECONDS = 50
PACK_TIMEOUT_SECONDS = 120.0
STOP_DRAIN_SECONDS = 1.0


class DevServer:
    """Serves ``script``'s app until cancelled, reloading it on each change of its files.

    ``say`` reports what the server does (reloads, URLs, failures), one line at a time.
    """

    def __init__(
        self,
        script: Path,
        settings: Settings,
        *,
        show_output: bool = True,
        say: Callable[[str], None] = print,
    ) -> None:
        self._script = script
        self._root = script.resolve().parent
        self._settings = settings
        self._show_output = show_output
        self._say = say
        self._urls: list[str] = []
        self.reloads = 0

    async def run(self) -> None:
        packed = await self.pack()
        started = time.time() - CLOCK_SLACK_SECONDS
        async with Client.connect() as client:
            handle = await start_run(client, packed)
            output: LogReader | None = None
            try:
                if self._show_output:
                    output = LogReader(LogPrinter(), app=handle.instance, since=started)
                    await output.start(client.session, handle.environment)
                self._say(f"serving {packed.name} ({handle.instance}); Ctrl-C stops it")
                self._show_urls(packed, handle)
                await self._watch(packed.name, handle)
            finally:
                with contextlib.suppress(WarrenError):
                    await asyncio.shield(stop_run(client, handle))
                if output is not None:
                    await output.quiet(0.2, STOP_DRAIN_SECONDS)
                    await output.close()

    async def _watch(self, name: str, handle: RunHandle) -> None:
        async for changes in watchfiles.awatch(
            self._root,
            watch_filter=watchfiles.PythonFilter(),
            step=SETTLE_MILLISECONDS,
        ):
            changed = sorted({str(PurePath(path).relative_to(self._root)) for _, path in changes})
            began = time.monotonic()
            try:
                packed = await self.pack()
                if packed.name != name:
                    raise InvalidError(
                        f"the app is now named {packed.name!r}, not {name!r}: "
                        "restart warren serve to serve it under its new name"
                    )
                await reload_run(handle, packed)
            except WarrenError as exc:
                self._say(f"not reloaded ({type(exc).__name__}: {exc}); still serving the last")
                continue
            self.reloads += 1
            took = time.monotonic() - began
            self._say(f"reloaded {name} after a change to {', '.join(changed)} ({took:.1f}s)")
            self._show_urls(packed, handle)

    def _show_urls(self, packed: PackedApp, handle: RunHandle) -> None:
        urls = packed.web_urls(handle.instance, handle.web_base)
        if urls != self._urls:
            for url in urls:
                self._say(f"  {url}")
        self._urls = urls

    async def pack(self) -> PackedApp:
        """The script's app, imported afresh in a child process."""
        with tempfile.TemporaryDirectory(prefix="warren-serve-") as scratch:
            out = Path(scratch) / "app.pickle"
            env = dict(os.environ, WARREN_ENVIRONMENT=self._settings.environment)
            child = await asyncio.create_subprocess_exec(
                sys.executable,
                "-P",
                "-m",
                "warren_engine.app_packer",
                str(self._script),
                str(out),
                stdin=asyncio.subprocess.DEVNULL,
                env=env,
            )
            try:
                code = await asyncio.wait_for(child.wait(), PACK_TIMEOUT_SECONDS)
            except TimeoutError:
                code = None
            finally:
                if child.returncode is None:
                    with contextlib.suppress(ProcessLookupError):
                        child.kill()
                    await child.wait()
            if code is None:
                raise InvalidError(f"{self._script} took over {PACK_TIMEOUT_SECONDS:g}s to load")
            if code != 0:
                raise InvalidError(f"{self._script} did not load (exit code {code}; see above)")
            # Written just now by our own child, from the user's own script.
            packed = pickle.loads(out.read_bytes())
        if not isinstance(packed, PackedApp):
            raise InvalidError(f"{self._script} did not load into an app")
        return packed
