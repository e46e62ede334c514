"""with_options: variants with their own queue and pool, stacking, and their options."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import warren
from support import EngineProcess, lines, max_overlap, wait_until

app = warren.App("test-variants")


@app.function(max_containers=3, scaledown_window=60)
def timed(log: str, seconds: float) -> int:
    started = time.time()
    time.sleep(seconds)
    with open(log, "a") as handle:
        handle.write(f"{started} {time.time()} {os.getpid()}\n")
    return os.getpid()


@app.function()
def fails_once(marker: str) -> str:
    if not Path(marker).exists():
        Path(marker).touch()
        raise RuntimeError("first attempt")
    return "second attempt"


@pytest.fixture(scope="module", autouse=True)
def running(broker_url: str) -> Iterator[warren.App]:
    with app.run():
        yield app


def intervals(log: Path) -> list[tuple[float, float]]:
    return [(float(a), float(b)) for a, b, _ in (line.split() for line in lines(log))]


def test_a_variant_scales_on_its_own_beside_the_original(tmp_path: Path) -> None:
    # Given the original (max_containers=3) and a variant with max_containers=1
    variant = timed.with_options(max_containers=1)
    base_log, variant_log = tmp_path / "base", tmp_path / "variant"
    # When each runs a map at the same time
    threads = [
        threading.Thread(target=lambda: list(timed.map([str(base_log)] * 9, [0.5] * 9))),
        threading.Thread(target=lambda: list(variant.map([str(variant_log)] * 4, [0.5] * 4))),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    # Then the variant never ran more than 1 input at once, the original reached 3
    assert max_overlap(intervals(variant_log)) == 1
    assert max_overlap(intervals(base_log)) == 3
    assert variant.target().queue != timed.target().queue
    # And update_autoscaler on the variant leaves the original alone
    variant.update_autoscaler(max_containers=2)
    assert variant.get_current_stats()["autoscaler"]["max_containers"] == 2
    assert timed.get_current_stats()["autoscaler"]["max_containers"] == 3


def test_options_stack_and_identical_option_sets_share_one_variant() -> None:
    stacked = timed.with_options(timeout=5).with_options(max_containers=1).hydrate()
    assert (stacked.spec.timeout, stacked.spec.max_containers) == (5, 1)
    assert stacked.spec.scaledown_window == 60  # unspecified: the original's
    same = timed.with_options(max_containers=1, timeout=5).hydrate()
    assert same.spec.variant == stacked.spec.variant
    other = timed.with_options(timeout=5).hydrate()
    assert other.spec.variant != stacked.spec.variant


def test_retries_set_through_with_options_take_effect(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="first attempt"):
        fails_once.remote(str(tmp_path / "base"))
    retried = fails_once.with_options(retries=warren.Retries(1, initial_delay=0.1))
    assert retried.remote(str(tmp_path / "variant")) == "second attempt"


def test_a_timeout_set_through_with_options_takes_effect(tmp_path: Path) -> None:
    assert timed.remote(str(tmp_path / "log"), 2.0) > 0
    with pytest.raises(warren.FunctionTimeoutError, match="timeout of 1s"):
        timed.with_options(timeout=1).remote(str(tmp_path / "log"), 2.0)


def test_a_scaledown_window_set_through_with_options_takes_effect(tmp_path: Path) -> None:
    quick = timed.with_options(scaledown_window=1)
    quick.remote(str(tmp_path / "log"), 0.1)
    timed.remote(str(tmp_path / "log"), 0.1)
    assert wait_until(lambda: quick.get_current_stats()["containers"] == 0, 20)
    assert timed.get_current_stats()["containers"] >= 1  # the original's window is 60 s


def test_buffer_containers_set_through_with_options_take_effect(tmp_path: Path) -> None:
    buffered = timed.with_options(buffer_containers=2, max_containers=3)
    call = buffered.spawn(str(tmp_path / "log"), 3.0)
    assert wait_until(lambda: buffered.get_current_stats()["containers"] == 3, 15)
    call.get(timeout=30)


variants_app = warren.App("test-variants-deployed")


@variants_app.function()
def pid(x: int) -> int:
    return os.getpid()


def test_a_from_name_handle_makes_variants_and_a_redeploy_resets_them(
    engine: EngineProcess,
) -> None:
    variants_app.deploy()
    handle = warren.Function.from_name("test-variants-deployed", "pid").with_options(timeout=7)
    assert handle.remote(1) > 0
    assert handle.spec.timeout == 7
    variant_key = f"pid.{handle.spec.variant}"
    assert set(engine_functions()) == {"pid", variant_key}
    # When the app is redeployed, its variants are reset...
    variants_app.deploy()
    assert set(engine_functions()) == {"pid"}
    # ...and the same handle makes its variant again on its next call
    assert handle.remote(2) > 0
    assert set(engine_functions()) == {"pid", variant_key}


def engine_functions() -> list[str]:
    import asyncio

    from warren.client.connection import Client
    from warren.wire.control import GetAppStatus

    async def status() -> list[str]:
        async with Client.connect() as client:
            found = await client.control(GetAppStatus("main", "test-variants-deployed"))
            return list(found.functions)

    return asyncio.run(status())
