"""``Volume``: a named directory the engine keeps, mounted into functions at a path.

``@app.function(volumes={"/data": warren.Volume.from_name("cache", create_if_missing=True)})``
makes ``/data`` in the function refer to the volume's directory on the engine node
(``<state dir>/volumes/<environment>/<name>``): a bind mount in a mount namespace of
the container's own, or a symbolic link where the engine may not create namespaces;
``WARREN_VOLUME_<NAME>`` names the directory in any case (and is all there is where
the path cannot be made). Every container of the node sees the same files at once.
Several engine nodes must put their state directory's ``volumes/`` on shared storage
(NFS, a shared disk) for their functions to see one another's writes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from warren.exceptions import InvalidError
from warren.wire import naming
from warren.wire.spec import VolumeRef


@dataclass(frozen=True, slots=True)
class Volume:
    """A named, persistent directory managed by the engine (see the module doc)."""

    name: str
    create_if_missing: bool = False

    def __post_init__(self) -> None:
        naming.check_part("volume name", self.name)

    @classmethod
    def from_name(cls, name: str, *, create_if_missing: bool = False) -> Volume:
        return cls(name, create_if_missing)

    def ref(self) -> VolumeRef:
        """How a function's spec refers to this volume."""
        return VolumeRef(self.name, self.create_if_missing)


class CloudBucketMount:
    """Modal's object-store mount, which Warren does not have: passing one in
    ``volumes=`` raises ``InvalidError`` saying so."""

    def __init__(self, bucket_name: str, *args: Any, **kwargs: Any) -> None:
        self.bucket_name = bucket_name

    def not_supported(self) -> InvalidError:
        return InvalidError(
            f"CloudBucketMount({self.bucket_name!r}) is not supported by Warren: mount the "
            "bucket on the engine nodes yourself (s3fs, gcsfuse) and read it as a path, or "
            "use warren.Volume"
        )
