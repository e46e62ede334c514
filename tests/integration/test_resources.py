"""cpu and memory limits, GPUs and placement labels on a real engine."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import warren
from support import EngineProcess, engine_running

app = warren.App("test-resources")


@app.function(retries=2)
def allocate(megabytes: int) -> int:
    block = bytearray(megabytes * 1024 * 1024)
    return len(block) // (1024 * 1024)


@app.function()
def node() -> dict[str, object]:
    return {
        "region": os.environ.get("WARREN_REGION"),
        "cores": len(os.sched_getaffinity(0)),
        "cuda": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "pid": os.getpid(),
    }


@pytest.fixture
def labelled_engine(tmp_path: Path) -> Iterator[EngineProcess]:
    """An engine node in region eu, on cloud aws, that says it has two H100s."""
    env = {"WARREN_REGION": "eu", "WARREN_CLOUD": "aws", "WARREN_GPUS": "H100:2"}
    with engine_running(tmp_path / "state", env) as daemon:
        yield daemon


@pytest.mark.usefixtures("labelled_engine")
def test_a_function_past_its_memory_limit_gets_out_of_memory_and_the_next_call_works() -> None:
    app.deploy()
    limited = warren.Function.from_name("test-resources", "allocate").with_options(
        memory=(256, 512)
    )
    with pytest.raises(warren.OutOfMemoryError, match="memory limit of 512 MiB"):
        limited.remote(2048)
    assert limited.remote(16) == 16  # the next small call succeeds, in the same container


@pytest.mark.usefixtures("labelled_engine")
def test_placement_follows_gpus_and_labels_and_fails_clearly_when_nothing_matches() -> None:
    app.deploy()
    handle = warren.Function.from_name("test-resources", "node")
    assert handle.with_options(region="eu", cloud=["gcp", "aws"]).remote()["region"] == "eu"
    assert handle.with_options(gpu="H100:2").remote()["cuda"] == "0,1"
    assert handle.with_options(cpu=(0.5, 1)).remote()["cores"] == 1
    with pytest.raises(warren.InvalidError, match=r"region ap.*this node: region eu"):
        handle.with_options(region="ap").remote()
    with pytest.raises(warren.InvalidError, match=r"gpu='A100'.*H100:2"):
        handle.with_options(gpu="A100").remote()
    with pytest.raises(warren.InvalidError, match="requests cpu=64"):
        handle.with_options(cpu=64).remote()


def test_a_gpu_on_a_node_without_gpus_is_a_clear_error_naming_the_request() -> None:
    gpu_app = warren.App("test-resources-gpu")

    @gpu_app.function(gpu="H100")
    def needs_gpu() -> None: ...

    with pytest.raises(warren.InvalidError, match=r"gpu='H100'.*no GPUs"), gpu_app.run():
        pass


def test_bad_resource_options_are_refused_before_anything_is_sent() -> None:
    for bad in ({"cpu": -1}, {"memory": (512, 256)}, {"gpu": "H100:0"}, {"region": []}):
        with pytest.raises(warren.InvalidError):
            node.with_options(**bad)  # type: ignore[arg-type]
