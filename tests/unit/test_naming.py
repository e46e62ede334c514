"""Queue names: one pure module, protocol version inside every name."""

from __future__ import annotations

import pytest
from warren.exceptions import InvalidError
from warren.wire import naming


def test_every_name_carries_the_protocol_version() -> None:
    names = [
        naming.control_queue("main"),
        naming.control_queue("main", "run1"),
        naming.registry_stream("main"),
        naming.leader_queue("main"),
        naming.nodes_exchange(),
        naming.slots_queue(naming.function_queue("main", "app", "fn")),
        naming.dead_letter_exchange(),
        naming.dead_letter_queue("main"),
        naming.cancel_exchange("main"),
        naming.function_queue("main", "app", "fn"),
        naming.function_queue("main", "app", "fn", "v1a"),
        naming.result_queue("main", "c1"),
        naming.lease_queue("main", "c1"),
        naming.call_queue("main", "call1"),
    ]
    assert all(name.startswith(f"warren.v{naming.PROTOCOL_VERSION}.") for name in names)
    assert len(set(names)) == len(names)


def test_environments_are_name_prefixes_that_keep_apps_apart() -> None:
    assert naming.function_queue("main", "demo", "f") == "warren.v1.main.fn.demo.f"
    assert naming.function_queue("staging", "demo", "f") == "warren.v1.staging.fn.demo.f"


@pytest.mark.parametrize("bad", ["", "a.b", "-lead", "sp ace", "x" * 101, "ü"])
def test_parts_that_would_break_the_dotted_names_are_refused(bad: str) -> None:
    with pytest.raises(InvalidError, match="invalid app name"):
        naming.function_queue("main", bad, "f")


def test_a_function_queue_s_name_gives_back_its_app_function_and_variant() -> None:
    assert naming.function_of_queue(naming.function_queue("main", "shop", "pay")) == (
        "main",
        "shop",
        "pay",
        None,
    )
    variant = naming.function_queue("dev", "shop", "pay", "v1a")
    assert naming.function_of_queue(variant) == ("dev", "shop", "pay", "v1a")


@pytest.mark.parametrize(
    "name",
    [
        naming.dead_letter_queue("main"),
        naming.result_queue("main", "c1"),
        naming.call_queue("main", "call1"),
        "warren.v0.main.fn.shop.pay",
        "other.v1.main.fn.shop.pay",
        "",
    ],
)
def test_a_name_that_is_no_function_queue_gives_none(name: str) -> None:
    assert naming.function_of_queue(name) is None
