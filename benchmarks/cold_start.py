"""Cold start and scale-up: how fast a function with no container answers, and how long
the autoscaler takes to reach ``max_containers`` under a backlog.

* Cold start: an async no-op with ``min_containers=0`` and ``scaledown_window=0.3``;
  wait until its pool is empty, then time one ``remote`` call (publish, autoscaler
  tick, fork from the pre-imported fork server, code load, broker connection, run).
  Repeated; compared with a warm call and with what a fresh interpreter costs just to
  import a container's modules (the start-up the fork server saves).
* Scale-up: a function that sleeps 1 s, ``max_containers=4``, ``min_containers=0``;
  40 inputs mapped at once; the time from the map's start until 4 containers run.

    python benchmarks/cold_start.py [--repeats 10]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import threading
import time

import warren
from harness import save

app = warren.App("bench-cold")


@app.function(min_containers=0, scaledown_window=0.3)
async def noop(x: int) -> int:
    return x


@app.function(min_containers=0, max_containers=4, scaledown_window=0.3)
def one_second(x: int) -> int:
    time.sleep(1.0)
    return x


def wait_for_containers(
    function: warren.Function[..., object], count: int, timeout: float
) -> float:
    started = time.perf_counter()
    while time.perf_counter() - started < timeout:
        if function.get_current_stats()["containers"] == count:
            return time.perf_counter() - started
        time.sleep(0.01)
    raise TimeoutError(f"{function.tag} did not reach {count} containers in {timeout}s")


def cold_starts(repeats: int) -> list[float]:
    samples = []
    for i in range(repeats):
        wait_for_containers(noop, 0, 30)
        started = time.perf_counter()
        noop.remote(i)
        samples.append(time.perf_counter() - started)
    return samples


def warm_calls(repeats: int) -> list[float]:
    samples = []
    for i in range(repeats):
        started = time.perf_counter()
        noop.remote(i)
        samples.append(time.perf_counter() - started)
    return samples


def fresh_interpreter_import() -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import warren_engine.container.main"], check=True)
    return time.perf_counter() - started


def scale_up() -> float:
    wait_for_containers(one_second, 0, 30)
    thread = threading.Thread(target=lambda: list(one_second.map(range(40))))
    started = time.perf_counter()
    thread.start()
    reached = wait_for_containers(one_second, 4, 60)
    thread.join()
    return reached if reached else time.perf_counter() - started


def ms(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "median_ms": round(statistics.median(ordered) * 1000, 1),
        "min_ms": round(ordered[0] * 1000, 1),
        "max_ms": round(ordered[-1] * 1000, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    figures: dict[str, object] = {"repeats": args.repeats}
    with app.run():
        figures["cold_start"] = ms(cold_starts(args.repeats))
        figures["warm_call"] = ms(warm_calls(50))
        figures["scale_up_to_4_containers_s"] = round(scale_up(), 2)
    figures["fresh_interpreter_import"] = ms([fresh_interpreter_import() for _ in range(3)])
    for key, value in figures.items():
        print(f"{key:>28}: {value}")
    save("cold_start", figures)


if __name__ == "__main__":
    main()
