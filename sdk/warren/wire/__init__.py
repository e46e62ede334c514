"""The wire layer: what clients, the engine and containers say to each other.

Codec, signing, message types, function specs, queue names and arguments, and the
AMQP connection they travel on. Shared by the SDK and the engine; it imports nothing
of the user-facing layer or the client machinery, only :mod:`warren.exceptions` and
:mod:`warren.config`.
"""
