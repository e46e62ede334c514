"""Named secrets an engine node keeps for its containers (``Secret.from_name``).

``warren secret create NAME KEY=VALUE ...`` reaches one engine node, which appends the
secret, sealed, to its environment's registry (:mod:`warren_engine.cluster.sealed_secrets`);
every node that reads it stores it, per environment, in
``<state dir>/secrets/<environment>/<name>.json``, readable by the engine's user only.
Containers get the values as environment variables when they start, so updating a
secret reaches the containers started afterwards. Values are never logged and never
in a status or list reply: listing shows names and keys.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
from pathlib import Path

import orjson
from warren.exceptions import NotFoundError
from warren.secrets import check_env_values
from warren.wire import naming
from warren.wire.control import SecretKeys
from warren.wire.spec import FunctionSpec, InlineSecret, NamedSecret, RedactedSecret, SecretRef


def write_atomically(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


class SecretStore:
    def __init__(self, state_dir: Path) -> None:
        self.root = state_dir / "secrets"

    def _path(self, environment: str, name: str) -> Path:
        return (
            self.root
            / naming.check_part("environment", environment)
            / f"{naming.check_part('secret name', name)}.json"
        )

    def put(self, environment: str, name: str, values: dict[str, str]) -> None:
        checked = check_env_values(values, f"secret {name!r}")
        write_atomically(self._path(environment, name), orjson.dumps(checked))  # mode 0600

    def get(self, environment: str, name: str) -> dict[str, str]:
        try:
            values: dict[str, str] = orjson.loads(self._path(environment, name).read_bytes())
        except FileNotFoundError:
            raise NotFoundError(
                f"secret {name!r} does not exist in environment {environment!r}: create it "
                f"with `warren secret create {name} KEY=VALUE ...`"
            ) from None
        return values

    def delete(self, environment: str, name: str) -> None:
        try:
            self._path(environment, name).unlink()
        except FileNotFoundError:
            raise NotFoundError(f"secret {name!r} does not exist in {environment!r}") from None

    def listing(self, environment: str) -> tuple[SecretKeys, ...]:
        """Names and keys (never values) of the environment's secrets."""
        folder = self.root / naming.check_part("environment", environment)
        return tuple(
            SecretKeys(path.stem, tuple(sorted(orjson.loads(path.read_bytes()))))
            for path in sorted(folder.glob("*.json"))
        )

    def environ(self, environment: str, spec: FunctionSpec) -> dict[str, str | None]:
        """What a container of ``spec`` finds in its environment: ``env``, then secrets."""
        environ: dict[str, str | None] = dict(spec.env)
        for secret in spec.secrets:
            match secret:
                case NamedSecret(name):
                    environ.update(self.get(environment, name))
                case InlineSecret(values):
                    environ.update(values)
                case RedactedSecret():
                    pass  # a reply's copy of an inline secret: it has no values to give
        return environ


def redacted(spec: FunctionSpec) -> FunctionSpec:
    """A spec for a reply to a client: secrets by name or by keys, never their values."""
    return dataclasses.replace(spec, secrets=tuple(_redacted(s) for s in spec.secrets))


def _redacted(secret: SecretRef) -> SecretRef:
    return secret.redacted() if isinstance(secret, InlineSecret) else secret
