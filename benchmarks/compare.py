"""Warren side by side with what its users compare it with, in one run, alternating.

    python benchmarks/compare.py                  # 3 rounds, every system found
    python benchmarks/compare.py --quick          # 1 round, smaller maps
    python benchmarks/compare.py --systems warren,bare,pool --rounds 5
    python benchmarks/compare.py --workloads single,concurrent --systems warren,bare

Workloads (the same functions everywhere, benchmarks/peers/work.py):

* ``map``: ``add(x, 1)`` mapped over 10,000 and 100,000 inputs (calls/s);
* ``single``: 500 sequential single calls (p50 and p99 latency);
* ``concurrent``: 2,000 calls in flight at once, as an async service makes them (five
  such bursts, one after the other; calls/s over all of them);
* ``cpu``: 2,000 inputs of about 5 ms of pure-Python work each (seconds).

Systems: ``warren`` (``@app.function() def add``, no options: the defaults a new user
gets; blocking ``remote``/``map``), ``warren-async`` (``async def``, no options, called
with ``.aio``), ``warren-tuned`` (``async def`` with ``max_inputs=1000``), ``bare`` (an
aio-pika request/reply between two processes: one message per call each way,
prefetch 100, publisher confirms), ``celery`` and ``dramatiq`` (their workers'
defaults: one process per core; Celery's ``rpc://`` results, Dramatiq's Redis ones)
and ``pool`` (``multiprocessing.Pool(os.cpu_count())``, no broker at all).

CPU per call is the CPU time (user + system) of the client, of the system's workers
and their children, and of the broker (and Redis, for Dramatiq) during the workload,
divided by its calls, read with psutil. Every figure is printed with its ratio to
Warren's (the medians, then round by round); JSON in ``results/compare.json``, a plot in
``results/compare.png`` (``--name`` names them otherwise).

Needs RabbitMQ on 127.0.0.1 (``WARREN_BROKER_URL``), the ``compare`` extra
(``pip install -e '.[compare]'``) for Celery and Dramatiq, and Redis on 127.0.0.1:6379
for Dramatiq's results (``apt-get install redis-server``). A system whose package or
service is missing is skipped, with the reason. It starts its own workers on this
machine and stops only what it started. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import warren
from bare import PREFETCH, BareRequestReply, Call
from harness import RESULTS, percentile, save
from peers import work
from warren.config import settings

HERE = Path(__file__).resolve().parent
CPU_TARGET_SECONDS = 0.005
WINDOW = PREFETCH  # the bare request/reply's calls in flight during a map
BURSTS = 5  # the concurrent workload's bursts, one after another

app = warren.App("bench-compare")


@app.function()
def add(x: int, y: int) -> int:
    return x + y


@app.function()
async def add_async(x: int, y: int) -> int:
    return x + y


@app.function(max_inputs=1000)
async def add_tuned(x: int, y: int) -> int:
    return x + y


@app.function()
def burn(rounds: int) -> int:
    total = 0
    for i in range(rounds):
        total += i * i % 7
    return total


# -- measuring --------------------------------------------------------------------------


def _cpu_seconds(processes: list[psutil.Process]) -> dict[int, float]:
    seconds = {}
    for process in processes:
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            times = process.cpu_times()
            seconds[process.pid] = times.user + times.system
    return seconds


def _named(*names: str) -> list[psutil.Process]:
    return [p for p in psutil.process_iter(["name"]) if p.info["name"] in names]


def _tree(root: psutil.Process) -> list[psutil.Process]:
    with contextlib.suppress(psutil.NoSuchProcess):
        return [root, *root.children(recursive=True)]
    return []


class Meter:
    """CPU seconds of the client, the workers and the broker across a block."""

    def __init__(self, workers: Callable[[], list[psutil.Process]], extra: tuple[str, ...]):
        self._sides = {
            "client": lambda: [psutil.Process()],
            "workers": workers,
            "broker": lambda: _named("beam.smp", *extra),
        }
        self.cpu: dict[str, float] = {}
        self.wall = 0.0

    @contextlib.contextmanager
    def measure(self) -> Iterator[None]:
        before = {side: _cpu_seconds(find()) for side, find in self._sides.items()}
        started = time.perf_counter()
        yield
        self.wall = time.perf_counter() - started
        for side, find in self._sides.items():
            after = _cpu_seconds(find())
            # A process that started during the block (a container) counts whole.
            self.cpu[side] = sum(v - before[side].get(pid, 0.0) for pid, v in after.items())


def calibrate_burn() -> int:
    """Rounds of ``work.burn`` that take about 5 ms here."""
    rounds = 10_000
    while True:
        started = time.perf_counter()
        work.burn(rounds)
        took = time.perf_counter() - started
        if took > 0.02:
            return max(1, int(rounds * CPU_TARGET_SECONDS / took))
        rounds *= 2


# -- the systems -------------------------------------------------------------------------


class System:
    name = ""
    extra_processes: tuple[str, ...] = ()

    def available(self) -> str | None:
        """Why it cannot run here, or None."""
        return None

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def workers(self) -> list[psutil.Process]:
        return []

    # Each workload runs its timed part inside ``meter.measure()``: what comes before it
    # (connecting a client, warming up) is not counted.

    def map(self, n: int, meter: Meter) -> None:
        raise NotImplementedError

    def single(self, n: int, meter: Meter) -> list[float]:
        raise NotImplementedError

    def concurrent(self, n: int, meter: Meter) -> None:
        raise NotImplementedError

    def cpu(self, n: int, rounds: int, meter: Meter) -> None:
        raise NotImplementedError

    supports: tuple[str, ...] = ("map", "single", "concurrent", "cpu")


class WarrenEngine:
    """One ``app.run()`` for every Warren system (an engine child, its containers)."""

    def __init__(self) -> None:
        self._run: Any = None
        self._users = 0

    def start(self) -> None:
        if self._users == 0:
            self._run = app.run()
            self._run.__enter__()
        self._users += 1

    def stop(self) -> None:
        self._users -= 1
        if self._users == 0 and self._run is not None:
            self._run.__exit__(None, None, None)

    def processes(self) -> list[psutil.Process]:
        found: list[psutil.Process] = []
        for child in psutil.Process().children():
            with contextlib.suppress(psutil.NoSuchProcess):
                if "engine" in " ".join(child.cmdline()):
                    found += _tree(child)
        return found


ENGINE = WarrenEngine()


def _timed_calls(call: Callable[[int], Any], n: int, meter: Meter) -> list[float]:
    for i in range(20):
        call(i)
    samples = []
    with meter.measure():
        for i in range(n):
            started = time.perf_counter()
            call(i)
            samples.append(time.perf_counter() - started)
    return samples


async def _timed_calls_aio(call: Callable[[int], Any], n: int, meter: Meter) -> list[float]:
    for i in range(20):
        await call(i)
    samples = []
    with meter.measure():
        for i in range(n):
            started = time.perf_counter()
            await call(i)
            samples.append(time.perf_counter() - started)
    return samples


async def _gathered(call: Callable[[int], Any], n: int, meter: Meter) -> None:
    await asyncio.gather(*(call(i) for i in range(200)))  # warm: connected, sizes known
    with meter.measure():
        await asyncio.gather(*(call(i) for i in range(n)))


class Warren(System):
    name = "warren"
    supports = ("map", "single", "concurrent", "cpu")

    def start(self) -> None:
        ENGINE.start()
        list(add.map(range(2000), range(2000)))  # warm: containers up, batch sizes known
        list(burn.map([1000] * 20))

    def stop(self) -> None:
        ENGINE.stop()

    def workers(self) -> list[psutil.Process]:
        return ENGINE.processes()

    def map(self, n: int, meter: Meter) -> None:
        with meter.measure():
            assert sum(1 for _ in add.map(range(n), [1] * n)) == n

    def single(self, n: int, meter: Meter) -> list[float]:
        return _timed_calls(lambda i: add.remote(i, 1), n, meter)

    def concurrent(self, n: int, meter: Meter) -> None:
        asyncio.run(_gathered(lambda i: add.remote.aio(i, 1), n, meter))

    def cpu(self, n: int, rounds: int, meter: Meter) -> None:
        with meter.measure():
            assert len(list(burn.map([rounds] * n))) == n


class WarrenAsync(Warren):
    name = "warren-async"
    supports = ("single", "concurrent")

    def start(self) -> None:
        ENGINE.start()

        async def warm() -> None:
            await asyncio.gather(*(add_async.remote.aio(i, 1) for i in range(200)))

        asyncio.run(warm())

    def single(self, n: int, meter: Meter) -> list[float]:
        return asyncio.run(_timed_calls_aio(lambda i: add_async.remote.aio(i, 1), n, meter))

    def concurrent(self, n: int, meter: Meter) -> None:
        asyncio.run(_gathered(lambda i: add_async.remote.aio(i, 1), n, meter))


class WarrenTuned(Warren):
    name = "warren-tuned"
    supports = ("map",)

    def start(self) -> None:
        ENGINE.start()
        list(add_tuned.map(range(2000), range(2000)))

    def map(self, n: int, meter: Meter) -> None:
        with meter.measure():
            assert sum(1 for _ in add_tuned.map(range(n), [1] * n)) == n


class Bare(System):
    """aio-pika request/reply: one message per call each way, confirms, prefetch 100."""

    name = "bare"
    supports = ("map", "single", "concurrent")

    def start(self) -> None:
        self._bare = BareRequestReply(settings().broker_url)
        self._bare.start()

    def stop(self) -> None:
        self._bare.stop()

    def workers(self) -> list[psutil.Process]:
        with contextlib.suppress(psutil.NoSuchProcess):
            return [psutil.Process(self._bare.process.pid)]
        return []

    def _session(self, work: Callable[[Call], Any]) -> Any:
        return self._bare.session(work)

    def map(self, n: int, meter: Meter) -> None:
        async def run(call: Call) -> None:
            slots = asyncio.Semaphore(WINDOW)

            async def one(i: int) -> None:
                async with slots:
                    await call(i)

            await asyncio.gather(*(one(i) for i in range(200)))
            with meter.measure():
                await asyncio.gather(*(one(i) for i in range(n)))

        asyncio.run(self._session(run))

    def single(self, n: int, meter: Meter) -> list[float]:
        async def run(call: Call) -> list[float]:
            return await _timed_calls_aio(call, n, meter)

        result: list[float] = asyncio.run(self._session(run))
        return result

    def concurrent(self, n: int, meter: Meter) -> None:
        async def run(call: Call) -> None:
            await _gathered(call, n, meter)

        asyncio.run(self._session(run))


class Worker(System):
    """A peer whose worker runs as a process of its own, started and stopped here."""

    command: list[str] = []

    def start(self) -> None:
        env = {**os.environ, "PYTHONPATH": str(HERE)}
        self._process = subprocess.Popen(
            [sys.executable, "-m", *self.command],
            cwd=HERE,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        self.warm()

    def warm(self) -> None: ...

    def stop(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self._process.pid, signal.SIGTERM)
        try:
            self._process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(self._process.pid, signal.SIGKILL)
            self._process.wait(10)

    def workers(self) -> list[psutil.Process]:
        with contextlib.suppress(psutil.NoSuchProcess):
            return _tree(psutil.Process(self._process.pid))
        return []


class Celery(Worker):
    name = "celery"
    command = ["celery", "-A", "peers.celery_app", "worker", "--loglevel=WARNING"]

    def available(self) -> str | None:
        try:
            import celery  # noqa: F401
        except ImportError:
            return "not installed (pip install -e '.[compare]')"
        return None

    def start(self) -> None:
        from peers import celery_app

        self._app = celery_app
        celery_app.app.control.purge()
        super().start()

    def warm(self) -> None:
        from celery import group

        self._app.add.delay(1, 1).get(timeout=120)
        group(self._app.add.s(i, 1) for i in range(200)).apply_async().get(timeout=600)

    def map(self, n: int, meter: Meter) -> None:
        from celery import group

        with meter.measure():
            result = group(self._app.add.s(i, 1) for i in range(n)).apply_async()
            assert len(result.get(timeout=3600)) == n

    def single(self, n: int, meter: Meter) -> list[float]:
        return _timed_calls(lambda i: self._app.add.delay(i, 1).get(timeout=60), n, meter)

    def concurrent(self, n: int, meter: Meter) -> None:
        with meter.measure():
            calls = [self._app.add.delay(i, 1) for i in range(n)]
            for call in calls:
                call.get(timeout=600)

    def cpu(self, n: int, rounds: int, meter: Meter) -> None:
        from celery import group

        with meter.measure():
            result = group(self._app.burn.s(rounds) for _ in range(n)).apply_async()
            assert len(result.get(timeout=3600)) == n


class Dramatiq(Worker):
    name = "dramatiq"
    command = ["dramatiq", "peers.dramatiq_app"]
    extra_processes = ("redis-server",)

    def available(self) -> str | None:
        try:
            import dramatiq  # noqa: F401
            import redis  # noqa: F401
        except ImportError:
            return "not installed (pip install -e '.[compare]')"
        try:
            socket.create_connection(("127.0.0.1", 6379), timeout=1).close()
        except OSError:
            return "its results need Redis on 127.0.0.1:6379 (apt-get install redis-server)"
        return None

    def start(self) -> None:
        from peers import dramatiq_app

        self._app = dramatiq_app
        dramatiq_app.broker.flush_all()
        super().start()

    def warm(self) -> None:
        self._app.add.send(1, 1).get_result(block=True, timeout=120_000)
        self._group([self._app.add.message(i, 1) for i in range(200)], 200)

    def _group(self, messages: list[Any], n: int) -> None:
        from dramatiq import group

        running = group(messages).run()
        assert len(list(running.get_results(block=True, timeout=3_600_000))) == n

    def map(self, n: int, meter: Meter) -> None:
        with meter.measure():
            self._group([self._app.add.message(i, 1) for i in range(n)], n)

    def single(self, n: int, meter: Meter) -> list[float]:
        return _timed_calls(
            lambda i: self._app.add.send(i, 1).get_result(block=True, timeout=60_000), n, meter
        )

    def concurrent(self, n: int, meter: Meter) -> None:
        with meter.measure():
            calls = [self._app.add.send(i, 1) for i in range(n)]
            for call in calls:
                call.get_result(block=True, timeout=600_000)

    def cpu(self, n: int, rounds: int, meter: Meter) -> None:
        with meter.measure():
            self._group([self._app.burn.message(rounds) for _ in range(n)], n)


class Pool(System):
    name = "pool"
    supports = ("map", "single", "concurrent", "cpu")

    def start(self) -> None:
        # Forked from a clean server, not from this process: a plain fork would give the
        # workers the open sockets of the other systems' clients.
        self._pool = multiprocessing.get_context("forkserver").Pool(os.cpu_count())
        self._pool.map(work.burn, [10] * 100)

    def stop(self) -> None:
        self._pool.terminate()
        self._pool.join()

    def workers(self) -> list[psutil.Process]:
        return [psutil.Process(p.pid) for p in self._pool._pool]  # type: ignore[attr-defined]

    def map(self, n: int, meter: Meter) -> None:
        with meter.measure():
            assert len(self._pool.starmap(work.add, ((i, 1) for i in range(n)))) == n

    def single(self, n: int, meter: Meter) -> list[float]:
        return _timed_calls(lambda i: self._pool.apply(work.add, (i, 1)), n, meter)

    def concurrent(self, n: int, meter: Meter) -> None:
        with meter.measure():
            calls = [self._pool.apply_async(work.add, (i, 1)) for i in range(n)]
            for call in calls:
                call.get(600)

    def cpu(self, n: int, rounds: int, meter: Meter) -> None:
        with meter.measure():
            assert len(self._pool.map(work.burn, [rounds] * n)) == n


SYSTEMS: dict[str, type[System]] = {
    cls.name: cls for cls in (Warren, WarrenAsync, WarrenTuned, Bare, Celery, Dramatiq, Pool)
}


# -- running -------------------------------------------------------------------------------


def run_workload(system: System, workload: str, size: int, burn_rounds: int) -> dict[str, float]:
    meter = Meter(system.workers, system.extra_processes)
    samples: list[float] = []
    if workload == "map":
        system.map(size, meter)
    elif workload == "single":
        samples = system.single(size, meter)
    elif workload == "concurrent":
        # A burst of a few thousand calls lasts a tenth of a second on the fast systems,
        # where a pause of a few milliseconds moves the rate by tens of percent: the
        # figure is taken over several bursts.
        wall, cpu = 0.0, dict.fromkeys(("client", "workers", "broker"), 0.0)
        for _ in range(BURSTS):
            system.concurrent(size, meter)
            wall += meter.wall
            for side, seconds in meter.cpu.items():
                cpu[side] += seconds
        meter.wall, meter.cpu = wall, cpu
        size *= BURSTS
    else:
        system.cpu(size, burn_rounds, meter)
    figures: dict[str, float] = {
        "calls": size,
        "seconds": round(meter.wall, 4),
        "calls_per_s": round(size / meter.wall, 1),
        **{f"cpu_ms_per_call_{side}": round(v / size * 1000, 4) for side, v in meter.cpu.items()},
    }
    figures["cpu_ms_per_call"] = round(sum(meter.cpu.values()) / size * 1000, 4)
    if samples:
        ordered = sorted(samples)
        figures["p50_ms"] = round(percentile(ordered, 0.5) * 1000, 4)
        figures["p99_ms"] = round(percentile(ordered, 0.99) * 1000, 4)
    return figures


def workloads(args: argparse.Namespace) -> list[tuple[str, str, int]]:
    """(label, workload, size) in the order they run."""
    maps = [10_000] if args.quick else [10_000, 100_000]
    plan = [(f"map-{n // 1000}k", "map", n) for n in maps]
    plan += [("single", "single", args.single), ("concurrent", "concurrent", args.concurrent)]
    plan += [("cpu", "cpu", args.cpu)]
    return plan


def size_for(system: System, workload: str, size: int, peer_max: int) -> int:
    # The one-message-per-call systems take minutes over 100,000 inputs: they map at
    # most peer_max (their rate per call does not depend on how many there are).
    if workload == "map" and not system.name.startswith("warren") and system.name != "pool":
        return min(size, peer_max)
    return size


def median_of(rounds: list[dict[str, float]]) -> dict[str, float]:
    keys = rounds[0].keys()
    return {k: round(statistics.median(r[k] for r in rounds), 4) for k in keys}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="one round, no 100,000 map")
    parser.add_argument("--systems", default=",".join(SYSTEMS))
    parser.add_argument("--peer-max", type=int, default=10_000)
    parser.add_argument(
        "--workloads", default="", help="only these (comma-separated: map-10k,single,...)"
    )
    parser.add_argument("--single", type=int, default=500)
    parser.add_argument("--concurrent", type=int, default=2000)
    parser.add_argument("--cpu", type=int, default=2000)
    parser.add_argument("--name", default="compare", help="results/<name>.json and .png")
    args = parser.parse_args()
    if args.quick:
        args.rounds = 1
    systems: list[System] = []
    skipped: dict[str, str] = {}
    for name in args.systems.split(","):
        system = SYSTEMS[name]()
        reason = system.available()
        if reason:
            skipped[name] = reason
            print(f"skipping {name}: {reason}")
        else:
            systems.append(system)
    burn_rounds = calibrate_burn()
    print(f"burn({burn_rounds}) takes about {CPU_TARGET_SECONDS * 1000:g} ms here")
    plan = workloads(args)
    if args.workloads:
        plan = [step for step in plan if step[0] in args.workloads.split(",")]
    raw: dict[str, dict[str, list[dict[str, float]]]] = {}
    # Workload by workload, every system in turn, each started for its turn alone (an
    # idle system's polling would cost the others' broker CPU): figures compared with
    # each other are taken seconds apart, not minutes, on a machine whose speed drifts.
    for round_number in range(args.rounds):
        for label, workload, size in plan:
            for system in systems:
                if workload not in system.supports:
                    continue
                system.start()
                try:
                    n = size_for(system, workload, size, args.peer_max)
                    figures = run_workload(system, workload, n, burn_rounds)
                finally:
                    system.stop()
                raw.setdefault(label, {}).setdefault(system.name, []).append(figures)
                print(f"round {round_number + 1} {label:>10} {system.name:>12}: {figures}")
    report(raw, args, skipped, burn_rounds)


def _ratio(value: float, warren: float) -> str:
    return f"{value / warren:.2f}x" if warren else "n/a"


def _headline(label: str, figures: dict[str, float], reference: dict[str, float]) -> str:
    if label == "single":
        p50 = figures["p50_ms"]
        main = (
            f"p50 {p50:.3f} ms ({_ratio(p50, reference['p50_ms'])}), p99 {figures['p99_ms']:.3f} ms"
        )
    elif label == "cpu":
        main = f"{figures['seconds']:.2f} s ({_ratio(figures['seconds'], reference['seconds'])})"
    else:
        rate = figures["calls_per_s"]
        main = f"{rate:,.0f} calls/s ({_ratio(rate, reference['calls_per_s'])})"
    cpu = figures["cpu_ms_per_call"]
    return f"{main}; CPU {cpu:.3f} ms/call ({_ratio(cpu, reference['cpu_ms_per_call'])})"


def report(
    raw: dict[str, dict[str, list[dict[str, float]]]],
    args: argparse.Namespace,
    skipped: dict[str, str],
    burn_rounds: int,
) -> None:
    medians = {label: {s: median_of(r) for s, r in by.items()} for label, by in raw.items()}
    print()
    for label, by_system in medians.items():
        reference = by_system.get("warren") or next(iter(by_system.values()))
        print(f"{label} (median of {args.rounds}; ratio to Warren's defaults)")
        for name, figures in by_system.items():
            print(f"  {name:>13}: {_headline(label, figures, reference)}")
        # The ratio to Warren's defaults round by round: figures taken seconds apart.
        key = {"single": "p50_ms", "cpu": "seconds"}.get(label, "calls_per_s")
        warren_rounds = raw[label].get("warren", [])
        for name, rounds in raw[label].items():
            if name != "warren" and len(rounds) == len(warren_rounds):
                ratios = [r[key] / w[key] for r, w in zip(rounds, warren_rounds, strict=True)]
                print(f"  {name:>13}: per round " + " ".join(f"{x:.2f}x" for x in ratios))
    save(
        args.name,
        {
            "rounds": args.rounds,
            "burn_rounds": burn_rounds,
            "skipped": skipped,
            "medians": medians,
            "raw": raw,
        },
    )
    plot(medians, args.name)


def plot(medians: dict[str, dict[str, dict[str, float]]], name: str) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    panels = [(label, by) for label, by in medians.items()]
    figure, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 4), squeeze=False)
    for axis, (label, by_system) in zip(axes[0], panels, strict=True):
        names = list(by_system)
        if label == "single":
            values, unit = [by_system[n]["p50_ms"] for n in names], "p50 (ms), lower is better"
        elif label == "cpu":
            values, unit = [by_system[n]["seconds"] for n in names], "seconds, lower is better"
        else:
            values, unit = [by_system[n]["calls_per_s"] for n in names], "calls/s (log)"
            axis.set_yscale("log")
        axis.bar(
            names, values, color=["#2b6cb0" if n.startswith("warren") else "#a0aec0" for n in names]
        )
        axis.set_title(label)
        axis.set_ylabel(unit)
        axis.tick_params(axis="x", rotation=60)
    figure.tight_layout()
    path = RESULTS / f"{name}.png"
    figure.savefig(path, dpi=100)
    print(f"saved {path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path}")


if __name__ == "__main__":
    main()
