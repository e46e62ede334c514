"""What ``max_containers``, ``max_inputs`` and batching do, measured in one run.

    python benchmarks/tuning.py [--rounds 3]

Each row is one function's options and one workload, run in alternation with the
others, round after round (medians kept):

* ``noop map``: a no-op mapped over 100,000 inputs (calls/s), and the inputs per
  message the containers received (the batching);
* ``single``: 300 sequential ``remote`` calls of the no-op (p50);
* ``cpu map``: 1,000 inputs of about 5 ms of pure-Python work (seconds);
* ``io map``: 400 inputs that sleep 20 ms each (seconds): waiting, not computing.

Results in ``results/tuning.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Callable
from typing import Any

import warren
from compare import calibrate_burn
from harness import percentile, save

app = warren.App("bench-tuning")


@app.function()
def noop(x: int) -> int:
    return x


@app.function(max_inputs=1000)
async def noop_async_1000(x: int) -> int:
    return x


@app.function(max_containers=1)
def noop_one_container(x: int) -> int:
    return x


def _burn(rounds: int) -> int:
    total = 0
    for i in range(rounds):
        total += i * i % 7
    return total


@app.function()
def burn(rounds: int) -> int:
    return _burn(rounds)


@app.function(max_containers=1)
def burn_one_container(rounds: int) -> int:
    return _burn(rounds)


@app.function()
def sleeps(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


@app.function(max_containers=8)
def sleeps_eight_containers(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


@app.function(max_inputs=16)
def sleeps_sixteen_threads(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


@app.function(max_inputs=16)
async def sleeps_async_sixteen(seconds: float) -> float:
    await asyncio.sleep(seconds)
    return seconds


def noop_map(function: warren.Function[[int], int]) -> dict[str, float]:
    before = function.get_current_stats()
    started = time.perf_counter()
    assert sum(1 for _ in function.map(range(100_000))) == 100_000
    elapsed = time.perf_counter() - started
    time.sleep(0.6)  # the containers' next report
    after = function.get_current_stats()
    messages = after["messages_received"] - before["messages_received"]
    inputs = after["inputs_received"] - before["inputs_received"]
    return {
        "calls_per_s": round(100_000 / elapsed),
        "inputs_per_message": round(inputs / max(1, messages), 1),
    }


def single(function: warren.Function[[int], int]) -> dict[str, float]:
    samples = []
    for i in range(300):
        started = time.perf_counter()
        function.remote(i)
        samples.append(time.perf_counter() - started)
    return {"p50_ms": round(percentile(sorted(samples), 0.5) * 1000, 3)}


def mapped(function: warren.Function[..., Any], inputs: list[Any]) -> dict[str, float]:
    started = time.perf_counter()
    assert len(list(function.map(inputs))) == len(inputs)
    return {"seconds": round(time.perf_counter() - started, 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    rounds = calibrate_burn()
    cpu, io = [rounds] * 1000, [0.02] * 400
    rows: list[tuple[str, str, Callable[[], dict[str, float]]]] = [
        ("noop map", "defaults (def)", lambda: noop_map(noop)),
        ("noop map", "async def, max_inputs=1000", lambda: noop_map(noop_async_1000)),
        ("noop map", "max_containers=1", lambda: noop_map(noop_one_container)),
        ("single", "defaults (def)", lambda: single(noop)),
        ("single", "async def, max_inputs=1000", lambda: single(noop_async_1000)),
        ("cpu map", "defaults (a container per core)", lambda: mapped(burn, cpu)),
        ("cpu map", "max_containers=1", lambda: mapped(burn_one_container, cpu)),
        ("io map", "defaults (a container per core)", lambda: mapped(sleeps, io)),
        ("io map", "max_containers=8", lambda: mapped(sleeps_eight_containers, io)),
        ("io map", "max_inputs=16 (threads)", lambda: mapped(sleeps_sixteen_threads, io)),
        ("io map", "async def, max_inputs=16", lambda: mapped(sleeps_async_sixteen, io)),
    ]
    results: dict[str, list[dict[str, float]]] = {}
    with app.run():
        for function in (noop, noop_async_1000, noop_one_container):
            list(function.map(range(2000)))  # warm: containers up, batch sizes known
        for round_number in range(args.rounds):
            for workload, options, measure in rows:
                figures = measure()
                results.setdefault(f"{workload} | {options}", []).append(figures)
                print(f"round {round_number + 1} {workload:>9} | {options:<34} {figures}")
    medians = {
        key: {k: statistics.median(r[k] for r in runs) for k in runs[0]}
        for key, runs in results.items()
    }
    print()
    for key, figures in medians.items():
        print(f"{key:<46} {figures}")
    save(
        "tuning", {"rounds": args.rounds, "burn_rounds": rounds, "medians": medians, "raw": results}
    )


if __name__ == "__main__":
    main()
