"""Spawns per second, and the time to gather their results.

10,000 spawns of a no-op function (``async def noop(x): return x``, ``max_inputs=100``),
issued with 64 in flight through ``spawn.aio`` and also one at a time through the
blocking ``spawn``; then ``FunctionCall.gather`` of all of them.

    python benchmarks/spawn_throughput.py [--spawns 10000]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time

import warren
from harness import save

# Results expire from the broker on their own even if the clean-up below never runs (a
# broker restarting with tens of thousands of durable queues takes a long time to boot).
os.environ.setdefault("WARREN_RESULT_RETENTION", "900")

app = warren.App("bench-spawn")


@app.function(max_inputs=100)
async def noop(x: int) -> int:
    return x


async def spawn_concurrently(n: int, in_flight: int) -> list[warren.FunctionCall[int]]:
    slots = asyncio.Semaphore(in_flight)

    async def one(i: int) -> warren.FunctionCall[int]:
        async with slots:
            return await noop.spawn.aio(i)

    return list(await asyncio.gather(*(one(i) for i in range(n))))


async def gather_all(calls: list[warren.FunctionCall[int]]) -> list[int]:
    return await warren.FunctionCall.gather.aio(*calls)


async def delete_results(object_ids: list[str]) -> None:
    """Leave nothing behind: each spawn's result queue would otherwise live for a day."""
    from warren.client.connection import Client
    from warren.wire import naming

    async with Client.connect() as client:
        for start in range(0, len(object_ids), 200):
            chunk = object_ids[start : start + 200]
            await asyncio.gather(
                *(
                    client.publisher.delete_queue(
                        naming.call_queue(client.environment, oid.split(".")[2])
                    )
                    for oid in chunk
                )
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--spawns", type=int, default=10_000)
    parser.add_argument("--in-flight", type=int, default=64)
    args = parser.parse_args()
    n = args.spawns
    figures: dict[str, object] = {"spawns": n, "in_flight": args.in_flight}
    with app.run():
        noop.remote(0)  # warm up
        started = time.perf_counter()
        calls = asyncio.run(spawn_concurrently(n, args.in_flight))
        spawn_seconds = time.perf_counter() - started
        figures["spawns_per_s_concurrent"] = round(n / spawn_seconds)

        started = time.perf_counter()
        results = asyncio.run(gather_all(calls))
        figures["gather_seconds"] = round(time.perf_counter() - started, 2)
        if results != list(range(n)):
            raise AssertionError("gather returned wrong results")

        sequential = min(n, 2_000)
        started = time.perf_counter()
        more = [noop.spawn(i) for i in range(sequential)]
        figures["spawns_per_s_sequential"] = round(sequential / (time.perf_counter() - started))
        figures["sequential_spawns"] = sequential
        warren.FunctionCall.gather(*more)
    asyncio.run(delete_results([call.object_id for call in calls + more]))
    for key, value in figures.items():
        print(f"{key:>24}: {value}")
    save("spawn_throughput", figures)


if __name__ == "__main__":
    main()
