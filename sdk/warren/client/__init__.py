"""The client machinery: the connection to the broker, and ``remote``, ``map``, ``spawn``.

Runs in the caller's process. Built on :mod:`warren.wire`; the user-facing layer
(``App``, ``Function``, ``FunctionCall``) is built on it.
"""
