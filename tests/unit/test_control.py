"""Control operations: every request and reply through its envelope, and what is refused."""

from __future__ import annotations

from typing import Any

import pytest
from warren import exceptions
from warren.exceptions import DeserializationError
from warren.wire.codec import packb, unpack_envelope, unpackb
from warren.wire.control import (
    CONTROL_VERSION,
    REQUESTS,
    AppBundle,
    AppDeployed,
    AppListing,
    AppRegistered,
    AppStatus,
    AppStopped,
    AutoscalerChanges,
    AutoscalerSettings,
    ContainerInfo,
    ContainerListing,
    CreateSecret,
    DeadArgument,
    DeadInput,
    DeadInputDetail,
    DeadInputListing,
    DeadInputRetried,
    DeadInputsPurged,
    DeleteSecret,
    DeployApp,
    DescribeFunction,
    Done,
    EnsureVariant,
    FunctionDescription,
    FunctionStats,
    GetAppStatus,
    ListApps,
    ListContainers,
    ListDeadInputs,
    ListNodes,
    ListSecrets,
    NodeInfo,
    NodeListing,
    NodeOffer,
    PoolName,
    PoolStats,
    PurgeDeadInputs,
    RegisterApp,
    Request,
    RetryDeadInput,
    SecretKeys,
    SecretListing,
    ShowDeadInput,
    StopApp,
    StopContainer,
    UpdateAutoscaler,
    VariantDescription,
    decode_reply,
    decode_request,
    encode_failure,
    encode_reply,
    encode_request,
    reply_type,
)
from warren.wire.protocol import KIND_CONTROL, KIND_CONTROL_REPLY
from warren.wire.spec import FunctionSpec

SPEC = FunctionSpec("f", is_async=False, max_containers=3, env={"A": "1", "B": None}, region=["eu"])
BUNDLE = AppBundle("main", "shop", "shop-run-1", (SPEC,), b"\x00code", ("/srv",))
POOL = PoolName("main", "shop", "f", "v123")
SETTINGS = AutoscalerSettings(0, 4, 1, 30.0)
OFFER = NodeOffer(8.0, 16384, {"H100": 2}, "eu", None)
STATS = PoolStats(2, 1, 1, (41, 42), SETTINGS, 10, 30, held_inputs=3, nodes={"n1": 1})
CONTAINER = ContainerInfo("3f2a9c81d0e4", "shop", "f.v123", "primary", 41, 1, 3, 12.5, "ready")
STATUS = AppStatus("shop", "main", "shop", False, 1712.5, {"f": STATS}, "n1", ("n1", "n2"))
DEAD = DeadInput("3f2a9c1b7e4d", "crashed", 412, True, "shop", "f", "q", 1712.0, "inv", (0,), 3)

EXAMPLES: dict[type[Request[Any]], Request[Any]] = {
    RegisterApp: RegisterApp(BUNDLE, lease="warren.v1.lease.x"),
    DeployApp: DeployApp(BUNDLE),
    StopApp: StopApp("main", "shop"),
    ListApps: ListApps(),
    GetAppStatus: GetAppStatus("main", "shop"),
    DescribeFunction: DescribeFunction("main", "shop", "f"),
    EnsureVariant: EnsureVariant("main", "shop", "f", {"timeout": 5, "env": {"X": None}}),
    FunctionStats: FunctionStats(POOL),
    ListContainers: ListContainers("main", "shop", here_only=True),
    StopContainer: StopContainer("main", "3f2a9c81d0e4"),
    UpdateAutoscaler: UpdateAutoscaler(POOL, AutoscalerChanges(max_containers=2)),
    CreateSecret: CreateSecret("main", "db", {"PASSWORD": "hunter2"}),
    ListSecrets: ListSecrets("main"),
    DeleteSecret: DeleteSecret("main", "db"),
    ListNodes: ListNodes("main"),
    ListDeadInputs: ListDeadInputs("main", limit=10),
    ShowDeadInput: ShowDeadInput("main", "3f2a"),
    RetryDeadInput: RetryDeadInput("main", "3f2a9c1b7e4d"),
    PurgeDeadInputs: PurgeDeadInputs("main"),
}

REPLIES: dict[type[Any], object] = {
    AppRegistered: AppRegistered("shop-run-1", "http://127.0.0.1:8000"),
    AppDeployed: AppDeployed(STATUS, ""),
    AppStopped: AppStopped(3),
    AppListing: AppListing((STATUS,)),
    AppStatus: STATUS,
    FunctionDescription: FunctionDescription("shop", SPEC, ""),
    VariantDescription: VariantDescription("shop", SPEC),
    PoolStats: PoolStats(node="us-1", error="gone"),
    AutoscalerSettings: SETTINGS,
    Done: Done(),
    SecretListing: SecretListing((SecretKeys("db", ("PASSWORD",)),)),
    NodeListing: NodeListing((NodeInfo("vm-1", OFFER, True, 2, ("main",), ("main",)),)),
    ContainerListing: ContainerListing((CONTAINER,), ("node us-1: EngineNotFoundError: gone",)),
    ContainerInfo: CONTAINER,
    DeadInputListing: DeadInputListing((DEAD, DeadInput("00ff00ff00ff", "?", 3)), 7),
    DeadInputDetail: DeadInputDetail(
        DEAD,
        {"x-warren-reason": "crashed"},
        (DeadArgument(0, "msgpack", 5, "(1,) {}"), DeadArgument(1, "pickle", 900)),
        reply_to="warren.v1.main.call.c1",
        expires_at=1713.0,
        stored_result=True,
    ),
    DeadInputRetried: DeadInputRetried("3f2a9c1b7e4d", "warren.v1.main.fn.shop.f", True),
    DeadInputsPurged: DeadInputsPurged(2),
}


def test_every_operation_has_an_example_and_a_distinct_name() -> None:
    assert set(EXAMPLES) == set(REQUESTS.values())
    assert all(REQUESTS[cls.OP] is cls for cls in EXAMPLES)


@pytest.mark.parametrize("request_", list(EXAMPLES.values()), ids=lambda r: type(r).OP)
def test_every_request_round_trips_through_its_signed_envelope(request_: Request[Any]) -> None:
    envelope = unpack_envelope(encode_request(request_).pack())
    assert envelope.kind == KIND_CONTROL
    assert decode_request(envelope.body) == request_


@pytest.mark.parametrize("request_", list(EXAMPLES.values()), ids=lambda r: type(r).OP)
def test_every_reply_round_trips_as_the_type_its_request_names(request_: Request[Any]) -> None:
    expected = reply_type(request_)
    reply = REPLIES[expected]
    envelope = unpack_envelope(encode_reply(reply).pack())
    assert envelope.kind == KIND_CONTROL_REPLY
    decoded = decode_reply(envelope.body, expected)
    assert decoded == reply
    assert type(decoded) is expected


def body(op: Any, fields: Any, version: int = CONTROL_VERSION) -> bytes:
    return packb([version, op, fields])


def fields_of(request: Request[Any], **changes: Any) -> dict[str, Any]:
    """A request's fields as they travel, some of them changed."""
    _, _, fields = unpackb(encode_request(request).body)
    return {**fields, **changes}


def test_a_float_field_written_as_an_int_is_read_as_a_float() -> None:
    fields = {"min_containers": 0, "max_containers": 1, "buffer_containers": 0}
    reply = packb([CONTROL_VERSION, {**fields, "scaledown_window": 60}, None, ""])
    settings = decode_reply(reply, AutoscalerSettings)
    assert settings.scaledown_window == 60.0
    assert isinstance(settings.scaledown_window, float)


BUNDLE_FIELDS = fields_of(EXAMPLES[DeployApp])["bundle"]


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        (body("launch_missiles", {}), "unknown control operation 'launch_missiles'"),
        (body(7, {}), "unknown control operation 7"),
        (body("list_nodes", {}, version=2), "version 2 is not supported"),
        (packb([CONTROL_VERSION, "list_nodes"]), "malformed control request"),
        (b"\xc1", "malformed control request"),
        (body("list_nodes", []), "expected a map of fields"),
        (body("list_nodes", {"extra": 1}), r"unknown fields \['extra'\]"),
        (body("stop_app", {"environment": "main"}), "'instance' is missing"),
        (
            body("stop_app", {"environment": "main", "instance": 3}),
            "stop_app.instance: expected str, got int",
        ),
        (body("delete_secret", {"environment": True, "name": "x"}), "expected str, got bool"),
        (
            body("function_stats", {"pool": {"environment": "m", "instance": "i", "tag": 3}}),
            "function_stats.pool.tag: expected str, got int",
        ),
        (
            body("create_secret", {"environment": "m", "name": "n", "values": {"A": 1}}),
            r"values\['A'\]: expected str",
        ),
        (
            body(
                "register_app",
                fields_of(EXAMPLES[RegisterApp], bundle={**BUNDLE_FIELDS, "functions": [3]}),
            ),
            "register_app.bundle.functions\\[0\\]: expected a function spec",
        ),
        (
            body(
                "register_app",
                fields_of(EXAMPLES[RegisterApp], bundle={**BUNDLE_FIELDS, "code": "not bytes"}),
            ),
            "register_app.bundle.code: expected bytes, got str",
        ),
        (
            body("register_app", {"bundle": {"environment": "main"}}),
            "register_app.bundle: field 'app' is missing",
        ),
    ],
)
def test_a_malformed_or_unknown_request_is_refused_with_the_reason(
    message: bytes, reason: str
) -> None:
    with pytest.raises(DeserializationError, match=reason):
        decode_request(message)


def test_an_error_reply_is_raised_as_the_class_of_warren_exceptions_it_names() -> None:
    reply = encode_failure("NotFoundError", "no app 'shop'").body
    with pytest.raises(exceptions.NotFoundError, match="no app 'shop'"):
        decode_reply(reply, AppStopped)
    with pytest.raises(exceptions.EngineNotFoundError):
        decode_reply(encode_failure("EngineNotFoundError", "gone").body, Done)


def test_an_error_reply_naming_no_warren_exception_is_an_engine_error() -> None:
    for name in ("KeyError", "Exception", "log"):
        with pytest.raises(exceptions.EngineError, match=f"{name}: oops") as raised:
            decode_reply(encode_failure(name, "oops").body, Done)
        assert type(raised.value) is exceptions.EngineError


def test_a_malformed_reply_is_refused() -> None:
    with pytest.raises(DeserializationError, match="version 2"):
        decode_reply(packb([2, {}, None, ""]), Done)
    with pytest.raises(DeserializationError, match="malformed control reply"):
        decode_reply(packb([CONTROL_VERSION, {}]), Done)
    with pytest.raises(
        DeserializationError, match="reply AppStopped: field 'inputs_answered' is missing"
    ):
        decode_reply(packb([CONTROL_VERSION, {}, None, ""]), AppStopped)


def test_pool_stats_for_people_leave_out_what_is_unset() -> None:
    assert "node" not in STATS.as_dict()
    assert STATS.as_dict()["autoscaler"]["max_containers"] == 4
    assert STATS.as_dict()["pids"] == [41, 42]
    assert PoolStats(node="us-1", error="gone").as_dict()["error"] == "gone"
    assert STATUS.as_dict()["functions"]["f"]["containers"] == 1
