"""What one part of a name may be: an environment, an app, a function, a node.

Each part ends up inside queue names (see :mod:`warren.wire.naming`), where dots
separate the parts; the settings check the environment with the same rule, and live
below the wire layer, so the rule lives here, below both.
"""

from __future__ import annotations

import re

from warren.exceptions import InvalidError

_PART = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,99}")


def check_part(kind: str, value: str) -> str:
    """Return ``value`` if it is usable as one part of a name, else raise ``InvalidError``."""
    if not isinstance(value, str) or not _PART.fullmatch(value):
        raise InvalidError(
            f"invalid {kind} {value!r}: use 1-100 letters, digits, '-' or '_', "
            "starting with a letter or digit"
        )
    return value
