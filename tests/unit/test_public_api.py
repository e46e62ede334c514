"""The public surface of the SDK."""

from __future__ import annotations

import sdk
from sdk import exceptions


def test_all_is_exactly_the_sorted_public_names() -> None:
    public = {name for name in vars(sdk) if not name.startswith("_")} - {
        "app", "client", "codec", "config", "exceptions", "facade", "failure", "function",
        "naming", "protocol", "runner", "shipping", "topology", "batching",
    }  # fmt: skip
    assert sorted(sdk.__all__) == sdk.__all__
    assert set(sdk.__all__) == public


def test_every_warren_exception_shares_one_base_class() -> None:
    for name in exceptions.__all__:
        assert issubclass(getattr(exceptions, name), exceptions.WarrenError)
