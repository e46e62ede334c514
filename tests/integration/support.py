"""Helpers for tests against the real broker and real engine processes."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import aio_pika
import psutil
from aio_pika.exceptions import ChannelNotFoundEntity

from sdk.config import settings

REPO = Path(__file__).resolve().parents[2]


def queue_exists(name: str) -> bool:
    async def probe() -> bool:
        connection = await aio_pika.connect(settings().broker_url)
        try:
            channel = await connection.channel()
            try:
                await channel.declare_queue(name, passive=True)
            except ChannelNotFoundEntity:
                return False
            return True
        finally:
            await connection.close()

    return asyncio.run(probe())


def processes_matching(*needles: str) -> list[psutil.Process]:
    """Live processes whose command line contains every needle."""
    found = []
    for proc in psutil.process_iter(["cmdline", "status"]):
        try:
            cmdline = " ".join(proc.info["cmdline"] or [])
            if proc.info["status"] != psutil.STATUS_ZOMBIE and all(n in cmdline for n in needles):
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


def wait_until(predicate: Callable[[], bool], timeout: float, interval: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


def run_python(
    *args: str, timeout: float = 90, **kwargs: object
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
        **kwargs,  # type: ignore[call-overload]
    )
