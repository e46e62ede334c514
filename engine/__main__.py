"""``python -m engine``: the engine daemon (the same as ``warren engine``)."""

from engine.cli import engine_main

if __name__ == "__main__":
    engine_main()
