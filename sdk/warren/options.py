"""Function options: what ``@app.function(...)`` and ``f.with_options(...)`` accept.

The options are declared once, in :class:`FunctionOptions`: each key's name and type is
what both signatures accept (``**options: Unpack[...]``), and its ``Annotated`` metadata
is the :class:`Option` that checks a value and turns it into the fields of a
:class:`~warren.wire.spec.FunctionSpec`, on the caller's side, so that a bad value raises
``InvalidError`` before anything is sent. An option not given (or given as ``None``)
leaves the spec's default, or, in ``with_options``, the original's value. The options
of the base class :class:`VariantOptions` are those a variant may change; the spec
checks the fields they become against its own list (``OVERRIDABLE``) when the engine
makes the variant. Pure; no I/O.
"""

# No `from __future__ import annotations`: the option table is read from the evaluated
# annotations of the TypedDicts below.

import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, TypedDict

from warren.exceptions import InvalidError
from warren.secrets import Secret, check_env_name
from warren.volumes import CloudBucketMount, Volume
from warren.wire import naming
from warren.wire.retries import Retries
from warren.wire.spec import VolumeRef, parse_gpu


@dataclass(frozen=True, slots=True)
class Option:
    """How one option's value is checked and becomes spec fields."""

    to_fields: Callable[[Any], dict[str, Any]]


def _spec_field(name: str) -> Option:
    """An option that is a spec field of the same name, checked by ``FunctionSpec``."""
    return Option(lambda value: {name: value})


def _pair(name: str, value: Any, cast: type) -> list[Any]:
    """``x`` or ``(request, limit)``: as ``[request, limit]`` (limit None: no limit)."""
    if isinstance(value, tuple | list):
        if len(value) != 2:
            raise InvalidError(f"{name} must be a number or a (request, limit) pair")
        request, limit = value
    else:
        request, limit = value, None
    for part in (request, limit):
        if part is None:
            continue
        if not isinstance(part, int | float) or isinstance(part, bool) or part <= 0:
            raise InvalidError(f"{name} must be a positive number or a (request, limit) pair")
    if limit is not None and limit < request:
        raise InvalidError(f"{name}: the limit ({limit}) is below the request ({request})")
    return [cast(request), None if limit is None else cast(limit)]


def _cpu(value: Any) -> dict[str, Any]:
    return {"cpu": _pair("cpu", value, float)}


def _memory(value: Any) -> dict[str, Any]:
    return {"memory": _pair("memory", value, int)}


def _gpu(value: Any) -> dict[str, Any]:
    parse_gpu(value)
    return {"gpu": str(value)}


def _env(value: Any) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise InvalidError(f"env must be a dict of names to strings (or None), got {value!r}")
    for key, item in value.items():
        check_env_name(key)
        if item is not None and not isinstance(item, str):
            raise InvalidError(f"env[{key!r}] must be a string or None, got {item!r}")
    return {"env": dict(value)}


def _secrets(value: Any) -> dict[str, Any]:
    if not isinstance(value, Sequence) or isinstance(value, str):
        raise InvalidError("secrets must be a list of warren.Secret")
    for secret in value:
        if not isinstance(secret, Secret):
            raise InvalidError(f"secrets must be a list of warren.Secret, got {secret!r}")
    return {"secrets": tuple(secret.ref() for secret in value)}


def _volumes(value: Any) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise InvalidError("volumes must be a dict of absolute paths to warren.Volume")
    checked: dict[str, VolumeRef] = {}
    for path, volume in value.items():
        if isinstance(volume, CloudBucketMount):
            raise volume.not_supported()
        if not isinstance(volume, Volume):
            raise InvalidError(f"volumes[{path!r}] must be an warren.Volume, got {volume!r}")
        if not isinstance(path, str) or not path.startswith("/") or path.rstrip("/") == "":
            raise InvalidError(f"a volume's mount path must be absolute (not '/'), got {path!r}")
        checked[path.rstrip("/")] = volume.ref()
    return {"volumes": checked}


def _labels(name: str) -> Option:
    def to_fields(value: Any) -> dict[str, Any]:
        values = [value] if isinstance(value, str) else value
        if not isinstance(values, Sequence) or not values:
            raise InvalidError(f"{name} must be a string or a non-empty list of strings")
        return {name: [naming.check_part(name, v) for v in values]}

    return Option(to_fields)


def _retries(value: Any) -> dict[str, Any]:
    policy = Retries.coerce(value)
    return {
        "max_retries": policy.max_retries,
        "backoff_coefficient": policy.backoff_coefficient,
        "initial_delay": policy.initial_delay,
        "max_delay": policy.max_delay,
    }


class VariantOptions(TypedDict, total=False):
    """The options ``f.with_options(...)`` may change (``@app.function`` takes them too)."""

    max_containers: Annotated[int | None, _spec_field("max_containers")]
    buffer_containers: Annotated[int | None, _spec_field("buffer_containers")]
    scaledown_window: Annotated[float | None, _spec_field("scaledown_window")]
    timeout: Annotated[float | None, _spec_field("timeout")]
    retries: Annotated[int | Retries | None, Option(_retries)]
    cpu: Annotated[float | tuple[float, float] | None, Option(_cpu)]
    memory: Annotated[int | tuple[int, int] | None, Option(_memory)]
    gpu: Annotated[str | None, Option(_gpu)]
    env: Annotated[dict[str, str | None] | None, Option(_env)]
    secrets: Annotated[Sequence[Secret] | None, Option(_secrets)]
    volumes: Annotated[dict[str, Volume] | None, Option(_volumes)]
    region: Annotated[str | Sequence[str] | None, _labels("region")]
    cloud: Annotated[str | Sequence[str] | None, _labels("cloud")]


class FunctionOptions(VariantOptions, total=False):
    """Every option of ``@app.function(...)``: the variant ones and these, fixed per deploy."""

    max_inputs: Annotated[int, _spec_field("max_inputs")]
    min_containers: Annotated[int, _spec_field("min_containers")]


def _table(options: type) -> dict[str, Option]:
    hints = typing.get_type_hints(options, include_extras=True)
    return {name: hint.__metadata__[0] for name, hint in hints.items()}


OPTIONS = _table(FunctionOptions)
VARIANT_OPTIONS = frozenset(_table(VariantOptions))


def check_options(**options: Any) -> dict[str, Any]:
    """The given (non-None) options as spec fields; raises ``InvalidError`` on bad ones."""
    unknown = set(options) - set(OPTIONS)
    if unknown:
        raise InvalidError(f"unknown options: {', '.join(sorted(unknown))}")
    fields: dict[str, Any] = {}
    for name, value in options.items():
        if value is not None:
            fields.update(OPTIONS[name].to_fields(value))
    return fields


def check_variant_options(**options: Any) -> dict[str, Any]:
    """Like :func:`check_options`, refusing the options a variant cannot change."""
    fixed = (set(options) & set(OPTIONS)) - VARIANT_OPTIONS
    if fixed:
        raise InvalidError(
            f"with_options cannot change {', '.join(sorted(fixed))}: set it in @app.function()"
        )
    return check_options(**options)
