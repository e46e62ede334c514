"""The child process ``warren serve`` loads a script in: ``python -P -m warren_engine.app_packer``.

Each reload imports the script afresh in a new interpreter, so the new code's imports
(its neighbouring modules too) are read again and nothing of the previous version stays
behind. The child writes the app it found, packed (:class:`PackedApp`: specs and code
pickled by value), to the file it is given, and exits: 0 when it wrote it, 2 for a usage
error (no app, several apps), 1 when the script raised, with its traceback on stderr.
What the script prints while imported goes to the server's own terminal.

::

    python -P -m warren_engine.app_packer SCRIPT OUT
"""

from __future__ import annotations

import pickle
import sys
import traceback
from pathlib import Path

import click

from warren_engine.user_script import load_script, single_app


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m warren_engine.app_packer SCRIPT OUT", file=sys.stderr)
        return 2
    script, out = Path(argv[0]), Path(argv[1])
    try:
        packed = single_app(load_script(script), script).code().pack()
    except click.ClickException as exc:
        print(f"{script}: {exc.format_message()}", file=sys.stderr)
        return 2
    except BaseException:
        traceback.print_exc()
        return 1
    out.write_bytes(pickle.dumps(packed, protocol=pickle.HIGHEST_PROTOCOL))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
