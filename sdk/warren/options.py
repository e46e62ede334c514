"""Function options: what ``@app.function(...)`` and ``f.with_options(...)`` accept.

Each option is checked and turned into the plain fields of a
:class:`~warren.wire.protocol.FunctionSpec` here, on the caller's side, so that a bad value
raises ``InvalidError`` before anything is sent. ``with_options`` produces a set of
*overrides* (only what was given); :func:`variant_name` names the variant that set
of overrides makes, the same on every machine, so two identical option sets share
one variant. Pure; no I/O.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from warren.exceptions import InvalidError
from warren.secrets import Secret, check_env_name
from warren.volumes import CloudBucketMount, Volume
from warren.wire import naming
from warren.wire.retries import Retries
from warren.wire.spec import PLAIN_OPTIONS


def _pair(name: str, value: Any, cast: type) -> list[Any] | None:
    """``x`` or ``(request, limit)``: as ``[request, limit]`` (limit None: no limit)."""
    if value is None:
        return None
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


def _env(value: Any) -> dict[str, str | None]:
    if not isinstance(value, Mapping):
        raise InvalidError(f"env must be a dict of names to strings (or None), got {value!r}")
    for key, item in value.items():
        check_env_name(key)
        if item is not None and not isinstance(item, str):
            raise InvalidError(f"env[{key!r}] must be a string or None, got {item!r}")
    return dict(value)


def _secrets(value: Any) -> list[dict[str, Any]]:
    if not isinstance(value, Sequence) or isinstance(value, str):
        raise InvalidError("secrets must be a list of warren.Secret")
    for secret in value:
        if not isinstance(secret, Secret):
            raise InvalidError(f"secrets must be a list of warren.Secret, got {secret!r}")
    return [secret.to_wire() for secret in value]


def _volumes(value: Any) -> dict[str, dict[str, Any]]:
    if not isinstance(value, Mapping):
        raise InvalidError("volumes must be a dict of absolute paths to warren.Volume")
    checked = {}
    for path, volume in value.items():
        if isinstance(volume, CloudBucketMount):
            raise volume.not_supported()
        if not isinstance(volume, Volume):
            raise InvalidError(f"volumes[{path!r}] must be an warren.Volume, got {volume!r}")
        if not isinstance(path, str) or not path.startswith("/") or path.rstrip("/") == "":
            raise InvalidError(f"a volume's mount path must be absolute (not '/'), got {path!r}")
        checked[path.rstrip("/")] = volume.to_wire()
    return checked


def _labels(name: str, value: Any) -> list[str]:
    values = [value] if isinstance(value, str) else value
    if not isinstance(values, Sequence) or not values:
        raise InvalidError(f"{name} must be a string or a non-empty list of strings")
    return [naming.check_part(name, v) for v in values]


def _as_field(name: str, value: Any) -> dict[str, Any]:
    return {name: value}


def _retries(value: Any) -> dict[str, Any]:
    policy = Retries.coerce(value)
    return {
        "max_retries": policy.max_retries,
        "backoff_coefficient": policy.backoff_coefficient,
        "initial_delay": policy.initial_delay,
        "max_delay": policy.max_delay,
    }


def _gpu(value: Any) -> str:
    parse_gpu(value)
    return str(value)


# Each option, and the spec fields it becomes.
_OPTIONS: dict[str, Callable[[Any], dict[str, Any]]] = {
    **{name: functools.partial(_as_field, name) for name in PLAIN_OPTIONS},
    "retries": _retries,
    "cpu": lambda value: {"cpu": _pair("cpu", value, float)},
    "memory": lambda value: {"memory": _pair("memory", value, int)},
    "gpu": lambda value: {"gpu": _gpu(value)},
    "env": lambda value: {"env": _env(value)},
    "secrets": lambda value: {"secrets": _secrets(value)},
    "volumes": lambda value: {"volumes": _volumes(value)},
    "region": lambda value: {"region": _labels("region", value)},
    "cloud": lambda value: {"cloud": _labels("cloud", value)},
}


def check_options(**options: Any) -> dict[str, Any]:
    """The given (non-None) options as spec fields; raises ``InvalidError`` on bad ones."""
    unknown = set(options) - set(_OPTIONS)
    if unknown:
        raise InvalidError(f"unknown options: {', '.join(sorted(unknown))}")
    fields: dict[str, Any] = {}
    for name, value in options.items():
        if value is not None:
            fields.update(_OPTIONS[name](value))
    return fields
