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
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from harness import RESULTS, peak_rss_mib, save

SIZES = [1_000, 10_000, 100_000]
BIG = 2_000_000


def worker(n: int, containers: int, ordered: bool, kind: str) -> dict[str, Any]:
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
    }


def run(n: int, containers: int, ordered: bool, kind: str = "async") -> dict[str, Any]:
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
        *(["--ordered"] if ordered else []),
    ]
    done = subprocess.run(command, capture_output=True, text=True, check=False, timeout=1800)
    if done.returncode != 0:
        raise SystemExit(f"worker failed:\n{done.stderr}")
    figures: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    rate, rss = figures["calls_per_s"], figures["client_peak_rss_mib"]
    print(
        f"{kind:>5} n={n:>9,} containers={containers} ordered={ordered!s:>5}: "
        f"{rate:>8,} calls/s, client peak RSS {rss} MiB"
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
    parser.add_argument("--quick", action="store_true", help="N = 100,000 only, no 2M run")
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.n, args.containers, args.ordered, args.kind)))
        return

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
