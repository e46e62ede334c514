"""FunctionSpec checks and variants not covered by test_protocol.py and test_options.py."""

from __future__ import annotations

import pytest
from warren.exceptions import InvalidError
from warren.wire.spec import VARIANT_CHARS, FunctionSpec, variant_name


def test_a_spec_without_max_containers_leaves_the_count_to_the_engine() -> None:
    spec = FunctionSpec("f", False, min_containers=50)
    assert spec.max_containers is None


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"min_containers": 3, "max_containers": 2}, "cannot exceed max_containers"),
        ({"min_containers": -1}, "min_containers must be a non-negative integer"),
        ({"buffer_containers": 0.5}, "buffer_containers must be a non-negative integer"),
        ({"scaledown_window": -1}, "scaledown_window must be >= 0 seconds"),
        ({"scaledown_window": False}, "scaledown_window must be >= 0 seconds"),
        ({"timeout": "5"}, "timeout must be a positive number of seconds"),
        ({"timeout": -0.5}, "timeout must be a positive number of seconds"),
        ({"max_inputs": 2.0}, "max_inputs must be a positive integer"),
    ],
)
def test_a_spec_refuses_settings_that_make_no_sense_and_says_which(
    fields: dict[str, object], message: str
) -> None:
    with pytest.raises(InvalidError, match=message):
        FunctionSpec("f", False, **fields)  # type: ignore[arg-type]


def test_no_overrides_make_no_variant() -> None:
    spec = FunctionSpec("f", False)
    assert spec.with_overrides({}) is spec


def test_a_variant_keeps_every_field_its_overrides_do_not_set() -> None:
    spec = FunctionSpec("f", True, max_inputs=4, max_containers=3, region=["eu"])
    variant = spec.with_overrides({"max_containers": 5})
    assert variant.max_containers == 5
    assert variant.tag == "f" and variant.is_async
    assert variant.max_inputs == 4 and variant.region == ["eu"]
    assert spec.variant is None and spec.max_containers == 3  # the original is unchanged


@pytest.mark.parametrize("name", ["max_inputs", "min_containers", "tag", "variant", "web"])
def test_overriding_a_field_that_is_not_an_option_is_refused_by_name(name: str) -> None:
    with pytest.raises(InvalidError, match=f"cannot be overridden: \\['{name}'\\]"):
        FunctionSpec("f", False).with_overrides({name: 1})


def test_a_variant_s_overrides_are_checked_like_any_spec() -> None:
    with pytest.raises(InvalidError, match="max_containers must be a positive integer"):
        FunctionSpec("f", False).with_overrides({"max_containers": 0})


def test_a_whole_number_given_as_a_float_names_the_same_variant_as_the_int() -> None:
    assert variant_name({"timeout": 5.0}) == variant_name({"timeout": 5})
    assert variant_name({"timeout": 5.5}) != variant_name({"timeout": 5})
    assert variant_name({"cpu": [1.0, None]}) == variant_name({"cpu": [1, None]})


def test_nested_mappings_name_the_same_variant_whatever_their_order() -> None:
    a = {"volumes": {"/a": {"name": "x", "create_if_missing": False}, "/b": {"name": "y"}}}
    b = {"volumes": {"/b": {"name": "y"}, "/a": {"create_if_missing": False, "name": "x"}}}
    assert variant_name(a) == variant_name(b)


def test_variant_names_are_stable_across_releases() -> None:
    # A variant's name is part of its queue's name: changing how it is computed would
    # leave every deployed variant's queue behind.
    assert variant_name({"timeout": 5}) == "v63fcd301f7b"
    name = variant_name({"env": {"A": "1", "B": "2"}, "cpu": [1.0, None]})
    assert name == "v4b2e9c70060" and len(name) == VARIANT_CHARS


def test_a_boolean_timeout_is_refused_like_any_other_non_number() -> None:
    with pytest.raises(InvalidError, match="timeout must be a positive number"):
        FunctionSpec("f", False, timeout=True)
