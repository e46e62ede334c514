"""Broker URLs listing several nodes: parsed and checked once, tried in turn, and never
a password in a message or a repr."""

from __future__ import annotations

import socket
from collections.abc import Awaitable, Callable

import pytest
from aio_pika import RobustConnection
from aio_pika.exceptions import AMQPConnectionError
from warren.config import Settings, redacted_url, split_urls, validated_urls
from warren.exceptions import ConfigError
from warren.wire import broker_urls
from warren.wire.broker_urls import BrokerUrls, ClusterRobustConnection

THREE = "amqp://u:pw1@a:5701/,amqp://u:pw2@b:5702/, amqps://u:pw3@c/vh"
VARIABLES = ("WARREN_BROKER_URL", "WARREN_CONTAINER_BROKER_URL", "WARREN_FUNCTION_BROKER_URL")


def test_a_list_is_split_on_commas_and_stripped() -> None:
    assert split_urls(THREE) == [
        "amqp://u:pw1@a:5701/",
        "amqp://u:pw2@b:5702/",
        "amqps://u:pw3@c/vh",
    ]
    assert split_urls("amqp://a/,") == ["amqp://a/"]


def test_a_comma_inside_a_password_does_not_cut_the_url() -> None:
    assert split_urls("amqp://u:p,q@a/,amqp://u:r@b/") == ["amqp://u:p,q@a/", "amqp://u:r@b/"]
    assert redacted_url("amqp://u:p,q@a/,amqp://u:r@b/") == "amqp://u:***@a/,amqp://u:***@b/"


def test_a_url_after_one_without_a_path_is_an_entry_of_its_own() -> None:
    assert split_urls("amqp://a:5701,amqp://u:pw@b:5702") == ["amqp://a:5701", "amqp://u:pw@b:5702"]
    assert redacted_url("amqp://a,amqp://u:pw@b") == "amqp://a,amqp://u:***@b"


def test_every_password_of_a_list_is_redacted_url() -> None:
    shown = redacted_url(THREE)
    assert "pw1" not in shown and "pw2" not in shown and "pw3" not in shown
    assert shown == "amqp://u:***@a:5701/,amqp://u:***@b:5702/, amqps://u:***@c/vh"
    assert redacted_url("amqp://host/") == "amqp://host/"


@pytest.mark.parametrize("variable", VARIABLES)
def test_each_url_variable_takes_a_list(variable: str) -> None:
    settings = Settings.from_environment({variable: THREE})
    assert split_urls(getattr(settings, variable.removeprefix("WARREN_").lower())) == split_urls(
        THREE
    )
    assert all(secret not in repr(settings) for secret in ("pw1", "pw2", "pw3"))


@pytest.mark.parametrize(
    ("raw", "bad"),
    [
        ("amqp://u:pw1@a/,http://u:pw2@b/", "http://u:***@b/"),
        ("amqp://u:pw1@a/,amqp://u:pw2@b:99999/", "amqp://u:***@b:99999/"),
        ("amqp://u:pw1@a/,amqp://u:pw2@/", "amqp://u:***@/"),
        ("amqp://u:pw1@a/,u:pw2@b", "u:***@b"),
    ],
)
def test_a_bad_entry_is_named_with_every_password_redacted_url(raw: str, bad: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_environment({"WARREN_BROKER_URL": raw})
    message = str(caught.value)
    assert "WARREN_BROKER_URL" in message and bad in message and "entry 2 of 2" in message
    assert "pw1" not in message and "pw2" not in message


def test_an_empty_list_is_refused() -> None:
    with pytest.raises(ConfigError, match="WARREN_BROKER_URL"):
        validated_urls("WARREN_BROKER_URL", " , ")


def test_nodes_are_tried_from_the_one_that_worked_last() -> None:
    nodes = BrokerUrls(split_urls(THREE))
    assert list(nodes.in_turn()) == split_urls(THREE)
    nodes.worked("amqp://u:pw2@b:5702/")
    assert list(nodes.in_turn()) == [
        "amqp://u:pw2@b:5702/",
        "amqps://u:pw3@c/vh",
        "amqp://u:pw1@a:5701/",
    ]
    assert "pw" not in repr(nodes)


def test_a_node_that_could_not_serve_is_tried_last() -> None:
    # Given the second node took the connection last
    nodes = BrokerUrls(split_urls(THREE))
    nodes.worked("amqp://u:pw2@b:5702/")
    # When it cannot serve it (its session's setup failed)
    nodes.pass_over()
    # Then the next attempt starts after it, and comes back to it last
    assert list(nodes.in_turn()) == [
        "amqps://u:pw3@c/vh",
        "amqp://u:pw1@a:5701/",
        "amqp://u:pw2@b:5702/",
    ]


def test_the_aio_pika_connect_step_that_failover_overrides_still_exists() -> None:
    # ClusterRobustConnection moves to the next node by overriding RobustConnection's
    # one-attempt step, a private name: an aio-pika upgrade that renames it would
    # silently reconnect to one node only.
    step = "_RobustConnection__connect_transport"
    assert callable(getattr(RobustConnection, step))
    assert step in vars(ClusterRobustConnection)


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.mark.parametrize("connect", [broker_urls.connect, broker_urls.connect_robust])
async def test_no_node_answering_is_one_error_naming_every_node_and_no_password(
    connect: Callable[[str], Awaitable[object]],
) -> None:
    # Given two URLs on loopback ports nothing listens on
    raw = f"amqp://u:pw1@127.0.0.1:{_closed_port()}/,amqp://u:pw2@127.0.0.1:{_closed_port()}/"
    # When a connection is opened over them
    with pytest.raises(AMQPConnectionError) as caught:
        await connect(raw)
    # Then the error names both nodes, with their passwords masked
    message = str(caught.value)
    assert message.startswith("no broker node answered")
    assert message.count("u:***@127.0.0.1") == 2
    assert "pw1" not in message and "pw2" not in message
