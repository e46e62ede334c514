"""``FunctionSpec``: how one function runs, as the engine needs to know it.

A spec travels from the client (built from the function's options, which
:mod:`warren.options` declares and turns into spec fields) to the engine, which sizes
and feeds the function's containers by it. A *variant* (``with_options``) is a spec
with some fields overridden; its name is a hash of those overrides, the same on every
machine. Pure; no I/O.

Three of its fields are small wire types of their own: a secret reference
(:data:`SecretRef`: by name, inline values, or a reply's redacted keys), a volume
reference (:class:`VolumeRef`, by mount path) and a web endpoint's description
(:class:`WebEndpoint`). Their wire form is what ``dataclasses.asdict`` makes of them, the
same plain maps the spec has always carried, so that a variant's name (the hash of its
overrides) does not depend on whether the overrides are typed or decoded.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from dataclasses import dataclass, field
from typing import Any, Literal, Self, TypeAlias, get_args

from warren.exceptions import DeserializationError, InvalidError
from warren.wire.codec import packb
from warren.wire.protocol import WIRE_VERSION
from warren.wire.retries import Retries

VARIANT_CHARS = 12
# The spec fields a variant may change: the engine refuses overrides of any other (the
# function's identity, its inputs per container and its warm pool are fixed per deploy).
OVERRIDABLE = frozenset(
    {"max_containers", "buffer_containers", "scaledown_window", "timeout"}
    | {"max_retries", "backoff_coefficient", "initial_delay", "max_delay"}
    | {"cpu", "memory", "gpu", "env", "secrets", "volumes", "region", "cloud"}
)


def check_autoscaling(
    min_containers: Any, max_containers: Any, buffer_containers: Any, scaledown_window: Any
) -> None:
    """Raise ``InvalidError`` unless these autoscaler settings make sense together."""
    values = {
        "min_containers": min_containers,
        "max_containers": max_containers,
        "buffer_containers": buffer_containers,
    }
    for name, value in values.items():
        if name == "max_containers" and value is None:
            continue  # the default: as many as the engine node has cores
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise InvalidError(f"{name} must be a non-negative integer, got {value!r}")
    if max_containers is None:
        pass
    elif max_containers < 1:
        raise InvalidError(f"max_containers must be at least 1, got {max_containers}")
    elif min_containers > max_containers:
        raise InvalidError(
            f"min_containers ({min_containers}) cannot exceed max_containers ({max_containers})"
        )
    window = scaledown_window
    if not isinstance(window, int | float) or isinstance(window, bool) or window < 0:
        raise InvalidError(f"scaledown_window must be >= 0 seconds, got {window!r}")


@dataclass(frozen=True, slots=True)
class NamedSecret:
    """A secret the engine stores (``Secret.from_name``): only its name travels."""

    name: str


@dataclass(frozen=True, slots=True)
class InlineSecret:
    """Values sent with the app (``Secret.from_dict``, ``from_dotenv``)."""

    values: dict[str, str]

    def __repr__(self) -> str:
        return f"InlineSecret(keys={sorted(self.values)})"  # never the values

    def redacted(self) -> RedactedSecret:
        return RedactedSecret(tuple(sorted(self.values)))


@dataclass(frozen=True, slots=True)
class RedactedSecret:
    """An inline secret as a reply to a client shows it: its keys, never its values."""

    keys: tuple[str, ...]


SecretRef: TypeAlias = NamedSecret | InlineSecret | RedactedSecret


@dataclass(frozen=True, slots=True)
class VolumeRef:
    """The engine-kept volume a function mounts at a path (``Volume.from_name``)."""

    name: str
    create_if_missing: bool = False


WebMethod: TypeAlias = Literal["GET", "POST"]
# What the gateway converts a query string value to ("": left a string, unannotated).
ParamKind: TypeAlias = Literal["int", "float", "bool", "str", ""]
WEB_METHODS: tuple[WebMethod, ...] = get_args(WebMethod)
PARAM_KINDS: tuple[ParamKind, ...] = get_args(ParamKind)


@dataclass(frozen=True, slots=True)
class WebParam:
    """One keyword parameter of a web endpoint, and the type its query value becomes."""

    name: str
    kind: ParamKind = ""


@dataclass(frozen=True, slots=True)
class WebEndpoint:
    """A function served over HTTP (``warren.web``): what the gateway checks requests by."""

    method: WebMethod
    params: tuple[WebParam, ...] = ()
    required: tuple[str, ...] = ()
    var_keyword: bool = False  # a ``**kwargs``: parameters of any other name are taken

    def kinds(self) -> dict[str, ParamKind]:
        return {param.name: param.kind for param in self.params}


@dataclass(frozen=True, slots=True)
class FunctionSpec:
    """How one function runs: what the engine needs to size and feed its containers."""

    tag: str
    is_async: bool
    # None: as many containers as the engine node has cores (see default_max_containers).
    max_containers: int | None = None
    max_inputs: int = 1
    timeout: float = 300.0
    min_containers: int = 0
    buffer_containers: int = 0
    scaledown_window: float = 60.0
    max_retries: int = 0
    backoff_coefficient: float = 2.0
    initial_delay: float = 1.0
    max_delay: float = 60.0
    # Resources and placement (see warren.options): [request, limit] pairs, labels, mounts.
    cpu: list[float | None] | None = None
    memory: list[int | None] | None = None
    gpu: str | None = None
    env: dict[str, str | None] = field(default_factory=dict, repr=False)
    secrets: tuple[SecretRef, ...] = field(default=(), repr=False)
    volumes: dict[str, VolumeRef] = field(default_factory=dict)  # by mount path
    region: list[str] = field(default_factory=list)
    cloud: list[str] = field(default_factory=list)
    # Set on a variant made by with_options: the name its queue and pool carry.
    variant: str | None = None
    # Set for a web endpoint (warren.web): its method and parameters.
    web: WebEndpoint | None = None
    version: int = WIRE_VERSION

    @property
    def retries(self) -> Retries:
        return Retries(
            self.max_retries, self.backoff_coefficient, self.initial_delay, self.max_delay
        )

    def __post_init__(self) -> None:
        _ = self.retries  # validates the retry policy
        for name in ("max_containers", "max_inputs"):
            value = getattr(self, name)
            if name == "max_containers" and value is None:
                continue
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise InvalidError(f"{name} must be a positive integer, got {value!r}")
        check_autoscaling(
            self.min_containers, self.max_containers, self.buffer_containers, self.scaledown_window
        )
        timeout = self.timeout
        if not isinstance(timeout, int | float) or isinstance(timeout, bool) or timeout <= 0:
            raise InvalidError(
                f"timeout must be a positive number of seconds, got {self.timeout!r}"
            )

    def to_wire(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_wire(cls, data: dict[str, Any]) -> Self:
        """The spec ``to_wire`` made; ``DeserializationError`` names a malformed part."""
        known = {f.name for f in dataclasses.fields(cls)}
        fields = {k: v for k, v in data.items() if k in known}
        if "secrets" in fields:
            fields["secrets"] = secrets_from_wire(fields["secrets"])
        if "volumes" in fields:
            fields["volumes"] = volumes_from_wire(fields["volumes"])
        if fields.get("web") is not None:
            fields["web"] = web_from_wire(fields["web"])
        return cls(**fields)

    def with_overrides(self, overrides: dict[str, Any]) -> Self:
        """The variant these overrides (checked by ``warren.options.check_options``) make.

        They may be typed (as ``check_options`` returns them) or plain (as the engine
        decodes them from a message): the variant is the same.
        """
        if not overrides:
            return self
        refused = set(overrides) - OVERRIDABLE
        if refused:
            raise InvalidError(f"options that cannot be overridden: {sorted(refused)}")
        plain = {key: _plain(value) for key, value in overrides.items()}
        return self.from_wire({**self.to_wire(), **plain, "variant": variant_name(overrides)})


def variant_name(overrides: dict[str, Any]) -> str:
    """The name of the variant these overrides make (stable across processes)."""
    canonical = packb(sorted((key, _canonical(value)) for key, value in overrides.items()))
    return "v" + hashlib.sha256(canonical).hexdigest()[: VARIANT_CHARS - 1]


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    return value


def _canonical(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _canonical(dataclasses.asdict(value))  # a typed override hashes as its wire form
    if isinstance(value, dict):
        return sorted((k, _canonical(v)) for k, v in value.items())
    if isinstance(value, list | tuple):
        return [_canonical(v) for v in value]
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)
    return value


def parse_gpu(value: Any) -> tuple[str, int] | None:
    """``"any"``, ``"H100"``, ``"A100:2"`` as ``(kind, count)``; None for no GPU."""
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise InvalidError(f"gpu must be a string like 'any', 'H100' or 'A100:2', got {value!r}")
    kind, _, count = value.partition(":")
    if not kind or (count and (not count.isdigit() or int(count) < 1)):
        raise InvalidError(f"gpu must be a string like 'any', 'H100' or 'A100:2', got {value!r}")
    return kind.upper() if kind.lower() != "any" else "any", int(count or 1)


# -- decoding the typed fields ------------------------------------------------------------


def _malformed(where: str, expected: str, value: Any) -> DeserializationError:
    return DeserializationError(f"malformed spec {where}: expected {expected}, got {value!r}")


def _string(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise _malformed(where, "a string", value)
    return value


def _strings(value: Any, where: str) -> tuple[str, ...]:
    if not isinstance(value, list | tuple):
        raise _malformed(where, "a list of strings", value)
    return tuple(_string(item, f"{where}[{i}]") for i, item in enumerate(value))


def _map(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict) or not all(isinstance(key, str) for key in value):
        raise _malformed(where, "a map with string keys", value)
    return value


def secrets_from_wire(value: Any) -> tuple[SecretRef, ...]:
    if not isinstance(value, list | tuple):
        kind = type(value).__name__  # not the value: it may hold a secret's values
        raise DeserializationError(f"malformed spec secrets: expected a list, got a {kind}")
    return tuple(_secret(item, f"secrets[{i}]") for i, item in enumerate(value))


def _secret(value: Any, where: str) -> SecretRef:
    # The messages never show the value itself: a malformed secret may still hold values.
    if not isinstance(value, dict):
        raise DeserializationError(f"malformed spec {where}: expected a map")
    kinds = [key for key in ("name", "values", "keys") if key in value]
    if len(kinds) != 1:
        raise DeserializationError(
            f"malformed spec {where}: expected exactly one of 'name', 'values' or 'keys', "
            f"got {sorted(map(str, value))}"
        )
    if kinds == ["name"]:
        return NamedSecret(_string(value["name"], f"{where}.name"))
    if kinds == ["keys"]:
        return RedactedSecret(_strings(value["keys"], f"{where}.keys"))
    values = value["values"]
    if not isinstance(values, dict) or not all(
        isinstance(key, str) and isinstance(item, str) for key, item in values.items()
    ):
        raise DeserializationError(f"malformed spec {where}.values: expected strings by name")
    return InlineSecret(dict(values))


def volumes_from_wire(value: Any) -> dict[str, VolumeRef]:
    return {
        path: _volume(item, f"volumes[{path!r}]") for path, item in _map(value, "volumes").items()
    }


def _volume(value: Any, where: str) -> VolumeRef:
    fields = _map(value, where)
    if "name" not in fields:
        raise DeserializationError(f"malformed spec {where}: the volume's 'name' is missing")
    create = fields.get("create_if_missing", False)
    if not isinstance(create, bool):
        raise _malformed(f"{where}.create_if_missing", "a boolean", create)
    return VolumeRef(_string(fields["name"], f"{where}.name"), create)


def web_from_wire(value: Any) -> WebEndpoint:
    fields = _map(value, "web")
    method = fields.get("method")
    if method not in WEB_METHODS:
        raise _malformed("web.method", f"one of {WEB_METHODS}", method)
    var_keyword = fields.get("var_keyword", False)
    if not isinstance(var_keyword, bool):
        raise _malformed("web.var_keyword", "a boolean", var_keyword)
    return WebEndpoint(
        method,
        _web_params(fields.get("params", ())),
        _strings(fields.get("required", ()), "web.required"),
        var_keyword,
    )


def _web_params(value: Any) -> tuple[WebParam, ...]:
    if isinstance(value, dict):
        # Specs recorded on disk before parameters were a list: {name: kind}.
        value = [{"name": name, "kind": kind} for name, kind in value.items()]
    if not isinstance(value, list | tuple):
        raise _malformed("web.params", "a list of parameters", value)
    params = []
    for i, item in enumerate(value):
        fields = _map(item, f"web.params[{i}]")
        kind = fields.get("kind", "")
        if kind not in PARAM_KINDS:
            raise _malformed(f"web.params[{i}].kind", f"one of {PARAM_KINDS}", kind)
        params.append(WebParam(_string(fields.get("name"), f"web.params[{i}].name"), kind))
    return tuple(params)
