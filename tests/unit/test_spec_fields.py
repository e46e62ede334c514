"""A spec's typed fields (secrets, volumes, web endpoint): wire form, decoding, variants."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import warren
from warren.exceptions import DeserializationError
from warren.options import check_options, check_variant_options
from warren.web import web_endpoint
from warren.wire.codec import packb, unpackb
from warren.wire.control import (
    EnsureVariant,
    VariantDescription,
    decode_reply,
    decode_request,
    encode_reply,
    encode_request,
)
from warren.wire.spec import (
    FunctionSpec,
    InlineSecret,
    NamedSecret,
    RedactedSecret,
    VolumeRef,
    WebEndpoint,
    WebParam,
    variant_name,
)
from warren_engine.daemon.secret_store import SecretStore, redacted

SECRET_VALUE = "hunter2-do-not-show"
WEB = WebEndpoint("POST", (WebParam("a", "int"), WebParam("b")), ("a",), var_keyword=True)
SPEC = FunctionSpec(
    "f",
    False,
    secrets=(NamedSecret("db"), InlineSecret({"TOKEN": SECRET_VALUE})),
    volumes={"/data": VolumeRef("cache", create_if_missing=True)},
    web=WEB,
)


def test_a_spec_with_typed_fields_survives_msgpack_and_decodes_to_the_same_types() -> None:
    decoded = FunctionSpec.from_wire(unpackb(packb(SPEC.to_wire())))
    assert decoded == SPEC
    assert isinstance(decoded.secrets, tuple) and isinstance(decoded.web, WebEndpoint)
    assert decoded.volumes["/data"] == VolumeRef("cache", True)


def test_the_typed_fields_travel_as_the_plain_maps_they_always_were() -> None:
    # Given a spec with a secret of each kind, a volume and a web endpoint
    # When it is put on the wire
    wire = unpackb(packb(SPEC.to_wire()))
    # Then its parts are plain maps, each secret a map of one key
    assert wire["secrets"] == [{"name": "db"}, {"values": {"TOKEN": SECRET_VALUE}}]
    assert wire["volumes"] == {"/data": {"name": "cache", "create_if_missing": True}}
    assert wire["web"] == {
        "method": "POST",
        "params": [{"name": "a", "kind": "int"}, {"name": "b", "kind": ""}],
        "required": ["a"],
        "var_keyword": True,
    }


def test_a_spec_in_a_control_reply_decodes_to_the_typed_fields() -> None:
    reply = VariantDescription("shop-1", SPEC)
    envelope = encode_reply(reply)
    assert decode_reply(envelope.body, VariantDescription) == reply


def test_a_web_endpoint_recorded_with_parameters_as_a_map_still_decodes() -> None:
    legacy = {"method": "GET", "params": {"a": "int", "b": ""}, "required": ["a"]}
    decoded = FunctionSpec.from_wire({**FunctionSpec("f", False).to_wire(), "web": legacy})
    assert decoded.web == WebEndpoint("GET", (WebParam("a", "int"), WebParam("b", "")), ("a",))


def test_a_volume_without_create_if_missing_decodes_as_not_creating_it() -> None:
    spec = FunctionSpec.from_wire({"tag": "f", "is_async": False, "volumes": {"/a": {"name": "x"}}})
    assert spec.volumes == {"/a": VolumeRef("x", create_if_missing=False)}


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("secrets", {"values": {"K": SECRET_VALUE}}, "secrets: expected a list, got a dict"),
        ("secrets", ["db"], r"secrets\[0\]: expected a map"),
        ("secrets", [{}], r"secrets\[0\]: expected exactly one of 'name', 'values' or 'keys'"),
        ("secrets", [{"name": "db", "values": {"K": SECRET_VALUE}}], "exactly one of"),
        ("secrets", [{"name": 3}], r"secrets\[0\]\.name: expected a string"),
        ("secrets", [{"values": {"K": 1}}], r"secrets\[0\]\.values: expected strings by name"),
        ("secrets", [{"values": [SECRET_VALUE]}], r"secrets\[0\]\.values: expected strings"),
        ("secrets", [{"keys": "K"}], r"secrets\[0\]\.keys: expected a list of strings"),
        ("volumes", [], "volumes: expected a map with string keys"),
        ("volumes", {"/a": {"create_if_missing": True}}, "the volume's 'name' is missing"),
        ("volumes", {"/a": {"name": "x", "create_if_missing": 1}}, "expected a boolean"),
        ("volumes", {"/a": "x"}, r"volumes\['/a'\]: expected a map"),
        ("web", "GET", "web: expected a map"),
        ("web", {"method": "PUT"}, r"web\.method: expected one of \('GET', 'POST'\)"),
        ("web", {"method": "GET", "params": 3}, r"web\.params: expected a list"),
        ("web", {"method": "GET", "params": [{"kind": "int"}]}, r"params\[0\]\.name: expected"),
        ("web", {"method": "GET", "params": [{"name": "a", "kind": "list"}]}, r"\.kind: expected"),
        ("web", {"method": "GET", "required": [1]}, r"web\.required\[0\]: expected a string"),
        ("web", {"method": "GET", "var_keyword": "yes"}, r"web\.var_keyword: expected a boolean"),
    ],
)
def test_a_malformed_part_of_a_spec_is_refused_saying_which_and_never_showing_values(
    field: str, value: Any, message: str
) -> None:
    with pytest.raises(DeserializationError, match=message) as caught:
        FunctionSpec.from_wire({"tag": "f", "is_async": False, field: value})
    assert SECRET_VALUE not in str(caught.value)


def test_neither_a_spec_nor_its_inline_secret_shows_the_secret_s_values() -> None:
    assert SECRET_VALUE not in repr(SPEC)
    assert repr(InlineSecret({"TOKEN": SECRET_VALUE})) == "InlineSecret(keys=['TOKEN'])"
    assert SECRET_VALUE not in repr(
        check_options(secrets=[warren.Secret.from_dict({"T": SECRET_VALUE})])
    )


def test_a_redacted_spec_keeps_names_and_keys_and_drops_every_value() -> None:
    shown = redacted(SPEC)
    assert shown.secrets == (NamedSecret("db"), RedactedSecret(("TOKEN",)))
    assert SECRET_VALUE not in str(unpackb(packb(shown.to_wire())))
    assert FunctionSpec.from_wire(shown.to_wire()) == shown


def test_a_container_s_environment_has_env_then_each_secret_s_values(tmp_path: Path) -> None:
    store = SecretStore(tmp_path)
    store.put("dev", "db", {"DB": "url", "TOKEN": "stored"})
    spec = FunctionSpec(
        "f",
        False,
        env={"A": "1", "TOKEN": "env"},
        secrets=(NamedSecret("db"), InlineSecret({"TOKEN": "inline"}), RedactedSecret(("X",))),
    )
    assert store.environ("dev", spec) == {"A": "1", "DB": "url", "TOKEN": "inline"}


def test_typed_and_plain_overrides_make_the_same_variant() -> None:
    typed = check_variant_options(
        secrets=[warren.Secret.from_name("db"), warren.Secret.from_dict({"K": "v"})],
        volumes={"/data": warren.Volume.from_name("cache", create_if_missing=True)},
    )
    sent = decode_request(encode_request(EnsureVariant("dev", "app-1", "f", typed)).body)
    assert isinstance(sent, EnsureVariant)
    plain = sent.options  # as the engine finds them
    assert plain["secrets"] == [{"name": "db"}, {"values": {"K": "v"}}]
    assert variant_name(typed) == variant_name(plain)
    base = FunctionSpec("f", False)
    assert base.with_overrides(typed) == base.with_overrides(plain)
    assert base.with_overrides(plain).secrets == (NamedSecret("db"), InlineSecret({"K": "v"}))
    assert base.with_overrides(plain).volumes == {"/data": VolumeRef("cache", True)}


def test_variant_names_of_secrets_and_volumes_are_those_of_their_plain_form() -> None:
    # Pinned from the plain maps these options were before they were typed: a variant's
    # name is part of its queue's name.
    typed = check_variant_options(
        secrets=[warren.Secret.from_name("db"), warren.Secret.from_dict({"K": "v"})],
        volumes={"/data": warren.Volume.from_name("cache", create_if_missing=True)},
    )
    assert variant_name(typed) == "vdefc3bf34f8"


def test_a_web_endpoint_describes_the_function_s_parameters() -> None:
    def add(a: int, b: float = 1.0, *args: Any, flag: bool = False, **rest: Any) -> None: ...

    web_endpoint(method="post")(add)
    assert add.__warren_web__ == WebEndpoint(  # type: ignore[attr-defined]
        "POST",
        (WebParam("a", "int"), WebParam("b", "float"), WebParam("flag", "bool")),
        ("a",),
        var_keyword=True,
    )
