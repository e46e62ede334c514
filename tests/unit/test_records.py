"""The on-disk record of a deployed app: what an engine writes, it reads back, and it
reads the files older engines wrote; a bad record is skipped, naming its file."""

from __future__ import annotations

import re
from pathlib import Path

import orjson
import pytest
from structlog.testing import capture_logs
from warren.exceptions import EngineError
from warren.wire.control import AutoscalerChanges
from warren.wire.spec import FunctionSpec
from warren_engine.daemon.hosted_app import (
    HostedApp,
    merged_changes,
    specs_by_key,
    with_changes,
)
from warren_engine.daemon.records import AppRecords, DeploymentRecord
from warren_engine.pool.autoscaler import Autoscaling

SPEC = FunctionSpec("square", False, max_inputs=4, cpu=[0.5, None], env={"A": "1"}, region=["eu"])
VARIANT = SPEC.with_overrides({"max_containers": 3})
CODE = "code-1700000000000000000.msgpack"

# app.json as the engine wrote it before records had a version (HostedApp.record() as a
# dict, through orjson): an engine upgraded in place must bring this app back.
OLD_RECORD = b"""{
  "environment": "dev",
  "app": "shop",
  "functions": [
    {"tag": "square", "is_async": false, "max_containers": null, "max_inputs": 4,
     "timeout": 300.0, "min_containers": 0, "buffer_containers": 0, "scaledown_window": 60.0,
     "max_retries": 0, "backoff_coefficient": 2.0, "initial_delay": 1.0, "max_delay": 60.0,
     "cpu": [0.5, null], "memory": null, "gpu": null, "env": {"A": "1"}, "secrets": [],
     "volumes": {}, "region": ["eu"], "cloud": [], "variant": null, "web": null, "version": 2},
    {"tag": "square", "is_async": false, "max_containers": 3, "max_inputs": 4,
     "timeout": 300.0, "min_containers": 0, "buffer_containers": 0, "scaledown_window": 60.0,
     "max_retries": 0, "backoff_coefficient": 2.0, "initial_delay": 1.0, "max_delay": 60.0,
     "cpu": [0.5, null], "memory": null, "gpu": null, "env": {"A": "1"}, "secrets": [],
     "volumes": {}, "region": ["eu"], "cloud": [], "variant": "v816b0fd1bc0", "web": null,
     "version": 2}
  ],
  "code": "code-1700000000000000000.msgpack",
  "sys_path": ["/home/u/proj"],
  "overrides": {"square": {"min_containers": 1, "scaledown_window": 5.0}},
  "deployed_at": 1700000000.25
}"""


def _app(tmp_path: Path) -> HostedApp:
    return HostedApp(
        "dev",
        "shop",
        "shop",
        specs_by_key([SPEC, VARIANT]),
        tmp_path / CODE,
        False,
        ("/home/u/proj",),
        {"square": AutoscalerChanges(min_containers=1, scaledown_window=5.0)},
        deployed_at=1700000000.25,
    )


def _write(registry: AppRecords, environment: str, app: str, record: bytes) -> Path:
    directory = registry.directory(environment, app)
    directory.mkdir(parents=True)
    (directory / CODE).write_bytes(b"code")
    (directory / "app.json").write_bytes(record)
    return directory / "app.json"


def test_a_record_reads_back_as_it_was_written(tmp_path: Path) -> None:
    record = _app(tmp_path).record()
    assert DeploymentRecord.decode(record.encode(), tmp_path / "app.json") == record


def test_a_restored_app_is_the_app_that_was_recorded(tmp_path: Path) -> None:
    app = _app(tmp_path)
    restored = HostedApp.restored(app.record(), tmp_path / CODE)
    assert restored == app
    assert restored.autoscaling("square", cores=4) == Autoscaling(1, 4, 0, 5.0)


def test_a_record_written_before_records_had_a_version_is_read(tmp_path: Path) -> None:
    registry = AppRecords(tmp_path)
    _write(registry, "dev", "shop", OLD_RECORD)
    [record] = registry.load_all()
    assert record == _app(registry.directory("dev", "shop")).record()
    assert registry.code_path(record) == registry.directory("dev", "shop") / CODE


def test_a_record_of_an_older_engine_without_paths_overrides_or_time_is_read() -> None:
    old = orjson.loads(OLD_RECORD)
    for key in ("sys_path", "overrides", "deployed_at"):
        del old[key]
    record = DeploymentRecord.decode(orjson.dumps(old), Path("app.json"))
    assert (record.sys_path, record.overrides) == ((), {})
    assert record.deployed_at > 1700000000.25


def test_the_file_keeps_the_layout_older_engines_read(tmp_path: Path) -> None:
    written = orjson.loads(_app(tmp_path).record().encode())
    old = orjson.loads(OLD_RECORD)
    assert written == {"version": 1, **old}


@pytest.mark.parametrize(
    ("change", "complaint"),
    [
        (lambda r: r.pop("environment"), "has no 'environment'"),
        (lambda r: r.update(functions="square"), "'functions' in the record is str"),
        (lambda r: r["functions"][0].pop("tag"), "function None"),
        (lambda r: r["functions"][1].update(max_inputs=0), "max_inputs must be a positive"),
        (lambda r: r.update(code="../../elsewhere"), "is not a file name"),
        (lambda r: r.update(app="a b"), "app name"),
        (lambda r: r["overrides"]["square"].update(max_replicas=3), "max_replicas"),
        (lambda r: r["overrides"]["square"].update(min_containers="1"), "'min_containers'"),
        (lambda r: r.update(deployed_at=True), "'deployed_at'"),
        (lambda r: r.update(version=2), "version 2 is not 1"),
    ],
)
def test_a_malformed_record_is_refused_naming_its_file_and_what_is_wrong(
    change: object, complaint: str
) -> None:
    record = orjson.loads(OLD_RECORD)
    change(record)  # type: ignore[operator]
    expected = re.escape("malformed app record /state/app.json")
    with pytest.raises(EngineError, match=expected) as raised:
        DeploymentRecord.decode(orjson.dumps(record), Path("/state/app.json"))
    assert complaint in str(raised.value)


def test_an_engine_skips_a_bad_record_with_a_logged_error_and_restores_the_others(
    tmp_path: Path,
) -> None:
    # Given one good record, one that is not JSON, one that is not a record, and one
    # whose code file is gone
    registry = AppRecords(tmp_path)
    _write(registry, "dev", "shop", OLD_RECORD)
    garbled = _write(registry, "dev", "garbled", b"{not json")
    wrong = _write(registry, "dev", "wrong", b"[1, 2]")
    codeless = _write(registry, "prod", "shop", OLD_RECORD.replace(b'"dev"', b'"prod"'))
    (codeless.parent / CODE).unlink()
    # When the engine reads them
    with capture_logs() as logs:
        records = registry.load_all()
    # Then the good one is there, and each other is logged, named by its file
    assert [(r.environment, r.app) for r in records] == [("dev", "shop")]
    errors = {entry["path"]: entry["reason"] for entry in logs}
    assert {entry["event"] for entry in logs} == {"app_record_unreadable"}
    assert set(errors) == {str(garbled), str(wrong), str(codeless)}
    assert "unreadable app record" in errors[str(garbled)]
    assert "the record is list, not an object" in errors[str(wrong)]
    assert "that is not there" in errors[str(codeless)]


def test_a_saved_record_is_what_load_all_reads(tmp_path: Path) -> None:
    registry = AppRecords(tmp_path)
    record = _app(registry.directory("dev", "shop")).record()
    registry.save(record)
    (registry.directory("dev", "shop") / CODE).write_bytes(b"code")
    assert registry.load_all() == [record]


def test_a_later_autoscaler_update_keeps_what_an_earlier_one_set() -> None:
    earlier = AutoscalerChanges(min_containers=1, scaledown_window=5.0)
    later = AutoscalerChanges(max_containers=3, scaledown_window=9.0)
    assert merged_changes(earlier, later) == AutoscalerChanges(1, 3, None, 9.0)
    assert merged_changes(None, later) == later
    assert with_changes(Autoscaling(0, 8), merged_changes(earlier, later)) == Autoscaling(
        1, 3, 0, 9.0
    )
    assert with_changes(Autoscaling(0, 8), None) == Autoscaling(0, 8)
