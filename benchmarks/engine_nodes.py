"""``map`` on 1, 2 and 3 engine nodes of one environment, on this machine.

Each round starts N engine daemons (peers: ``warren engine --env``), deploys an app to
them, and maps two functions from a client process:

* ``noop``: the sync no-op a new user writes first (``@app.function()``, no options):
  on N nodes it gets one container per core of each node;
* ``burn``: about 2 ms of pure-Python CPU work per input, ``max_containers=4``: the
  bound is cluster-wide, so N nodes share the same four slots.

Figures are calls/s and their ratio to one node, measured in the same run (rounds
alternate 1, 2, 3, 1, 2, 3, ...). All nodes run on this machine's cores, so extra nodes
add processes, not cores: on two cores they cannot make a CPU-bound map faster, and
the heartbeats, slots and extra containers cost a little. The figures say what the
peer machinery costs; on machines of their own, nodes add their cores.

    python benchmarks/engine_nodes.py            # 3 rounds (a few minutes)
    python benchmarks/engine_nodes.py --rounds 1 --n 20000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from pathlib import Path
from typing import Any

from harness import RESULTS, save

APP = textwrap.dedent(
    """
    import warren

    app = warren.App("bench-nodes", environment={environment!r})


    @app.function()
    def noop(x: int) -> int:
        return x


    @app.function(max_containers=4)
    def burn(x: int) -> int:
        total = 0
        for i in range(20_000):  # about 2 ms of CPU
            total += i * x
        return total
    """
)

CLIENT = textwrap.dedent(
    """
    import json, sys, time
    import warren

    environment, function, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    f = warren.Function.from_name("bench-nodes", function, environment_name=environment)
    list(f.map(range(min(n, 2000))))  # warm up: containers on every node, batch sizes
    started = time.perf_counter()
    count = sum(1 for _ in f.map(range(n)))
    elapsed = time.perf_counter() - started
    assert count == n, (count, n)
    print(json.dumps({"calls_per_s": round(n / elapsed), "seconds": round(elapsed, 3)}))
    """
)


def start_nodes(count: int, environment: str, root: Path) -> list[subprocess.Popen[bytes]]:
    nodes = []
    for index in range(count):
        node = subprocess.Popen(
            [
                sys.executable,
                "-P",
                "-m",
                "warren_engine",
                "--state-dir",
                str(root / f"node-{index}"),
                "--env",
                environment,
                "--node-name",
                f"bench-{index}",
            ],
            stdout=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env={**os.environ, "WARREN_LOG_LEVEL": "warning"},
        )
        assert node.stdout is not None
        line = node.stdout.readline()
        node.stdout.close()
        if not line.startswith(b"READY"):
            raise SystemExit(f"engine node {index} did not start")
        nodes.append(node)
    time.sleep(2.5)  # every node hears the others' heartbeats
    return nodes


def stop_nodes(nodes: list[subprocess.Popen[bytes]]) -> None:
    for node in nodes:
        node.send_signal(signal.SIGTERM)
    for node in nodes:
        node.wait(120)


def one_round(count: int, n: int, root: Path) -> dict[str, Any]:
    environment = f"bench-nodes-{uuid.uuid4().hex[:6]}"
    script = root / f"app_{environment.replace('-', '_')}.py"
    script.write_text(APP.format(environment=environment))
    nodes = start_nodes(count, environment, root / environment)
    try:
        deploy(script, environment)
        figures = {}
        for function, inputs in (("noop", n), ("burn", max(1000, n // 10))):
            done = subprocess.run(
                [sys.executable, "-c", CLIENT, environment, function, str(inputs)],
                capture_output=True,
                text=True,
                check=False,
                timeout=1800,
            )
            if done.returncode != 0:
                raise SystemExit(f"client failed:\n{done.stderr}")
            figures[function] = json.loads(done.stdout.strip().splitlines()[-1])["calls_per_s"]
        return figures
    finally:
        with_stop(environment)
        stop_nodes(nodes)
        forget(environment)


def deploy(script: Path, environment: str) -> None:
    env = {**os.environ, "WARREN_ENVIRONMENT": environment}
    done = subprocess.run(
        [str(Path(sys.executable).with_name("warren")), "deploy", str(script)],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"deploy failed:\n{done.stderr}")


def with_stop(environment: str) -> None:
    env = {**os.environ, "WARREN_ENVIRONMENT": environment}
    subprocess.run(
        [str(Path(sys.executable).with_name("warren")), "app", "stop", "bench-nodes"],
        env=env,
        capture_output=True,
        check=False,
    )


def forget(environment: str) -> None:
    """Leave no queue of the run behind (3.10 boots slowly with many)."""
    from warren.config import settings
    from warren.wire import broker_urls, naming

    queues = [
        naming.registry_stream(environment),
        naming.leader_queue(environment),
        naming.dead_letter_queue(environment),
        naming.orphans(environment),
        naming.log_stream(environment),
        naming.slots_queue(naming.function_queue(environment, "bench-nodes", "burn")),
    ]

    async def remove() -> None:
        connection = await broker_urls.connect(settings().broker_url)
        try:
            for queue in queues:
                async with connection.channel() as channel:
                    await channel.queue_delete(queue)
        finally:
            await connection.close()

    asyncio.run(remove())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--n", type=int, default=50_000, help="inputs of noop (burn: n/10)")
    parser.add_argument("--nodes", type=int, nargs="+", default=[1, 2, 3])
    args = parser.parse_args()
    results: dict[int, dict[str, list[int]]] = {k: {"noop": [], "burn": []} for k in args.nodes}
    with tempfile.TemporaryDirectory(prefix="warren-bench-nodes-") as directory:
        for round_number in range(args.rounds):
            for count in args.nodes:
                figures = one_round(count, args.n, Path(directory))
                for function, rate in figures.items():
                    results[count][function].append(rate)
                print(f"round {round_number + 1} nodes={count}: {figures} calls/s", flush=True)
    summary = {}
    base = {f: statistics.median(results[args.nodes[0]][f]) for f in ("noop", "burn")}
    for count in args.nodes:
        row = {}
        for function in ("noop", "burn"):
            median = statistics.median(results[count][function])
            row[function] = {
                "calls_per_s": median,
                "ratio_to_one_node": round(median / base[function], 2),
                "rounds": results[count][function],
            }
        summary[str(count)] = row
        print(
            f"{count} node(s): noop {row['noop']['calls_per_s']:>9,.0f} calls/s "
            f"({row['noop']['ratio_to_one_node']:.2f}x), burn {row['burn']['calls_per_s']:>7,.0f} "
            f"calls/s ({row['burn']['ratio_to_one_node']:.2f}x)"
        )
    save("engine_nodes", {"n": args.n, "nodes": summary})
    plot(summary, RESULTS / "engine_nodes.png")


def plot(summary: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    counts = [int(k) for k in summary]
    figure, axes = plt.subplots(figsize=(6, 3.5))
    for function in ("noop", "burn"):
        axes.plot(
            counts,
            [summary[str(k)][function]["ratio_to_one_node"] for k in counts],
            marker="o",
            label=function,
        )
    axes.set_xlabel("engine nodes (all on this machine)")
    axes.set_ylabel("calls/s, ratio to one node")
    axes.set_xticks(counts)
    axes.legend()
    axes.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    print(f"saved {path}")


if __name__ == "__main__":
    main()
