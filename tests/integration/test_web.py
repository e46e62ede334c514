"""Web endpoints: functions answering a real HTTP client with JSON."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import pytest
import warren
from support import EngineProcess

app = warren.App("test-web")


@dataclass
class Sum:
    a: int
    b: int
    total: int


@app.function()
@warren.web_endpoint(method="GET")
def add(a: int, b: int = 1, verbose: bool = False) -> dict[str, Any]:
    return {"sum": a + b, "verbose": verbose}


@app.function()
@warren.web_endpoint(method="POST")
async def summarise(a: int, b: int) -> Sum:
    return Sum(a, b, a + b)


@app.function()
@warren.web_endpoint(method="POST")
def explode(message: str) -> None:
    raise RuntimeError(message)


@app.function()
def plain(x: int) -> int:
    return x


@pytest.fixture(scope="module", autouse=True)
def running(broker_url: str) -> Iterator[warren.App]:
    with app.run():
        yield app


async def request(method: str, url: str, **kwargs: Any) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as session, session.request(method, url, **kwargs) as reply:
        return reply.status, await reply.json()


def http(method: str, url: str, **kwargs: Any) -> tuple[int, Any]:
    return asyncio.run(request(method, url, **kwargs))


def test_a_get_endpoint_answers_with_the_functions_json_result() -> None:
    url = add.web_url
    target = add.target()
    assert url is not None
    assert urlsplit(url).path == f"/{target.environment}/{target.instance}/add"
    assert http("GET", url, params={"a": "2", "b": "40"}) == (200, {"sum": 42, "verbose": False})
    assert http("GET", url, params={"a": "1", "verbose": "true"}) == (
        200,
        {"sum": 2, "verbose": True},
    )


def test_a_post_endpoint_takes_a_json_body_and_returns_json() -> None:
    assert summarise.web_url is not None
    status, body = http("POST", summarise.web_url, json={"a": 3, "b": 4})
    assert (status, body) == (200, {"a": 3, "b": 4, "total": 7})


def test_bad_input_gets_a_4xx_with_a_json_error() -> None:
    assert summarise.web_url is not None and add.web_url is not None
    status, body = http(
        "POST", summarise.web_url, data=b"{not json", headers={"content-type": "application/json"}
    )
    assert status == 400 and "not valid JSON" in body["error"]
    status, body = http("POST", summarise.web_url, json=[1, 2])
    assert status == 422 and "JSON object" in body["error"]
    status, body = http("POST", summarise.web_url, json={"a": 1})
    assert status == 422 and "missing parameters: b" in body["error"]
    status, body = http("GET", add.web_url, params={"a": "two"})
    assert status == 422 and "must be int" in body["error"]
    status, body = http("GET", add.web_url, params={"a": "1", "c": "3"})
    assert status == 422 and "unexpected parameters: c" in body["error"]
    status, body = http("GET", summarise.web_url)
    assert status == 405


def test_an_exception_is_a_500_without_the_traceback() -> None:
    assert explode.web_url is not None
    status, body = http("POST", explode.web_url, json={"message": "secret detail"})
    assert status == 500
    assert body == {"error": "the function raised an exception"}


def test_web_url_is_none_for_other_functions_and_the_web_url_is_what_answers() -> None:
    assert plain.web_url is None
    assert add.web_url is not None and add.web_url.startswith("http://127.0.0.1:")


web_app = warren.App("test-web-deployed")


@web_app.function()
@warren.web_endpoint(method="GET")
def hello(name: str) -> str:
    return f"hello {name}"


def test_a_from_name_handle_hydrates_for_web_url_and_async_code_is_told_to_hydrate(
    engine: EngineProcess,
) -> None:
    web_app.deploy()
    handle = warren.Function.from_name("test-web-deployed", "hello")
    url = handle.web_url  # blocking code: looked up here
    assert url is not None
    assert http("GET", url, params={"name": "ada"}) == (200, "hello ada")

    async def in_a_service() -> str | None:
        fresh = warren.Function.from_name("test-web-deployed", "hello")
        with pytest.raises(warren.BlockingCallInLoopError, match=r"hydrate\.aio"):
            fresh.web_url  # noqa: B018
        await fresh.hydrate.aio()
        return fresh.web_url

    assert asyncio.run(in_a_service()) == url
