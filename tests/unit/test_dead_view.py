"""What ``warren dead list`` and ``warren dead show`` print."""

from __future__ import annotations

import pytest
from warren.wire.control import DeadArgument, DeadInput, DeadInputDetail, DeadInputListing
from warren_engine import dead_view

DEAD = DeadInput(
    "3f2a9c1b7e4d",
    "its container died each of the 3 times it ran",
    412,
    verified=True,
    app="shop",
    function="pay",
    queue="warren.v1.main.fn.shop.pay",
    dead_at=1_700_000_000.0,
    invocation="inv-1",
    inputs=(4,),
    crashes=3,
)


def test_an_empty_queue_says_so_with_its_environment() -> None:
    assert dead_view.listing_lines(DeadInputListing((), 0), "main") == [
        "no dead-lettered inputs in environment 'main'"
    ]


def test_each_dead_input_is_one_line_with_id_function_when_size_and_reason() -> None:
    header, line = dead_view.listing_lines(DeadInputListing((DEAD,), 1), "main")
    assert header.split() == ["id", "function", "dead", "since", "size", "reason"]
    assert line.startswith("3f2a9c1b7e4d  shop.pay ")
    assert dead_view.when(DEAD.dead_at) in line
    assert "412 B" in line
    assert line.endswith("its container died each of the 3 times it ran")


def test_copies_and_what_the_limit_left_out_are_counted() -> None:
    copied = DeadInput("00ff00ff00ff", "?", 3, queue="somewhere", copies=2)
    lines = dead_view.listing_lines(DeadInputListing((DEAD, copied), 10), "main")
    assert lines[2].startswith("00ff00ff00ff  somewhere ") and lines[2].endswith("(2 copies)")
    assert lines[3] == "... and 7 more messages (see --limit)"


@pytest.mark.parametrize(
    ("count", "shown"), [(0, "0 B"), (1023, "1023 B"), (1536, "1.5 KiB"), (3 * 1024**2, "3.0 MiB")]
)
def test_sizes_are_shown_in_the_unit_that_keeps_them_short(count: int, shown: str) -> None:
    assert dead_view.size(count) == shown


def test_an_unknown_time_is_a_dash() -> None:
    assert dead_view.when(None) == "-"


def test_show_names_every_field_and_tells_why_a_pickle_is_not_shown() -> None:
    shown = DeadInputDetail(
        DEAD,
        {"x-warren-reason": DEAD.reason},
        (DeadArgument(0, "msgpack", 5, "(21)"), DeadArgument(1, "pickle", 900)),
        correlation_id="c1",
        reply_to="warren.v1.main.call.c1",
        type="calls",
        expires_at=1_700_086_400.0,
        stored_result=True,
    )
    lines = dict(line.split(None, 1) for line in dead_view.detail_lines(shown) if " " in line)
    text = "\n".join(dead_view.detail_lines(shown))
    assert lines["id"].strip() == DEAD.id
    assert lines["function"].strip() == "shop.pay"
    assert "inv-1, input 4, 3 crashes" in text
    assert "valid until" in text
    assert "a spawned call: a retry's result replaces its error" in text
    assert "msgpack, 5 bytes: (21)" in text
    assert "pickle, 900 bytes: (not shown: loading a pickle runs code)" in text
    assert f"header x-warren-reason  {DEAD.reason}" in text


def test_show_of_an_input_no_key_vouches_for_says_it_cannot_be_retried() -> None:
    foreign = DeadInput("abcdefabcdef", "rejected", 10)
    text = "\n".join(
        dead_view.detail_lines(DeadInputDetail(foreign, {}, problem="rejected: not signed"))
    )
    assert "rejected: not signed (it cannot be retried)" in text
    assert "not decoded: this engine's key does not vouch for it" in text
    assert "- (nobody)" in text
