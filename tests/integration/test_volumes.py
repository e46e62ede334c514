"""Volumes: a named directory of the engine's, visible to functions at a path."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import warren

NAME = f"test-{uuid.uuid4().hex[:8]}"
MOUNT = f"/mnt/warren-test-{uuid.uuid4().hex[:8]}"
app = warren.App("test-volumes")
volume = warren.Volume.from_name(NAME, create_if_missing=True)


@app.function(volumes={MOUNT: volume})
def write(name: str, text: str) -> str:
    (Path(MOUNT) / name).write_text(text)
    return os.environ["WARREN_VOLUME_" + NAME.upper().replace("-", "_")]


@app.function()
def read(name: str) -> str:
    return (Path(MOUNT) / name).read_text()


@app.function()
def listing() -> list[str]:
    return sorted(os.listdir(MOUNT)) if os.path.isdir(MOUNT) else []


@pytest.fixture(scope="module", autouse=True)
def running(broker_url: str) -> Iterator[warren.App]:
    try:
        with app.run():
            yield app
    finally:  # the empty mount point a container made on this machine
        with contextlib.suppress(OSError):
            Path(MOUNT).rmdir()


def test_a_volume_written_by_one_call_is_read_by_the_next_call_of_another_function() -> None:
    directory = write.remote("note.txt", "hello from write")
    reader = read.with_options(volumes={MOUNT: warren.Volume.from_name(NAME)})
    assert reader.remote("note.txt") == "hello from write"
    assert (Path(directory) / "note.txt").read_text() == "hello from write"  # on the engine
    # A function without the volume does not see it at that path
    assert "note.txt" not in listing.remote()


def test_a_missing_volume_is_a_clear_error_and_buckets_are_not_supported() -> None:
    absent = read.with_options(volumes={"/mnt/nothing": warren.Volume.from_name("no-such-volume")})
    with pytest.raises(warren.NotFoundError, match="volume 'no-such-volume' does not exist"):
        absent.remote("x")
    with pytest.raises(warren.InvalidError, match=r"CloudBucketMount.*not supported"):
        read.with_options(volumes={"/mnt/bucket": warren.CloudBucketMount("my-bucket")})
    with pytest.raises(warren.InvalidError, match="absolute"):
        read.with_options(volumes={"relative": volume})
