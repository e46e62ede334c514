"""``python -m warren_engine``: the engine daemon (the same as ``warren engine``)."""

from warren_engine.cli import engine_main

if __name__ == "__main__":
    engine_main()
