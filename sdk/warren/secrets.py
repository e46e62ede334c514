"""``Secret``: environment variables for a function's containers that stay out of logs.

Three kinds, all given to ``@app.function(secrets=[...])`` or ``f.with_options(secrets=...)``:

* ``Secret.from_dict({"TOKEN": "..."})``: values from the caller, signed and sent with
  the app (readable by whoever can read the broker's messages: prefer ``from_name``
  for credentials);
* ``Secret.from_dotenv(".env")``: the same, read from a dotenv file;
* ``Secret.from_name("stripe")``: stored by the engine (``warren secret create stripe
  KEY=VALUE ...``) and resolved when a container starts; only its name travels.

A container sees the values as environment variables. Neither the engine's logs nor
``warren app status`` show them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from warren.exceptions import InvalidError
from warren.wire import naming
from warren.wire.spec import InlineSecret, NamedSecret, SecretRef

_ENV_NAME_FIRST = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz_")


def check_env_name(name: Any) -> str:
    if (
        not isinstance(name, str)
        or not name
        or name[0] not in _ENV_NAME_FIRST
        or not all(c.isalnum() or c == "_" for c in name)
    ):
        raise InvalidError(f"{name!r} is not a valid environment variable name")
    return name


def check_env_values(values: Mapping[str, Any], what: str) -> dict[str, str]:
    checked = {}
    for key, value in values.items():
        if not isinstance(value, str):
            raise InvalidError(f"{what}: the value of {key!r} must be a string")
        checked[check_env_name(key)] = value
    return checked


@dataclass(frozen=True, slots=True)
class Secret:
    """A set of environment variables for a function's containers (see the module doc)."""

    name: str | None = None
    values: dict[str, str] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if self.name is not None:
            naming.check_part("secret name", self.name)

    @classmethod
    def from_dict(cls, values: Mapping[str, str]) -> Secret:
        if not isinstance(values, Mapping):
            raise InvalidError(f"Secret.from_dict needs a mapping, got {type(values).__name__}")
        return cls(values=check_env_values(values, "Secret.from_dict"))

    @classmethod
    def from_name(cls, name: str) -> Secret:
        """A secret stored by the engine: ``warren secret create NAME KEY=VALUE ...``."""
        return cls(name=name)

    @classmethod
    def from_dotenv(cls, path: str | Path = ".env") -> Secret:
        """``KEY=VALUE`` lines of a dotenv file (``#`` comments, ``export`` and quotes allowed)."""
        try:
            text = Path(path).read_text()
        except OSError as exc:
            raise InvalidError(f"cannot read the dotenv file {str(path)!r}: {exc}") from exc
        return cls(values=check_env_values(parse_dotenv(text), f"dotenv file {str(path)!r}"))

    def ref(self) -> SecretRef:
        """How a function's spec refers to this secret."""
        return NamedSecret(self.name) if self.name is not None else InlineSecret(dict(self.values))

    def __repr__(self) -> str:
        if self.name is not None:
            return f"Secret.from_name({self.name!r})"
        return f"Secret(keys={sorted(self.values)})"


def parse_dotenv(text: str) -> dict[str, str]:
    values = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        line = line.removeprefix("export ").strip()
        key, sep, value = line.partition("=")
        if not sep:
            raise InvalidError(f"line {number} of the dotenv file is not KEY=VALUE")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[key.strip()] = value
    return values
