"""Control operations: what a client (or another engine node) asks an engine, and its answer.

One frozen dataclass per operation, each naming its reply type::

    reply = await client.control(ListApps(environment="main"))   # reply: AppListing

A request travels as a ``control`` envelope whose body is
``[CONTROL_VERSION, op, fields]``; its reply as a ``control_reply`` envelope whose body
is ``[CONTROL_VERSION, fields, None, ""]``, or ``[CONTROL_VERSION, None, error,
message]`` when the engine raised (``error`` names a class of :mod:`warren.exceptions`,
raised again on the caller). ``fields`` maps a dataclass's field names to their values;
the reader checks every one against the field's type, so a malformed or unknown request
is a :class:`~warren.exceptions.DeserializationError` before anything acts on it.
Pure; no I/O.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from typing import Any, ClassVar, Final, Generic, TypeVar, cast

from warren import exceptions
from warren.exceptions import DeserializationError
from warren.wire.codec import Envelope, packb, unpackb
from warren.wire.protocol import KIND_CONTROL, KIND_CONTROL_REPLY
from warren.wire.spec import FunctionSpec

# The control body's layout; 2 was the untyped ``[version, op, args]`` one.
CONTROL_VERSION: Final = 3

R = TypeVar("R")


class Request(Generic[R]):
    """A control operation whose reply is an ``R``. ``OP`` names it on the wire."""

    __slots__ = ()
    OP: ClassVar[str]
    REPLY: ClassVar[type[Any]]

    @property
    def scope(self) -> str | None:
        """The environment this request is for: its engines' control queue takes it.
        None: any the engine serves (the client sends it to its own environment's)."""
        environment = getattr(self, "environment", None)
        return environment if isinstance(environment, str) else None


# -- what replies carry ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Done:
    """The reply of an operation that answers nothing but that it was done."""


@dataclass(frozen=True, slots=True)
class AutoscalerSettings:
    """A pool's autoscaler settings, as ``update_autoscaler`` leaves them."""

    min_containers: int
    max_containers: int
    buffer_containers: int
    scaledown_window: float


@dataclass(frozen=True, slots=True)
class AutoscalerChanges:
    """What ``update_autoscaler`` changes; ``None`` keeps the current setting."""

    min_containers: int | None = None
    max_containers: int | None = None
    buffer_containers: int | None = None
    scaledown_window: float | None = None


@dataclass(frozen=True, slots=True)
class PoolStats:
    """One pool, now, on every engine node together; ``nodes`` gives its containers by
    node. ``node`` and ``error`` name a node that could not be asked, and why.

    ``running_inputs`` are inputs a function is running; ``held_inputs`` adds those its
    containers took from the queue and will start as slots free up (a batch, or a
    prefetch): an input is queued, held or done."""

    queued_inputs: int = 0
    running_inputs: int = 0
    containers: int = 0
    pids: tuple[int, ...] = ()
    autoscaler: AutoscalerSettings | None = None
    # Messages and inputs the pool's containers received: their ratio is the batching.
    messages_received: int = 0
    inputs_received: int = 0
    node: str | None = None
    error: str | None = None
    held_inputs: int = 0
    nodes: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """Plain data for people and JSON (``get_current_stats``); unset parts left out."""
        data = dataclasses.asdict(self)
        data["pids"] = list(self.pids)
        return {key: value for key, value in data.items() if value is not None}


@dataclass(frozen=True, slots=True)
class ContainerInfo:
    """One container process, now. ``id`` is the one its log lines carry
    (``warren app logs``); ``app`` is the app's instance, ``function`` its pool's key (the
    function's tag, or ``tag.variant``), ``node`` the engine node it runs on. ``state``
    is ``starting`` (loading the app's code), ``ready`` or ``stopping``."""

    id: str
    app: str
    function: str
    node: str
    pid: int
    running_inputs: int
    held_inputs: int
    uptime: float  # seconds since it was started
    state: str

    def as_dict(self) -> dict[str, Any]:
        """Plain data for JSON (``warren container list --json``)."""
        return dataclasses.asdict(self)


@dataclass(frozen=True, slots=True)
class ContainerListing:
    """Containers, and the nodes that could not be asked for theirs (and why)."""

    containers: tuple[ContainerInfo, ...]
    errors: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class AppStatus:
    app: str
    environment: str
    instance: str
    ephemeral: bool
    deployed_at: float
    functions: dict[str, PoolStats]
    leader: str | None = None  # the engine node that leads the app's environment
    nodes: tuple[str, ...] = ()  # the engine nodes up, as the node asked sees them

    def as_dict(self) -> dict[str, Any]:
        """Plain data for people and JSON (``warren app status --json``)."""
        return {
            "app": self.app,
            "environment": self.environment,
            "instance": self.instance,
            "ephemeral": self.ephemeral,
            "deployed_at": self.deployed_at,
            "functions": {key: stats.as_dict() for key, stats in self.functions.items()},
            "leader": self.leader,
            "nodes": list(self.nodes),
        }


@dataclass(frozen=True, slots=True)
class AppRegistered:
    instance: str
    web_base: str  # where the engine serves the app's web endpoints ("" if nowhere)


@dataclass(frozen=True, slots=True)
class AppDeployed:
    status: AppStatus
    web_base: str


@dataclass(frozen=True, slots=True)
class AppStopped:
    inputs_answered: int  # inputs still queued, answered with an error


@dataclass(frozen=True, slots=True)
class AppListing:
    apps: tuple[AppStatus, ...]


@dataclass(frozen=True, slots=True)
class FunctionDescription:
    instance: str
    spec: FunctionSpec  # secrets by name or by keys, never their values
    web_base: str


@dataclass(frozen=True, slots=True)
class VariantDescription:
    instance: str
    spec: FunctionSpec


@dataclass(frozen=True, slots=True)
class SecretKeys:
    name: str
    keys: tuple[str, ...]  # a secret's values are never sent back


@dataclass(frozen=True, slots=True)
class SecretListing:
    secrets: tuple[SecretKeys, ...]


@dataclass(frozen=True, slots=True)
class NodeOffer:
    """What an engine node offers: cores, memory (MiB), GPUs by kind, its labels."""

    cpus: float
    memory: int
    gpus: dict[str, int]
    region: str | None
    cloud: str | None


@dataclass(frozen=True, slots=True)
class NodeInfo:
    name: str
    node: NodeOffer
    alive: bool
    pools: int  # the pools it runs
    environments: tuple[str, ...] = ()
    leads: tuple[str, ...] = ()  # the environments it leads


@dataclass(frozen=True, slots=True)
class NodeListing:
    nodes: tuple[NodeInfo, ...]


@dataclass(frozen=True, slots=True)
class DeadInput:
    """One message in an environment's dead-letter queue, as ``warren dead list`` and the
    dashboard show it.

    ``id`` is a hash of the message's body (:mod:`warren_engine.daemon.dead_letters`): the
    same whatever its position, across listings and engine restarts. ``app`` is the app
    instance whose queue it came from (a deployed app's name), ``function`` the pool's key
    (``tag`` or ``tag.variant``). What is inside the body (the invocation, the inputs'
    indexes, the crash count) is read only when this engine's key vouches for it
    (``verified``); ``copies`` counts identical messages, which are listed once.
    """

    id: str
    reason: str
    size: int  # bytes of the message's body
    verified: bool = False
    app: str | None = None
    function: str | None = None
    queue: str | None = None
    dead_at: float | None = None  # Unix time, when the dead letter recorded one
    invocation: str | None = None
    inputs: tuple[int, ...] = ()
    crashes: int = 0
    copies: int = 1

    def as_dict(self) -> dict[str, Any]:
        """Plain data for people and JSON (``warren dead list --json``, the dashboard)."""
        data = dataclasses.asdict(self)
        data["inputs"] = list(self.inputs)
        return data


@dataclass(frozen=True, slots=True)
class DeadInputListing:
    """The dead inputs among the first ``limit`` messages of a dead-letter queue;
    ``total`` counts every message it held when it was read (more past the limit)."""

    inputs: tuple[DeadInput, ...]
    total: int


@dataclass(frozen=True, slots=True)
class DeadArgument:
    """One input's arguments, as far as they can be shown without running code: their
    wire format and size, and for msgpack or JSON a ``repr`` of the decoded
    ``(args, kwargs)`` (shortened). A pickle is never loaded, so never shown."""

    index: int
    format: str  # "msgpack", "pickle", "json" or "unknown"
    size: int
    preview: str | None = None


@dataclass(frozen=True, slots=True)
class DeadInputDetail:
    """Everything ``warren dead show`` says of one dead input. ``problem`` says why this
    engine's key does not vouch for it (then it cannot be retried), ``expires_at`` when
    its signature stops being valid, ``stored_result`` whether its result goes to a
    spawned call's durable queue (else to a caller that may have left)."""

    input: DeadInput
    headers: dict[str, str]
    arguments: tuple[DeadArgument, ...] = ()
    message_id: str | None = None
    correlation_id: str | None = None
    reply_to: str | None = None
    type: str | None = None
    problem: str | None = None
    expires_at: float | None = None
    stored_result: bool = False

    def as_dict(self) -> dict[str, Any]:
        """Plain data for people and JSON (``warren dead show --json``)."""
        data = dataclasses.asdict(self)
        data["input"] = self.input.as_dict()
        data["arguments"] = [dataclasses.asdict(argument) for argument in self.arguments]
        return data


@dataclass(frozen=True, slots=True)
class DeadInputRetried:
    """A dead input sent back: ``queue`` is the function queue it went to."""

    id: str
    queue: str
    stored_result: bool


@dataclass(frozen=True, slots=True)
class DeadInputsPurged:
    purged: int  # messages removed from the dead-letter queue


# -- what requests carry -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AppBundle:
    """An app as a client ships it: its functions' specs and its code, pickled by value."""

    environment: str
    app: str
    instance: str  # the app's name if deployed, its run's instance if ephemeral
    functions: tuple[FunctionSpec, ...]
    code: bytes
    # The client's paths: on one machine containers import the user's modules from there.
    sys_path: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class PoolName:
    """One pool of a running app: a function, or one of its ``with_options`` variants."""

    environment: str
    instance: str
    tag: str
    variant: str | None = None


# -- the operations ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RegisterApp(Request[AppRegistered]):
    """Run an app ephemerally (``app.run()``) until its client stops it or its lease goes."""

    OP: ClassVar[str] = "register_app"
    REPLY: ClassVar[type[Any]] = AppRegistered
    bundle: AppBundle
    lease: str | None = None  # a queue the client holds while connected

    @property
    def scope(self) -> str | None:
        return self.bundle.environment


@dataclass(frozen=True, slots=True)
class DeployApp(Request[AppDeployed]):
    """Deploy (or redeploy) an app: it stays until stopped, across engine restarts."""

    OP: ClassVar[str] = "deploy_app"
    REPLY: ClassVar[type[Any]] = AppDeployed
    bundle: AppBundle

    @property
    def scope(self) -> str | None:
        return self.bundle.environment


@dataclass(frozen=True, slots=True)
class StopApp(Request[AppStopped]):
    OP: ClassVar[str] = "stop_app"
    REPLY: ClassVar[type[Any]] = AppStopped
    environment: str
    instance: str  # the app's name if deployed, its run's instance if ephemeral


@dataclass(frozen=True, slots=True)
class ListApps(Request[AppListing]):
    OP: ClassVar[str] = "list_apps"
    REPLY: ClassVar[type[Any]] = AppListing
    environment: str | None = None  # None: every environment's


@dataclass(frozen=True, slots=True)
class GetAppStatus(Request[AppStatus]):
    OP: ClassVar[str] = "app_status"
    REPLY: ClassVar[type[Any]] = AppStatus
    environment: str
    instance: str


@dataclass(frozen=True, slots=True)
class DescribeFunction(Request[FunctionDescription]):
    """Look a deployed function up by name (``Function.from_name``)."""

    OP: ClassVar[str] = "describe_function"
    REPLY: ClassVar[type[Any]] = FunctionDescription
    environment: str
    app: str
    tag: str


@dataclass(frozen=True, slots=True)
class EnsureVariant(Request[VariantDescription]):
    """The variant ``with_options`` makes of a function, created if new.

    ``options`` are spec field overrides as :func:`warren.options.check_options` makes
    them: a mapping, because the variant's name is the hash of exactly this mapping
    (:func:`warren.wire.spec.variant_name`) and ``FunctionSpec.with_overrides`` checks it.
    """

    OP: ClassVar[str] = "ensure_variant"
    REPLY: ClassVar[type[Any]] = VariantDescription
    environment: str
    instance: str
    tag: str
    options: dict[str, Any]


@dataclass(frozen=True, slots=True)
class FunctionStats(Request[PoolStats]):
    OP: ClassVar[str] = "function_stats"
    REPLY: ClassVar[type[Any]] = PoolStats
    pool: PoolName

    @property
    def scope(self) -> str | None:
        return self.pool.environment


@dataclass(frozen=True, slots=True)
class ListContainers(Request[ContainerListing]):
    """The containers of an environment's apps (of one app, by its name or instance), on
    every node: the node asked lists its own and asks the others for theirs."""

    OP: ClassVar[str] = "list_containers"
    REPLY: ClassVar[type[Any]] = ContainerListing
    environment: str
    app: str | None = None
    here_only: bool = False  # from a peer: the asked node's own, not the others'


@dataclass(frozen=True, slots=True)
class StopContainer(Request[ContainerInfo]):
    """Stop one container gracefully: it takes no more inputs, hands back those it has not
    started, finishes the running ones; its pool starts another if it needs one. The
    reply is the container as it was asked to stop; no such container is ``NotFoundError``."""

    OP: ClassVar[str] = "stop_container"
    REPLY: ClassVar[type[Any]] = ContainerInfo
    environment: str
    container: str
    here_only: bool = False


@dataclass(frozen=True, slots=True)
class UpdateAutoscaler(Request[AutoscalerSettings]):
    OP: ClassVar[str] = "update_autoscaler"
    REPLY: ClassVar[type[Any]] = AutoscalerSettings
    pool: PoolName
    changes: AutoscalerChanges

    @property
    def scope(self) -> str | None:
        return self.pool.environment


@dataclass(frozen=True, slots=True)
class CreateSecret(Request[Done]):
    OP: ClassVar[str] = "create_secret"
    REPLY: ClassVar[type[Any]] = Done
    environment: str
    name: str
    values: dict[str, str] = field(repr=False)  # never shown


@dataclass(frozen=True, slots=True)
class ListSecrets(Request[SecretListing]):
    OP: ClassVar[str] = "list_secrets"
    REPLY: ClassVar[type[Any]] = SecretListing
    environment: str


@dataclass(frozen=True, slots=True)
class DeleteSecret(Request[Done]):
    OP: ClassVar[str] = "delete_secret"
    REPLY: ClassVar[type[Any]] = Done
    environment: str
    name: str


@dataclass(frozen=True, slots=True)
class ListNodes(Request[NodeListing]):
    """The engine nodes up, as the node asked sees them (from their heartbeats)."""

    OP: ClassVar[str] = "list_nodes"
    REPLY: ClassVar[type[Any]] = NodeListing
    environment: str | None = None


@dataclass(frozen=True, slots=True)
class ListDeadInputs(Request[DeadInputListing]):
    """The environment's dead-letter queue, read without taking anything off it."""

    OP: ClassVar[str] = "list_dead_inputs"
    REPLY: ClassVar[type[Any]] = DeadInputListing
    environment: str
    limit: int = 1000


@dataclass(frozen=True, slots=True)
class ShowDeadInput(Request[DeadInputDetail]):
    OP: ClassVar[str] = "show_dead_input"
    REPLY: ClassVar[type[Any]] = DeadInputDetail
    environment: str
    id: str  # a DeadInput's id, or a prefix of it that names one


@dataclass(frozen=True, slots=True)
class RetryDeadInput(Request[DeadInputRetried]):
    """Send a dead input, as it was signed, to the current queue of its function, and take
    it off the dead-letter queue."""

    OP: ClassVar[str] = "retry_dead_input"
    REPLY: ClassVar[type[Any]] = DeadInputRetried
    environment: str
    id: str


@dataclass(frozen=True, slots=True)
class PurgeDeadInputs(Request[DeadInputsPurged]):
    OP: ClassVar[str] = "purge_dead_inputs"
    REPLY: ClassVar[type[Any]] = DeadInputsPurged
    environment: str


REQUESTS: Final[dict[str, type[Request[Any]]]] = {
    cls.OP: cls
    for cls in (
        RegisterApp,
        DeployApp,
        StopApp,
        ListApps,
        GetAppStatus,
        DescribeFunction,
        EnsureVariant,
        FunctionStats,
        ListContainers,
        StopContainer,
        UpdateAutoscaler,
        CreateSecret,
        ListSecrets,
        DeleteSecret,
        ListNodes,
        ListDeadInputs,
        ShowDeadInput,
        RetryDeadInput,
        PurgeDeadInputs,
    )
}

# Errors an engine may reply with, by name: the classes of warren.exceptions.
_ERRORS: Final[dict[str, type[exceptions.WarrenError]]] = {
    cls.__name__: cls
    for cls in vars(exceptions).values()
    if isinstance(cls, type) and issubclass(cls, exceptions.WarrenError)
}


# -- envelopes ----------------------------------------------------------------------------


def encode_request(request: Request[Any]) -> Envelope:
    return Envelope(KIND_CONTROL, packb([CONTROL_VERSION, request.OP, _fields(request)]))


def decode_request(body: bytes) -> Request[Any]:
    """The request a ``control`` envelope's body holds; ``DeserializationError`` if it
    is malformed, of another version, or names no operation."""
    try:
        version, op, fields = unpackb(body)
    except (ValueError, TypeError) as exc:
        raise DeserializationError(f"malformed control request: {exc}") from exc
    if version != CONTROL_VERSION:
        raise DeserializationError(f"control request version {version!r} is not supported")
    cls = REQUESTS.get(op) if isinstance(op, str) else None
    if cls is None:
        raise DeserializationError(f"unknown control operation {op!r}")
    return _decode_record(cls, fields, op)


def encode_reply(reply: object) -> Envelope:
    return Envelope(KIND_CONTROL_REPLY, packb([CONTROL_VERSION, _fields(reply), None, ""]))


def encode_failure(error: str, message: str) -> Envelope:
    """The reply to a request that raised: ``error`` names a class of warren.exceptions."""
    return Envelope(KIND_CONTROL_REPLY, packb([CONTROL_VERSION, None, error, message]))


def reply_type(request: Request[R]) -> type[R]:
    return cast("type[R]", request.REPLY)


def decode_reply(body: bytes, expected: type[R]) -> R:
    """The reply a ``control_reply`` body holds, or the engine's error raised here."""
    try:
        version, fields, error, message = unpackb(body)
    except (ValueError, TypeError) as exc:
        raise DeserializationError(f"malformed control reply: {exc}") from exc
    if version != CONTROL_VERSION:
        raise DeserializationError(f"control reply version {version!r} is not supported")
    if error is not None:
        raise failure(str(error), str(message))
    return _decode_record(expected, fields, f"reply {expected.__name__}")


def failure(error: str, message: str) -> Exception:
    """The exception an engine's error reply stands for."""
    kind = _ERRORS.get(error)
    if kind is not None:
        return kind(message)
    return exceptions.EngineError(f"{error}: {message}")


# -- typed fields -------------------------------------------------------------------------


def _fields(record: object) -> dict[str, Any]:
    # FunctionSpec.to_wire is its asdict too, so nested specs need nothing of their own.
    return dataclasses.asdict(cast(Any, record))


_HINTS: dict[type[Any], dict[str, tuple[Any, bool]]] = {}


def _hints(cls: type[Any]) -> dict[str, tuple[Any, bool]]:
    """A dataclass's fields: their types, and whether a message must carry them."""
    known = _HINTS.get(cls)
    if known is None:
        hints = typing.get_type_hints(cls)
        known = _HINTS[cls] = {
            field.name: (
                hints[field.name],
                field.default is dataclasses.MISSING
                and field.default_factory is dataclasses.MISSING,
            )
            for field in dataclasses.fields(cls)
        }
    return known


def _decode_record(cls: type[R], value: Any, where: str) -> R:
    if not isinstance(value, dict):
        raise DeserializationError(f"malformed {where}: expected a map of fields")
    hints = _hints(cls)
    unknown = set(value) - set(hints)
    if unknown:
        raise DeserializationError(f"malformed {where}: unknown fields {sorted(map(str, unknown))}")
    values = {}
    for name, (hint, required) in hints.items():
        if name in value:
            values[name] = _decode(hint, value[name], f"{where}.{name}")
        elif required:
            raise DeserializationError(f"malformed {where}: field {name!r} is missing")
    try:
        return cls(**values)
    except (TypeError, ValueError) as exc:
        raise DeserializationError(f"malformed {where}: {exc}") from exc


def _decode(hint: Any, value: Any, where: str) -> Any:
    if hint is Any:
        return value
    origin = typing.get_origin(hint)
    if origin is types.UnionType or origin is typing.Union:
        return _decode_optional(hint, value, where)
    if origin is tuple:
        item, _ = typing.get_args(hint)  # tuple[X, ...]
        if not isinstance(value, list):
            raise DeserializationError(f"malformed {where}: expected a list")
        return tuple(_decode(item, v, f"{where}[{i}]") for i, v in enumerate(value))
    if origin is dict:
        key_hint, value_hint = typing.get_args(hint)
        if not isinstance(value, dict):
            raise DeserializationError(f"malformed {where}: expected a map")
        return {
            _decode(key_hint, k, f"{where} key"): _decode(value_hint, v, f"{where}[{k!r}]")
            for k, v in value.items()
        }
    if hint is FunctionSpec:
        return _decode_spec(value, where)
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return _decode_record(hint, value, where)
    return _decode_scalar(hint, value, where)


def _decode_optional(hint: Any, value: Any, where: str) -> Any:
    options = [arg for arg in typing.get_args(hint) if arg is not types.NoneType]
    if len(options) != 1:
        raise TypeError(f"control fields are a type or an optional one, not {hint!r}")
    if value is None and len(typing.get_args(hint)) > 1:
        return None
    return _decode(options[0], value, where)


def _decode_spec(value: Any, where: str) -> FunctionSpec:
    if not isinstance(value, dict) or not all(isinstance(key, str) for key in value):
        raise DeserializationError(f"malformed {where}: expected a function spec")
    try:
        return FunctionSpec.from_wire(value)
    except (TypeError, ValueError) as exc:
        raise DeserializationError(f"malformed {where}: {exc}") from exc


def _decode_scalar(hint: Any, value: Any, where: str) -> Any:
    if hint not in (int, float, str, bytes, bool):
        raise TypeError(f"no wire form for control fields of type {hint!r}")
    # msgpack keeps no difference between 2 and 2.0 written by a Python int.
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, hint) and not (hint is not bool and isinstance(value, bool)):
        return value
    raise DeserializationError(
        f"malformed {where}: expected {hint.__name__}, got {type(value).__name__}"
    )


def record_fields(record: object) -> dict[str, Any]:
    """A wire dataclass as plain data (what control messages carry), for other typed
    messages built of the same parts (the engine nodes' registry entries and heartbeats)."""
    return _fields(record)


def decode_fields(cls: type[R], value: Any, where: str) -> R:
    """The ``cls`` that :func:`record_fields` made ``value`` of, every field checked;
    ``DeserializationError`` saying where it is malformed."""
    return _decode_record(cls, value, where)
