"""Signed envelopes: what a reader accepts, and what it rejects before decoding anything."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from warren.exceptions import InvalidError, MessageRejectedError
from warren.wire import naming
from warren.wire.codec import Envelope, packb, unpack_envelope
from warren.wire.signing import CALL_RESULT_VALIDITY, Signer, load_key, result_validity

KEY = b"k" * 32


def sealed(signer: Signer, body: bytes = b"body", kind: str = "calls") -> bytes:
    return signer.seal(Envelope(kind, body))


def test_a_sealed_envelope_opens_with_its_kind_and_body() -> None:
    signer = Signer(KEY, max_size=1024, expiry=60)
    envelope = signer.open(sealed(signer))
    assert (envelope.kind, envelope.body, envelope.key_id) == ("calls", b"body", signer.key_id)


def test_an_unsigned_envelope_is_rejected() -> None:
    signer = Signer(KEY, max_size=1024, expiry=60)
    with pytest.raises(MessageRejectedError, match="not signed"):
        signer.open(Envelope("calls", b"body").pack())


def test_a_tampered_body_or_kind_is_rejected() -> None:
    signer = Signer(KEY, max_size=1024, expiry=60)
    good = unpack_envelope(sealed(signer))
    for forged in (
        Envelope(good.kind, b"other", good.key_id, good.expires_at, good.signature),
        Envelope("results", good.body, good.key_id, good.expires_at, good.signature),
        Envelope(good.kind, good.body, good.key_id, good.expires_at + 3600, good.signature),
    ):
        with pytest.raises(MessageRejectedError, match="signature does not match"):
            signer.open(forged.pack())


def test_a_message_signed_with_another_key_names_both_keys() -> None:
    ours, theirs = Signer(KEY, 1024, 60), Signer(b"t" * 32, 1024, 60)
    with pytest.raises(MessageRejectedError, match=theirs.key_id) as caught:
        ours.open(sealed(theirs))
    assert ours.key_id in str(caught.value)


def test_an_expired_message_is_rejected() -> None:
    signer = Signer(KEY, max_size=1024, expiry=60)
    data = sealed(signer)
    expires = unpack_envelope(data).expires_at
    signer.open(data, now=expires - 1)
    with pytest.raises(MessageRejectedError, match="expired"):
        signer.open(data, now=expires + 1)


def test_valid_for_extends_but_never_shortens_the_expiry() -> None:
    signer = Signer(KEY, max_size=1024, expiry=60)
    short = unpack_envelope(signer.seal(Envelope("x", b""), valid_for=1)).expires_at
    long = unpack_envelope(signer.seal(Envelope("x", b""), valid_for=3600)).expires_at
    assert long - short >= 3600 - 60 - 2


@pytest.mark.parametrize("data", [b"\xc1garbage", packb([2, "calls"]), b"x" * 2000])
def test_garbage_and_oversized_messages_are_rejected(data: bytes) -> None:
    with pytest.raises(MessageRejectedError, match="rejected"):
        Signer(KEY, max_size=1024, expiry=60).open(data)


def test_the_key_comes_from_the_environment_or_a_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WARREN_SECRET_KEY", "e" * 20)
    assert load_key() == b"e" * 20
    monkeypatch.delenv("WARREN_SECRET_KEY")
    key_file = tmp_path / "key"
    key_file.write_text("f" * 24 + "\n")
    monkeypatch.setenv("WARREN_SECRET_KEY_FILE", str(key_file))
    assert load_key() == b"f" * 24


def test_a_short_key_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WARREN_SECRET_KEY", "short")
    with pytest.raises(InvalidError, match="at least 16"):
        load_key()


def test_without_configuration_a_private_key_file_is_made_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("WARREN_SECRET_KEY", raising=False)
    monkeypatch.delenv("WARREN_SECRET_KEY_FILE", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    first = load_key()
    path = tmp_path / "warren" / "secret-key"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert load_key() == first and len(first) >= 32


def test_the_signature_covers_reply_to_and_correlation_id() -> None:
    signer = Signer(KEY, max_size=1024, expiry=60)
    data = signer.seal(Envelope("calls", b"body"), reply_to="mine", correlation_id="c1")
    signer.open(data, reply_to="mine", correlation_id="c1")
    for reply_to, correlation_id in (("theirs", "c1"), ("mine", "c2"), (None, None)):
        with pytest.raises(MessageRejectedError, match="signature does not match"):
            signer.open(data, reply_to=reply_to, correlation_id=correlation_id)


def test_a_message_of_another_kind_is_rejected() -> None:
    signer = Signer(KEY, max_size=1024, expiry=60)
    with pytest.raises(MessageRejectedError, match="'results' message where 'cancel' belongs"):
        signer.open(sealed(signer, kind="results"), kind="cancel")


def test_results_for_a_spawned_call_stay_valid_as_long_as_its_queue_keeps_them() -> None:
    assert result_validity(naming.call_queue("main", "c1")) == CALL_RESULT_VALIDITY
    assert result_validity(naming.result_queue("main", "client1")) is None
