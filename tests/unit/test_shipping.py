"""Shipping app code: version checks and traceback file names."""

from __future__ import annotations

import traceback

import cloudpickle
import pytest
import warren
from warren.exceptions import VersionMismatchError
from warren.wire.code_bundle import check_python, load_app_code, pack_app_code
from warren.wire.codec import packb

app = warren.App("test-shipping")


def helper(x: int) -> int:
    if x < 0:
        raise ValueError("negative")
    return x


@app.function()
def uses_helper(x: int) -> int:
    return helper(x) * 2


def test_code_round_trips_and_tracebacks_name_the_real_file_and_line() -> None:
    functions = load_app_code(pack_app_code(app.name, app.code().functions))
    assert functions["uses_helper"](2) == 4
    with pytest.raises(ValueError) as caught:
        functions["uses_helper"](-1)
    text = "".join(traceback.format_exception(caught.value))
    assert __file__ in text
    assert 'raise ValueError("negative")' in text
    assert "return helper(x) * 2" in text


def test_code_from_another_python_minor_version_is_refused_before_unpickling() -> None:
    blob = packb({"python": "2.7", "functions": b"not even a pickle", "sources": {}})
    with pytest.raises(VersionMismatchError, match=r"Python 2\.7"):
        check_python(blob)
    with pytest.raises(VersionMismatchError):
        load_app_code(blob)


def test_the_apps_module_travels_by_value() -> None:
    assert __name__ in cloudpickle.list_registry_pickle_by_value()


def test_a_function_referenced_from_globals_pickles_as_a_reference() -> None:
    payload = cloudpickle.dumps(uses_helper)
    assert b"_function_reference" in payload
    clone = cloudpickle.loads(payload)
    assert clone.tag == "uses_helper"
    assert clone.target().app == "test-shipping"
    with pytest.raises(warren.InvalidError):
        clone.local(1)  # a reference carries no code, let alone a copy of the app
