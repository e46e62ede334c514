"""The public surface of the SDK."""

from __future__ import annotations

import inspect

import warren
from warren import exceptions


def test_all_is_exactly_the_sorted_public_names() -> None:
    public = {
        name
        for name, value in vars(warren).items()
        if not name.startswith("_") and not inspect.ismodule(value)
    }
    assert sorted(warren.__all__) == warren.__all__
    assert set(warren.__all__) == public


def test_every_warren_exception_shares_one_base_class() -> None:
    for name in exceptions.__all__:
        assert issubclass(getattr(exceptions, name), exceptions.WarrenError)
