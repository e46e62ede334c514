"""``map`` throughput and client memory.

Every configuration runs in a fresh client process, so its peak RSS is its own.

* Throughput: a no-op function (``async def noop(x): return x``, ``max_inputs=1000``)
  mapped over N inputs read from a generator, with 1 and 2 containers, ordered and
  unordered; calls/s and the client's peak RSS. A PNG plots calls/s against N.
* Memory: the same map over 2,000,000 inputs from a generator; the client's peak RSS
  against that of the 100,000-input run.
* Reference: the sync no-op a new user writes first (``@app.function() def noop``, no
  options), over 10,000 inputs.

    python benchmarks/map_throughput.py              # everything (a few minutes)
    python benchmarks/map_throughput.py --quick      # N = 100,000 only, no 2M run
    python benchmarks/map_throughput.py --queue-types --rounds 3
        # classic against quorum queues (WARREN_QUEUE_TYPE), alternating, same run:
        # map calls/s and the p50 of sequential f.remote calls, as quorum / classic

``--queue-type quorum`` runs everything else with quorum queues. Either way the
workers run in an environment of their own per queue type (``bench-classic``,
``bench-quorum``): a queue that exists with the other type cannot be declared again
(``QueueMismatchError``), and that environment is removed at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from harness import RESULTS, peak_rss_mib, save

SIZES = [1_000, 10_000, 100_000]
BIG = 2_000_000


def worker(
    n: int, containers: int, ordered: bool, kind: str, latency_calls: int = 0
) -> dict[str, Any]:
    import warren

    app = warren.App("bench-map")
    if kind == "async":

        @app.function(max_containers=containers, max_inputs=1000)
        async def noop(x: int) -> int:
            return x

    else:

        @app.function(max_containers=containers)
        def noop(x: int) -> int:
            return x

    with app.run():
        list(noop.map(range(2000)))  # warm up: connections, containers, batch sizing
        inputs = (i for i in range(n))
        started = time.perf_counter()
        count = 0
        for expected, value in enumerate(noop.map(inputs, order_outputs=ordered)):
            if ordered and value != expected:
                raise AssertionError(f"out of order: {value} != {expected}")
            count += 1
        elapsed = time.perf_counter() - started
        latencies = []
        for i in range(latency_calls):
            before = time.perf_counter()
            noop.remote(i)
            latencies.append(time.perf_counter() - before)
    if count != n:
        raise AssertionError(f"{count} results for {n} inputs")
    return {
        "n": n,
        "containers": containers,
        "ordered": ordered,
        "function": kind,
        "seconds": round(elapsed, 3),
        "calls_per_s": round(n / elapsed),
        "client_peak_rss_mib": round(peak_rss_mib(), 1),
        "queue_type": os.environ.get("WARREN_QUEUE_TYPE", "classic"),
        **({"remote_p50_ms": round(statistics.median(latencies) * 1000, 3)} if latencies else {}),
    }


def queue_type_environment(queue_type: str) -> dict[str, str]:
    return {"WARREN_QUEUE_TYPE": queue_type, "WARREN_ENVIRONMENT": f"bench-{queue_type}"}


def forget_environment(environment: str) -> None:
    """Remove what a benchmark's environment leaves on the broker: its dead-letter,
    orphans and log stream queues and its exchanges (the rest expires by itself)."""
    from aio_pika.exceptions import ChannelNotFoundEntity
    from warren.config import settings
    from warren.wire import broker_urls, naming

    async def remove() -> None:
        connection = await broker_urls.connect(settings().broker_url)
        try:
            async with connection.channel() as channel:
                for queue in (
                    naming.dead_letter_queue(environment),
                    naming.orphans(environment),
                    naming.log_stream(environment),
                ):
                    await channel.queue_delete(queue)
            for exchange in (
                naming.orphans(environment),
                naming.requeue_exchange(environment),
                naming.delay_exchange(environment),
                naming.cancel_exchange(environment),
                naming.log_stream(environment),
            ):
                # A missing exchange closes the channel that names it.
                with contextlib.suppress(ChannelNotFoundEntity):
                    async with connection.channel() as channel:
                        await channel.exchange_delete(exchange)
        finally:
            await connection.close()

    asyncio.run(remove())


def compare_queue_types(rounds: int, n: int, latency_calls: int) -> dict[str, Any]:
    """Classic and quorum queues in alternation, round after round; medians and ratios."""
    rows: dict[str, list[dict[str, Any]]] = {"classic": [], "quorum": []}
    for _ in range(rounds):
        for queue_type, measured in rows.items():
            env = queue_type_environment(queue_type)
            measured.append(run(n, 1, True, "async", env=env, latency_calls=latency_calls))
    medians = {
        queue_type: {
            "calls_per_s": statistics.median(r["calls_per_s"] for r in measured),
            "remote_p50_ms": statistics.median(r["remote_p50_ms"] for r in measured),
        }
        for queue_type, measured in rows.items()
    }
    ratios = {
        "map_calls_per_s_quorum_over_classic": round(
            medians["quorum"]["calls_per_s"] / medians["classic"]["calls_per_s"], 3
        ),
        "remote_p50_quorum_over_classic": round(
            medians["quorum"]["remote_p50_ms"] / medians["classic"]["remote_p50_ms"], 3
        ),
    }
    print(f"medians: {medians}\nratios: {ratios}")
    return {"rounds": rows, "medians": medians, "ratios": ratios}


def run(
    n: int,
    containers: int,
    ordered: bool,
    kind: str = "async",
    *,
    env: dict[str, str] | None = None,
    latency_calls: int = 0,
) -> dict[str, Any]:
    command = [
        sys.executable,
        __file__,
        "--worker",
        "--n",
        str(n),
        "--containers",
        str(containers),
        "--kind",
        kind,
        "--latency-calls",
        str(latency_calls),
        *(["--ordered"] if ordered else []),
    ]
    done = subprocess.run(
        command,
        capture_output=True,
        text=True,
        check=False,
        timeout=1800,
        env={**os.environ, **(env or {})},
    )
    if done.returncode != 0:
        raise SystemExit(f"worker failed:\n{done.stderr}")
    figures: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    rate, rss = figures["calls_per_s"], figures["client_peak_rss_mib"]
    latency = f", remote p50 {figures['remote_p50_ms']} ms" if latency_calls else ""
    print(
        f"{figures['queue_type']:>7} {kind:>5} n={n:>9,} containers={containers} "
        f"ordered={ordered!s:>5}: {rate:>8,} calls/s, client peak RSS {rss} MiB{latency}"
    )
    return figures


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for containers in (1, 2):
        for ordered in (True, False):
            series = sorted(
                (r["n"], r["calls_per_s"])
                for r in rows
                if r["containers"] == containers
                and r["ordered"] == ordered
                and r["function"] == "async"
            )
            if series:
                xs, ys = zip(*series, strict=True)
                order = "ordered" if ordered else "unordered"
                label = f"{containers} container{'s' * (containers > 1)}, {order}"
                ax.plot(xs, ys, marker="o", label=label)
    ax.axhline(50_000, color="grey", linestyle="--", linewidth=1, label="bar: 50,000 calls/s")
    ax.set_xscale("log")
    ax.set_xlabel("inputs (N)")
    ax.set_ylabel("calls/s")
    ax.set_title("Warren map throughput, async no-op, max_inputs=1000")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"saved {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--containers", type=int, default=1)
    parser.add_argument("--ordered", action="store_true")
    parser.add_argument("--kind", choices=["async", "sync"], default="async")
    parser.add_argument("--latency-calls", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--quick", action="store_true", help="N = 100,000 only, no 2M run")
    parser.add_argument(
        "--queue-type", choices=["classic", "quorum"], help="run everything with this type"
    )
    parser.add_argument(
        "--queue-types", action="store_true", help="classic against quorum, alternating"
    )
    parser.add_argument("--rounds", type=int, default=3, help="with --queue-types")
    args = parser.parse_args()
    if args.worker:
        figures = worker(args.n, args.containers, args.ordered, args.kind, args.latency_calls)
        print(json.dumps(figures))
        return
    if args.queue_types:
        try:
            save("map_queue_types", compare_queue_types(args.rounds, args.n, 300))
        finally:
            for queue_type in ("classic", "quorum"):
                forget_environment(f"bench-{queue_type}")
        return
    if args.queue_type is not None:
        os.environ.update(queue_type_environment(args.queue_type))
        try:
            measure(args.quick)
        finally:
            forget_environment(f"bench-{args.queue_type}")
        return
    measure(args.quick)


def measure(quick: bool) -> None:
    """Throughput by size, containers and order; the reference; memory unless ``quick``."""
    args = argparse.Namespace(quick=quick)

    sizes = [100_000] if args.quick else SIZES
    rows = [run(n, c, o) for n in sizes for c in (1, 2) for o in (True, False)]
    rows.append(run(10_000, 1, True, kind="sync"))
    figures: dict[str, Any] = {"throughput": rows}
    if not args.quick:
        big = run(BIG, 1, True)
        base = next(r for r in rows if r["n"] == 100_000 and r["containers"] == 1 and r["ordered"])
        figures["memory"] = {
            "rss_100k_mib": base["client_peak_rss_mib"],
            "rss_2m_mib": big["client_peak_rss_mib"],
            "growth_mib": round(big["client_peak_rss_mib"] - base["client_peak_rss_mib"], 1),
            "calls_per_s_2m": big["calls_per_s"],
        }
        print(f"memory: {figures['memory']}")
        plot(rows, RESULTS / "map_throughput.png")
    save("map_throughput" if not args.quick else "map_throughput_quick", figures)


if __name__ == "__main__":
    main()
