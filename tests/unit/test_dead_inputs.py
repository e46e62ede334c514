"""Reading a dead letter without a broker: its id, what it says, what may be shown of it."""

from __future__ import annotations

import pickle
import time
from datetime import UTC, datetime
from typing import Any

import pytest
from warren.exceptions import InvalidError
from warren.wire import codec, naming, topology
from warren.wire.protocol import CallBatch
from warren.wire.signing import Signer
from warren_engine.daemon.dead_letters import (
    ID_CHARS,
    PREVIEW_CHARS,
    DeadMessage,
    dead_input_id,
    detail,
    listing,
    parse_id,
    preview,
    read,
)
from warren_engine.publisher import SOURCE_QUEUE_HEADER

SIGNER = Signer(b"k" * 32, 1 << 20, 3600.0)
QUEUE = naming.function_queue("main", "shop", "pay")
CALL_QUEUE = naming.call_queue("main", "c1")
REASON = "its container died each of the 3 times it ran (the crash limit, WARREN_CRASH_LIMIT, is 3)"

LOADED: list[str] = []


def _loaded(what: str) -> str:
    LOADED.append(what)
    return what


class Bomb:
    """Unpickling this records it: proof that a pickle was (or was not) loaded."""

    def __reduce__(self) -> tuple[Any, ...]:
        return (_loaded, ("a pickle was loaded",))


def sealed(
    inputs: list[tuple[int, int, bytes]],
    *,
    signer: Signer = SIGNER,
    reply_to: str | None = CALL_QUEUE,
    expires_at: int | None = None,
    crashes: int = 3,
) -> bytes:
    batch = CallBatch("inv-1", inputs, crashes=crashes)
    return signer.seal(
        batch.to_envelope(), reply_to=reply_to, correlation_id="c1", expires_at=expires_at
    )


def msgpack_input(index: int, *args: Any, **kwargs: Any) -> tuple[int, int, bytes]:
    fmt, data = codec.encode_call_args(args, kwargs)
    assert fmt == codec.FORMAT_MSGPACK
    return (index, fmt, data)


def dead_letter(body: bytes, headers: dict[str, Any] | None = None, **props: Any) -> DeadMessage:
    given = {topology.REASON_HEADER: REASON, SOURCE_QUEUE_HEADER: QUEUE}
    return DeadMessage(
        body,
        given if headers is None else headers,
        **{"correlation_id": "c1", "reply_to": CALL_QUEUE, "type": "calls", **props},
    )


def test_an_id_is_the_same_for_the_same_body_and_differs_for_another() -> None:
    one = dead_input_id(b"body one")
    assert one == dead_input_id(b"body one")
    assert one != dead_input_id(b"body two")
    assert len(one) == ID_CHARS and set(one) <= set("0123456789abcdef")


@pytest.mark.parametrize(
    ("typed", "parsed"),
    [("3F2A9C1B7E4D", "3f2a9c1b7e4d"), (" 3f2a ", "3f2a"), ("00ff00", "00ff00")],
)
def test_an_id_or_a_prefix_of_one_is_read_as_typed(typed: str, parsed: str) -> None:
    assert parse_id(typed) == parsed


@pytest.mark.parametrize(
    "typed", ["", "3f2", "3f2a9c1b7e4d0", "xyz123", "3f2a-9c1b", "../..", "\uff13f2a"]
)
def test_what_cannot_be_an_id_is_refused_with_what_one_looks_like(typed: str) -> None:
    with pytest.raises(InvalidError, match="hex digits"):
        parse_id(typed)


def test_a_dead_letter_of_the_crash_limit_says_its_app_function_reason_and_call() -> None:
    # Given an input dead-lettered by its container at the crash limit
    body = sealed([msgpack_input(4, 21)])
    message = dead_letter(body, timestamp=1_700_000_000.0)
    # When it is read
    reading = read(message, SIGNER)
    dead = reading.input
    # Then its summary names where it came from, why, when, and which input it is
    assert (dead.app, dead.function, dead.queue) == ("shop", "pay", QUEUE)
    assert dead.reason == REASON
    assert dead.dead_at == 1_700_000_000.0
    assert (dead.id, dead.size) == (dead_input_id(body), len(body))
    assert dead.verified and reading.problem is None
    assert (dead.invocation, dead.inputs, dead.crashes) == ("inv-1", (4,), 3)


def test_a_variant_s_dead_letter_names_the_variant_as_its_function() -> None:
    queue = naming.function_queue("main", "shop", "pay", "v9")
    headers = {topology.REASON_HEADER: REASON, SOURCE_QUEUE_HEADER: queue}
    assert read(dead_letter(sealed([]), headers), SIGNER).input.function == "pay.v9"


def test_a_message_another_key_signed_is_listed_but_never_decoded() -> None:
    other = Signer(b"o" * 32, 1 << 20, 3600.0)
    reading = read(dead_letter(sealed([msgpack_input(0, 1)], signer=other)), SIGNER)
    assert not reading.input.verified
    assert reading.batch is None and reading.input.invocation is None
    assert reading.problem is not None and "signed with key" in reading.problem
    assert reading.input.reason == REASON  # what the headers say is still shown


def test_a_message_whose_properties_were_changed_fails_its_signature() -> None:
    tampered = dead_letter(sealed([msgpack_input(0, 1)]), reply_to=naming.call_queue("main", "x"))
    reading = read(tampered, SIGNER)
    assert reading.problem is not None and "signature does not match" in reading.problem


def test_an_expired_input_is_decoded_but_says_it_cannot_run_any_more() -> None:
    body = sealed([msgpack_input(0, 1)], expires_at=int(time.time()) - 10)
    reading = read(dead_letter(body), SIGNER)
    assert reading.input.verified and reading.input.invocation == "inv-1"
    assert reading.problem is not None and "expired" in reading.problem


def test_a_message_the_broker_dead_lettered_on_its_own_says_so_from_x_death() -> None:
    died = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    headers = {"x-death": [{"queue": QUEUE, "reason": "rejected", "time": died, "count": 1}]}
    dead = read(dead_letter(sealed([]), headers), SIGNER).input
    assert dead.reason == "dead-lettered by the broker (rejected)"
    assert (dead.app, dead.function) == ("shop", "pay")
    assert dead.dead_at == died.timestamp()


def test_a_message_with_no_headers_at_all_is_still_listed() -> None:
    dead = read(dead_letter(b"\x00garbage", {}), SIGNER).input
    assert dead.reason == "no reason recorded"
    assert (dead.app, dead.function, dead.queue, dead.verified) == (None, None, None, False)


def test_identical_messages_are_listed_once_with_their_copies_and_the_limit_holds() -> None:
    first, second, third = (
        read(dead_letter(sealed([msgpack_input(i, i)])), SIGNER) for i in (1, 2, 3)
    )
    listed = listing([r.input for r in (first, second, first, third)], total=9, limit=2)
    assert [dead.id for dead in listed.inputs] == [first.input.id, second.input.id]
    assert [dead.copies for dead in listed.inputs] == [2, 1]
    assert listed.total == 9


def test_plain_arguments_are_shown_and_a_pickle_is_never_loaded() -> None:
    # Given an input whose arguments are msgpack, and one whose arguments are a pickle
    # that records being loaded
    pickled = (1, codec.FORMAT_PICKLE, pickle.dumps([[Bomb()], {}]))
    body = sealed([msgpack_input(0, 21, tag="x"), pickled])
    message = dead_letter(body)
    # When it is shown
    shown = detail(message, read(message, SIGNER))
    # Then the msgpack arguments are shown as a call's, the pickle only by format and size
    plain, opaque = shown.arguments
    assert (plain.format, plain.preview) == ("msgpack", "(21, tag='x')")
    assert (opaque.format, opaque.size, opaque.preview) == ("pickle", len(pickled[2]), None)
    assert LOADED == []
    # And it says where the result goes
    assert shown.stored_result and shown.reply_to == CALL_QUEUE
    assert shown.headers[topology.REASON_HEADER] == REASON


def test_json_arguments_are_shown_and_long_ones_are_shortened() -> None:
    assert preview(codec.FORMAT_JSON, b'[[1, "two"], {"three": 3}]') == "(1, 'two', three=3)"
    long = preview(codec.FORMAT_MSGPACK, codec.packb([["x" * 1000], {}]))
    assert long is not None and len(long) == PREVIEW_CHARS and long.endswith("…")


@pytest.mark.parametrize(
    ("fmt", "data"),
    [
        (codec.FORMAT_MSGPACK, b"\xc1"),
        (codec.FORMAT_JSON, b"{"),
        (codec.FORMAT_MSGPACK, codec.packb(3)),
        (9, b""),
    ],
)
def test_arguments_that_do_not_decode_as_a_call_s_are_not_shown(fmt: int, data: bytes) -> None:
    assert preview(fmt, data) is None


def test_a_waiting_caller_s_input_does_not_claim_a_stored_result() -> None:
    reply_to = naming.result_queue("main", "client1")
    message = dead_letter(sealed([], reply_to=reply_to), reply_to=reply_to)
    shown = detail(message, read(message, SIGNER))
    assert not shown.stored_result and shown.problem is None
