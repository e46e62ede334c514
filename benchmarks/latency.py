"""Single-call latency: p50/p99 of sequential ``remote`` calls of a no-op function.

For scale it also measures a bare aio-pika request/reply between two processes on the
same broker (publisher confirms on, as Warren uses), the bar Warren is held to.
Warren's call and result messages are persistent and signed (the broker writes them
to disk before it confirms them); the bare request/reply's are neither.

    python benchmarks/latency.py [--calls 1000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import statistics
import time
import uuid

import aio_pika
from harness import percentile, save

import sdk
from sdk.config import settings

app = sdk.App("bench-latency")


@app.function()
def noop_sync(x: int) -> int:
    return x


@app.function()
async def noop_async(x: int) -> int:
    return x


def summarise(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "p50_ms": round(percentile(ordered, 0.50) * 1000, 3),
        "p99_ms": round(percentile(ordered, 0.99) * 1000, 3),
        "mean_ms": round(sum(ordered) / len(ordered) * 1000, 3),
    }


def warren_latency(function: sdk.Function[[int], int], calls: int) -> list[float]:
    for i in range(50):
        function.remote(i)
    samples = []
    for i in range(calls):
        started = time.perf_counter()
        function.remote(i)
        samples.append(time.perf_counter() - started)
    return samples


def _responder(url: str, queue_name: str, ready: multiprocessing.synchronize.Event) -> None:
    async def serve() -> None:
        connection = await aio_pika.connect(url)
        channel = await connection.channel(publisher_confirms=True)
        queue = await channel.declare_queue(queue_name, auto_delete=True)

        async def reply(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            await channel.default_exchange.publish(
                aio_pika.Message(message.body, correlation_id=message.correlation_id),
                routing_key=message.reply_to or "",
            )
            await message.ack()

        await queue.consume(reply)
        ready.set()
        await asyncio.Future()

    asyncio.run(serve())


async def bare_latency(url: str, calls: int) -> list[float]:
    queue_name = f"bench-bare-{uuid.uuid4().hex[:8]}"
    ready = multiprocessing.get_context("spawn").Event()
    responder = multiprocessing.get_context("spawn").Process(
        target=_responder, args=(url, queue_name, ready), daemon=True
    )
    responder.start()
    await asyncio.to_thread(ready.wait, 30)
    connection = await aio_pika.connect(url)
    try:
        channel = await connection.channel(publisher_confirms=True)
        replies = await channel.declare_queue(exclusive=True)
        waiting: dict[str, asyncio.Future[bytes]] = {}

        async def on_reply(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            waiting.pop(message.correlation_id or "").set_result(message.body)

        await replies.consume(on_reply, no_ack=True)
        samples = []
        for i in range(calls + 50):
            started = time.perf_counter()
            future = asyncio.get_running_loop().create_future()
            waiting[str(i)] = future
            await channel.default_exchange.publish(
                aio_pika.Message(b"x", correlation_id=str(i), reply_to=replies.name),
                routing_key=queue_name,
            )
            await future
            if i >= 50:
                samples.append(time.perf_counter() - started)
        return samples
    finally:
        await connection.close()
        responder.terminate()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    # This machine's timings drift by tens of percent from one minute to the next, so the
    # bare baseline and Warren are measured in alternation, round after round, and each
    # ratio compares figures taken side by side; the medians over the rounds are kept.
    rounds: list[dict[str, dict[str, float]]] = []
    with app.run():
        for _ in range(args.rounds):
            bare = summarise(asyncio.run(bare_latency(settings().broker_url, args.calls)))
            sync = summarise(warren_latency(noop_sync, args.calls))
            async_ = summarise(warren_latency(noop_async, args.calls))
            for figures in (sync, async_):
                figures["p50_vs_bare"] = round(figures["p50_ms"] / bare["p50_ms"], 2)
            rounds.append(
                {"bare_aio_pika": bare, "warren_sync_noop": sync, "warren_async_noop": async_}
            )
            print(f"round {len(rounds)}: {rounds[-1]}")
    result: dict[str, object] = {"calls": args.calls, "rounds": rounds}
    for kind in ("bare_aio_pika", "warren_sync_noop", "warren_async_noop"):
        keys = rounds[0][kind].keys()
        result[kind] = {k: round(statistics.median(r[kind][k] for r in rounds), 3) for k in keys}
        print(f"{kind:>20} (median of {args.rounds} rounds): {result[kind]}")
    save("latency", result)


if __name__ == "__main__":
    main()
