"""The deployment files (compose.yaml and broker_config/) are consistent and least-privilege.

No broker and no Docker: the files are parsed and checked the way RabbitMQ and Compose
read them. RabbitMQ matches permission and policy regexes with ``re:run``, which
searches anywhere in the name, so the checks here use ``re.search``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import pathlib
import re
from typing import Any
from urllib.parse import urlsplit

import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
BROKER_CONFIG = ROOT / "broker_config"

SHA256_ALGORITHM = "rabbit_password_hashing_sha256"
SEVEN_DAYS_MS = 7 * 24 * 3600 * 1000

FUNCTION_QUEUE = "warren.v1.main.fn.app.f"
RESULT_QUEUE = "warren.v1.main.results.abc"


def _compose() -> dict[str, Any]:
    data = yaml.safe_load((ROOT / "compose.yaml").read_text())
    assert isinstance(data, dict)
    return data


def _service(name: str) -> dict[str, Any]:
    service = _compose()["services"][name]
    assert isinstance(service, dict)
    return service


def _definitions() -> dict[str, Any]:
    data = json.loads((BROKER_CONFIG / "definitions.json").read_text())
    assert isinstance(data, dict)
    return data


def _permissions(user: str) -> list[dict[str, str]]:
    found = [p for p in _definitions()["permissions"] if p["user"] == user]
    assert found, f"no permissions for {user}"
    return found


def _permits(regex: str, name: str) -> bool:
    # RabbitMQ treats an empty permission as "^$", i.e. nothing.
    return re.search(regex or "^$", name) is not None


def _rabbitmq_conf() -> dict[str, str]:
    settings = {}
    for line in (BROKER_CONFIG / "rabbitmq.conf").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            settings[key.strip()] = value.strip()
    return settings


def _hash_matches(password_hash: str, password: str) -> bool:
    raw = base64.b64decode(password_hash)
    salt, digest = raw[:4], raw[4:]
    return hashlib.sha256(salt + password.encode()).digest() == digest


def _published_ports(service: dict[str, Any]) -> set[tuple[int, int]]:
    """(host port, container port) pairs, from short ("[ip:]host:container") or long syntax."""
    ports = set()
    for entry in service.get("ports", []):
        if isinstance(entry, dict):
            ports.add((int(entry["published"]), int(entry["target"])))
            continue
        parts = str(entry).split("/")[0].split(":")
        if len(parts) >= 2:
            ports.add((int(parts[-2]), int(parts[-1])))
    return ports


def _bind_mounts(service: dict[str, Any]) -> dict[str, str]:
    """Container path -> host path, for short-syntax bind mounts of relative paths."""
    mounts = {}
    for entry in service.get("volumes", []):
        source, target = str(entry).split(":")[:2]
        if source.startswith("."):
            mounts[target] = source
    return mounts


# compose.yaml


def test_compose_pins_the_rabbitmq_image() -> None:
    image = _service("rabbitmq")["image"]
    name, _, tag = image.partition(":")

    assert name == "rabbitmq"
    assert tag, f"{image} has no tag"
    assert not tag.startswith("latest")
    assert re.search(r"\d+\.\d+\.\d+", tag), f"{image} is not pinned to a full version"


def test_compose_publishes_amqp_and_management_ports() -> None:
    ports = _published_ports(_service("rabbitmq"))

    assert (5672, 5672) in ports
    assert (15672, 15672) in ports


def test_compose_mounts_the_broker_config_files_that_exist() -> None:
    mounts = _bind_mounts(_service("rabbitmq"))

    for name in ("rabbitmq.conf", "definitions.json", "enabled_plugins"):
        source = mounts[f"/etc/rabbitmq/{name}"]
        assert (ROOT / source).resolve() == BROKER_CONFIG / name
        assert (BROKER_CONFIG / name).is_file()


def test_compose_keeps_broker_data_in_a_named_volume() -> None:
    volumes = _service("rabbitmq")["volumes"]

    assert "rabbitmq-data:/var/lib/rabbitmq" in volumes
    assert "rabbitmq-data" in _compose()["volumes"]


def test_compose_checks_broker_health_with_rabbitmq_diagnostics() -> None:
    test = _service("rabbitmq")["healthcheck"]["test"]
    command = " ".join(test) if isinstance(test, list) else test

    assert "rabbitmq-diagnostics" in command
    assert "ping" in command


def test_compose_engine_waits_for_a_healthy_broker_and_runs_warren_engine() -> None:
    engine = _service("engine")
    depends_on = engine["depends_on"]
    command = engine["command"]
    command = " ".join(command) if isinstance(command, list) else command

    assert "rabbitmq" in depends_on
    assert depends_on["rabbitmq"]["condition"] == "service_healthy"
    assert "warren engine" in command


def test_compose_engine_and_container_credentials_match_their_users_hashes() -> None:
    # Given the engine's and its containers' broker URLs in compose.yaml
    environment = _service("engine")["environment"]
    users = {u["name"]: u for u in _definitions()["users"]}
    for variable, user in (
        ("WARREN_BROKER_URL", "warren-engine"),
        ("WARREN_CONTAINER_BROKER_URL", "warren-container"),
    ):
        url = urlsplit(environment[variable])
        # Then each user exists and the URL's password matches its hash
        assert url.hostname == "rabbitmq"
        assert url.username == user
        assert url.password is not None
        assert _hash_matches(users[user]["password_hash"], url.password)


def test_compose_engine_serves_web_endpoints_on_a_published_port() -> None:
    engine = _service("engine")
    port = int(engine["environment"]["WARREN_HTTP_PORT"])
    assert engine["environment"]["WARREN_HTTP_HOST"] == "0.0.0.0"
    assert (port, port) in _published_ports(engine)


def test_compose_engine_knows_the_brokers_consumer_timeout_and_needs_a_key() -> None:
    environment = _service("engine")["environment"]
    consumer_timeout_ms = int(_rabbitmq_conf()["consumer_timeout"])
    assert int(environment["WARREN_BROKER_CONSUMER_TIMEOUT"]) * 1000 == consumer_timeout_ms
    # Compose refuses to start without a key rather than run with an empty one.
    assert environment["WARREN_SECRET_KEY"].startswith("${WARREN_SECRET_KEY:?")


# definitions.json


def test_definitions_have_the_keys_import_definitions_expects() -> None:
    definitions = _definitions()

    for key in (
        "rabbit_version",
        "users",
        "vhosts",
        "permissions",
        "policies",
        "parameters",
        "global_parameters",
        "queues",
        "exchanges",
        "bindings",
    ):
        assert key in definitions, key


def test_definitions_leave_topology_to_the_engine() -> None:
    definitions = _definitions()

    assert definitions["queues"] == []
    assert definitions["exchanges"] == []
    assert definitions["bindings"] == []


def test_definitions_include_a_vhost_per_environment_example() -> None:
    vhosts = {v["name"] for v in _definitions()["vhosts"]}

    assert vhosts == {"/", "warren-staging"}


def test_users_have_salted_sha256_password_hashes() -> None:
    users = _definitions()["users"]

    assert {u["name"] for u in users} == {
        "warren-admin",
        "warren-engine",
        "warren-container",
        "warren-client",
    }
    for user in users:
        assert user["hashing_algorithm"] == SHA256_ALGORITHM
        raw = base64.b64decode(user["password_hash"], validate=True)
        assert len(raw) == 4 + 32, user["name"]


def test_placeholder_passwords_are_the_documented_ones() -> None:
    users = {u["name"]: u for u in _definitions()["users"]}
    readme = (BROKER_CONFIG / "README.md").read_text()

    for name, password in (
        ("warren-admin", "change-me-admin"),
        ("warren-engine", "change-me-engine"),
        ("warren-container", "change-me-container"),
        ("warren-client", "change-me-client"),
    ):
        assert _hash_matches(users[name]["password_hash"], password), name
        assert password in readme


def test_only_the_admin_user_has_tags() -> None:
    tags = {u["name"]: list(u["tags"]) for u in _definitions()["users"]}

    assert tags == {
        "warren-admin": ["administrator"],
        "warren-engine": [],
        "warren-container": [],
        "warren-client": [],
    }


def test_every_permission_references_an_existing_user_and_vhost() -> None:
    definitions = _definitions()
    users = {u["name"] for u in definitions["users"]}
    vhosts = {v["name"] for v in definitions["vhosts"]}

    for permission in definitions["permissions"]:
        assert permission["user"] in users
        assert permission["vhost"] in vhosts
        for kind in ("configure", "write", "read"):
            re.compile(permission[kind])


def test_every_user_has_permissions_in_every_vhost() -> None:
    definitions = _definitions()
    granted = {(p["user"], p["vhost"]) for p in definitions["permissions"]}

    for user in definitions["users"]:
        for vhost in definitions["vhosts"]:
            assert (user["name"], vhost["name"]) in granted


# enabled_plugins and rabbitmq.conf


def test_enabled_plugins_is_an_erlang_list_with_management() -> None:
    text = (BROKER_CONFIG / "enabled_plugins").read_text().strip()

    assert text.endswith(".")
    assert "rabbitmq_management" in text
    assert "rabbitmq_prometheus" in text


def test_rabbitmq_conf_loads_definitions_and_raises_consumer_timeout() -> None:
    settings = _rabbitmq_conf()

    assert settings["load_definitions"] == "/etc/rabbitmq/definitions.json"
    assert int(settings["consumer_timeout"]) == SEVEN_DAYS_MS


def test_rabbitmq_conf_sets_no_default_user() -> None:
    settings = _rabbitmq_conf()

    assert "default_user" not in settings
    assert "default_pass" not in settings


def test_rabbitmq_conf_sets_listeners_limits_and_heartbeat() -> None:
    settings = _rabbitmq_conf()

    assert settings["listeners.tcp.default"] == "5672"
    assert settings["management.tcp.port"] == "15672"
    assert settings["vm_memory_high_watermark.relative"] == "0.6"
    assert settings["disk_free_limit.absolute"] == "2GB"
    assert settings["heartbeat"] == "30"
