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
from warren.config import Settings, redacted_url, split_urls

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


def _rabbitmq_conf(path: pathlib.Path = BROKER_CONFIG / "rabbitmq.conf") -> dict[str, str]:
    settings = {}
    for line in path.read_text().splitlines():
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

RABBIT_SERVICES = ("rabbitmq-1", "rabbitmq-2", "rabbitmq-3")
ENGINE_SERVICES = ("engine-1", "engine-2")


def test_compose_runs_three_rabbitmq_nodes_and_two_engines() -> None:
    services = set(_compose()["services"])

    assert services == {*RABBIT_SERVICES, *ENGINE_SERVICES}


def test_compose_pins_the_rabbitmq_image_the_same_on_every_node() -> None:
    images = {_service(name)["image"] for name in RABBIT_SERVICES}
    assert len(images) == 1
    (image,) = images
    name, _, tag = image.partition(":")

    assert name == "rabbitmq"
    assert tag, f"{image} has no tag"
    assert not tag.startswith("latest")
    assert re.fullmatch(r"3\.10\.\d+-management", tag), f"{image} is not a pinned 3.10"


def test_compose_publishes_each_nodes_amqp_port_and_one_management_port() -> None:
    ports = {name: _published_ports(_service(name)) for name in RABBIT_SERVICES}

    assert ports["rabbitmq-1"] == {(5672, 5672), (15672, 15672)}
    assert ports["rabbitmq-2"] == {(5673, 5672)}
    assert ports["rabbitmq-3"] == {(5674, 5672)}


def test_compose_rabbitmq_nodes_share_one_erlang_cookie_that_must_be_set() -> None:
    cookies = {_service(name)["environment"]["RABBITMQ_ERLANG_COOKIE"] for name in RABBIT_SERVICES}

    assert len(cookies) == 1
    # Compose refuses to start without a cookie rather than run with a guessable one.
    assert cookies.pop().startswith("${WARREN_ERLANG_COOKIE:?")


def test_compose_mounts_the_broker_config_files_that_exist_on_every_node() -> None:
    for service in RABBIT_SERVICES:
        mounts = _bind_mounts(_service(service))
        for target, name in (
            ("rabbitmq.conf", "rabbitmq.conf"),
            ("conf.d/20-cluster.conf", "cluster/rabbitmq.conf"),
            ("definitions.json", "definitions.json"),
            ("enabled_plugins", "enabled_plugins"),
        ):
            source = mounts[f"/etc/rabbitmq/{target}"]
            assert (ROOT / source).resolve() == BROKER_CONFIG / name, service
            assert (BROKER_CONFIG / name).is_file()


def test_compose_nodes_form_one_cluster_by_classic_config() -> None:
    # Given the cluster settings every node reads
    settings = _rabbitmq_conf(BROKER_CONFIG / "cluster" / "rabbitmq.conf")
    peers = {
        value for key, value in settings.items() if key.startswith("cluster_formation.classic_")
    }

    # Then the peers are exactly the compose services, by their fixed hostnames
    assert settings["cluster_formation.peer_discovery_backend"] == "classic_config"
    assert peers == {f"rabbit@{_service(name)['hostname']}" for name in RABBIT_SERVICES}
    assert {_service(name)["hostname"] for name in RABBIT_SERVICES} == set(RABBIT_SERVICES)
    assert settings["cluster_partition_handling"] == "pause_minority"
    # And the later nodes boot after the first, so that they join it
    for name in RABBIT_SERVICES[1:]:
        assert _service(name)["depends_on"]["rabbitmq-1"]["condition"] == "service_healthy"


def test_compose_keeps_each_nodes_data_in_a_named_volume_of_its_own() -> None:
    for name in RABBIT_SERVICES:
        assert f"{name}-data:/var/lib/rabbitmq" in _service(name)["volumes"]
        assert f"{name}-data" in _compose()["volumes"]


def test_compose_checks_broker_health_with_rabbitmq_diagnostics() -> None:
    for name in RABBIT_SERVICES:
        test = _service(name)["healthcheck"]["test"]
        command = " ".join(test) if isinstance(test, list) else test

        assert "rabbitmq-diagnostics" in command
        # The app running, not just the Erlang VM: a later node joins only a booted one.
        assert "check_running" in command


def test_compose_engines_wait_for_healthy_brokers_and_run_warren_engine() -> None:
    for name in ENGINE_SERVICES:
        engine = _service(name)
        depends_on = engine["depends_on"]
        command = engine["command"]
        command = " ".join(command) if isinstance(command, list) else command

        assert set(depends_on) == set(RABBIT_SERVICES)
        assert {d["condition"] for d in depends_on.values()} == {"service_healthy"}
        assert "warren engine" in command


def test_compose_engines_list_every_node_and_use_quorum_queues() -> None:
    names = set()
    for name in ENGINE_SERVICES:
        environment = _service(name)["environment"]
        names.add(environment["WARREN_NODE_NAME"])
        assert environment["WARREN_QUEUE_TYPE"] == "quorum"
        for variable in ("WARREN_BROKER_URL", "WARREN_CONTAINER_BROKER_URL"):
            hosts = [urlsplit(url).hostname for url in environment[variable].split(",")]
            assert hosts == list(RABBIT_SERVICES), (name, variable)
    assert names == set(ENGINE_SERVICES)


def test_compose_engine_and_container_credentials_match_their_users_hashes() -> None:
    # Given the engines' and their containers' broker URLs in compose.yaml
    users = {u["name"]: u for u in _definitions()["users"]}
    for name in ENGINE_SERVICES:
        environment = _service(name)["environment"]
        for variable, user in (
            ("WARREN_BROKER_URL", "warren-engine"),
            ("WARREN_CONTAINER_BROKER_URL", "warren-container"),
        ):
            for entry in environment[variable].split(","):
                url = urlsplit(entry)
                # Then each user exists and every URL's password matches its hash
                assert url.username == user
                assert url.password is not None
                assert _hash_matches(users[user]["password_hash"], url.password)


def test_compose_engine_urls_pass_warren_config() -> None:
    for name in ENGINE_SERVICES:
        environment = _service(name)["environment"]
        variables = ("WARREN_BROKER_URL", "WARREN_CONTAINER_BROKER_URL", "WARREN_QUEUE_TYPE")
        config = Settings.from_environment(
            {variable: environment[variable] for variable in variables}
        )
        # Warren's own parser reads one URL per broker node, and shows no password
        for url in (config.broker_url, config.container_broker_url):
            assert len(split_urls(url)) == len(RABBIT_SERVICES)
            assert "change-me" not in redacted_url(url)


def test_compose_engines_serve_web_endpoints_on_ports_of_their_own() -> None:
    published = []
    for name in ENGINE_SERVICES:
        engine = _service(name)
        port = int(engine["environment"]["WARREN_HTTP_PORT"])
        assert engine["environment"]["WARREN_HTTP_HOST"] == "0.0.0.0"
        ((host, target),) = _published_ports(engine)
        assert target == port
        published.append(host)
    assert len(set(published)) == len(published)


def test_compose_engines_know_the_brokers_consumer_timeout_and_need_a_key() -> None:
    consumer_timeout_ms = int(_rabbitmq_conf()["consumer_timeout"])
    for name in ENGINE_SERVICES:
        environment = _service(name)["environment"]
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
