"""Single-call latency: p50/p99 of sequential ``remote`` calls of a no-op function.

For scale it also measures a bare aio-pika request/reply between two processes on the
same broker (benchmarks/bare.py: publisher confirms on, as Warren uses), the bar
Warren is held to. Both send transient messages; Warren's are signed.
``benchmarks/compare.py`` measures the same with the CPU of every process involved.

    python benchmarks/latency.py [--calls 1000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

import warren
from bare import BareRequestReply, Call
from harness import percentile, save
from warren.config import settings

app = warren.App("bench-latency")


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


def warren_latency(function: warren.Function[[int], int], calls: int) -> list[float]:
    for i in range(50):
        function.remote(i)
    samples = []
    for i in range(calls):
        started = time.perf_counter()
        function.remote(i)
        samples.append(time.perf_counter() - started)
    return samples


async def bare_latency(url: str, calls: int) -> list[float]:
    bare = BareRequestReply(url)
    bare.start()

    async def timed(call: Call) -> list[float]:
        samples = []
        for i in range(calls + 50):
            started = time.perf_counter()
            await call(i)
            if i >= 50:
                samples.append(time.perf_counter() - started)
        return samples

    try:
        return await bare.session(timed)
    finally:
        bare.stop()


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
