"""``@warren.web_endpoint``: serve a function over HTTP, JSON in and JSON out.

Put it under ``@app.function()``::

    @app.function()
    @warren.web_endpoint(method="POST")
    def add(a: int, b: int) -> dict[str, int]:
        return {"sum": a + b}

The engine's HTTP gateway serves it at ``f.web_url``. A GET takes the arguments from
the query string (converted to ``int``, ``float`` or ``bool`` when the parameter is
annotated so), a POST from a JSON object in the body. The return value goes back as
JSON. Pickle never crosses HTTP: the container encodes the result as JSON itself.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, TypeVar

from warren.exceptions import InvalidError
from warren.wire.spec import WEB_METHODS, ParamKind, WebEndpoint, WebMethod, WebParam

F = TypeVar("F", bound=Callable[..., Any])

ATTRIBUTE = "__warren_web__"
# Annotations the gateway converts a query string value to.
CONVERTIBLE: dict[str, ParamKind] = {"int": "int", "float": "float", "bool": "bool", "str": "str"}


def web_endpoint(*, method: str = "GET") -> Callable[[F], F]:
    """Serve the function (decorated by ``@app.function()`` above this) over HTTP."""
    verb = _method(method)

    def mark(fn: F) -> F:
        if not callable(fn) or hasattr(fn, "spec"):
            raise InvalidError(
                "put @warren.web_endpoint(...) below @app.function(), on the function"
            )
        setattr(fn, ATTRIBUTE, describe_parameters(fn, verb))
        return fn

    return mark


def _method(method: Any) -> WebMethod:
    for known in WEB_METHODS:
        if isinstance(method, str) and method.upper() == known:
            return known
    raise InvalidError(f"method must be one of {WEB_METHODS}, got {method!r}")


def describe_parameters(fn: Callable[..., Any], method: WebMethod = "GET") -> WebEndpoint:
    """What the gateway checks requests against: names, which are required, their types."""
    params: list[WebParam] = []
    required: list[str] = []
    var_keyword = False
    for parameter in inspect.signature(fn).parameters.values():
        if parameter.kind is inspect.Parameter.VAR_KEYWORD:
            var_keyword = True
            continue
        if parameter.kind is inspect.Parameter.VAR_POSITIONAL:
            continue
        if parameter.kind is inspect.Parameter.POSITIONAL_ONLY:
            raise InvalidError(f"a web endpoint takes keyword arguments: {parameter.name!r} is not")
        annotation = parameter.annotation
        name = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", "")
        params.append(WebParam(parameter.name, CONVERTIBLE.get(name, "")))
        if parameter.default is inspect.Parameter.empty:
            required.append(parameter.name)
    return WebEndpoint(method, tuple(params), tuple(required), var_keyword)
