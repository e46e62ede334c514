"""The Kubernetes manifests (deploy/kubernetes/) are valid and hang together, offline.

No cluster and no kubectl: the kustomization is rendered here the way kustomize does for
the few features it uses (the test refuses any other), each core resource is validated
strictly (unknown fields are errors) against the Kubernetes schemas that
``kubernetes-validate`` ships, and the ``RabbitmqCluster`` against the schema of the
RabbitMQ Cluster Operator's CRD (``schemas/rabbitmqcluster-v1beta1.json``, taken from
the operator's v2.22.3 release; the API server's CEL rules in it are not checked). Then
the resources are checked against each other and against what the engine reads.
"""

from __future__ import annotations

import base64
import copy
import functools
import json
import re
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import kubernetes_validate
import pytest
import yaml
from warren.config import VARIABLES, Settings

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy" / "kubernetes"
CRD_SCHEMA = Path(__file__).parent / "schemas" / "rabbitmqcluster-v1beta1.json"
# The oldest Kubernetes the manifests are for, and a recent one.
KUBERNETES_VERSIONS = ("1.28.0", "1.33.0")
# What this file's rendering understands; anything else would render differently here.
KUSTOMIZATION_KEYS = {"apiVersion", "kind", "namespace", "resources", "secretGenerator", "images"}
WORKLOADS = {"Deployment", "StatefulSet"}
# Warren's pods, by their component label: engine nodes, all peers.
ENGINE = "engine"
# A name the Deployment's pods get (<deployment>-<template hash>-<suffix>).
POD_NAME = "warren-engine-5c7d9b8f6d-x7k2q"
AMQP_PORT = 5672

Resource = dict[str, Any]


# -- rendering ------------------------------------------------------------------------------


def _kustomization() -> dict[str, Any]:
    data = yaml.safe_load((DEPLOY / "kustomization.yaml").read_text())
    assert isinstance(data, dict)
    return data


def _env_file(path: Path) -> dict[str, str]:
    pairs = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            key, _, value = line.partition("=")
            pairs[key] = value
    return pairs


def _generated_secret(generator: dict[str, Any]) -> Resource:
    """A generated Secret, with its data from the example files (the real ones are not in
    git); named without kustomize's hash suffix, as the manifests name it."""
    data: dict[str, str] = {}
    for entry in generator.get("files", []):
        key, _, path = entry.partition("=")
        data[key] = "x" * 64  # a key: the file is the user's
        assert not (DEPLOY / path).exists() or _ignored(DEPLOY / path)
    for path in generator.get("envs", []):
        data.update(_env_file(DEPLOY / f"{path}.example"))
    encoded = {key: base64.b64encode(value.encode()).decode() for key, value in data.items()}
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": generator["name"]},
        "type": "Opaque",
        "data": encoded,
    }


def _with_image(resource: Resource, images: list[dict[str, str]]) -> Resource:
    for template in _pod_templates([resource]):
        for container in template["spec"]["containers"]:
            for image in images:
                if container["image"] == image["name"]:
                    container["image"] = f"{image.get('newName', image['name'])}:{image['newTag']}"
    return resource


@functools.cache
def _rendered() -> tuple[Resource, ...]:
    kustomization = _kustomization()
    assert set(kustomization) <= KUSTOMIZATION_KEYS, "the test cannot render these keys"
    resources: list[Resource] = []
    for name in kustomization["resources"]:
        resources.extend(doc for doc in yaml.safe_load_all((DEPLOY / name).read_text()) if doc)
    resources.extend(_generated_secret(g) for g in kustomization.get("secretGenerator", []))
    for resource in resources:
        if resource["kind"] != "Namespace":
            resource["metadata"]["namespace"] = kustomization["namespace"]
        _with_image(resource, kustomization.get("images", []))
    return tuple(resources)


def _resources() -> list[Resource]:
    return copy.deepcopy(list(_rendered()))


def _one(kind: str, name: str | None = None) -> Resource:
    found = [
        r
        for r in _resources()
        if r["kind"] == kind and (name is None or r["metadata"]["name"] == name)
    ]
    assert len(found) == 1, f"{len(found)} {kind} {name or ''}"
    return found[0]


def _pod_templates(resources: list[Resource]) -> Iterator[Resource]:
    for resource in resources:
        if resource["kind"] in WORKLOADS:
            yield resource["spec"]["template"]


def _warren_workload(component: str) -> Resource:
    found = [
        r
        for r in _resources()
        if r["kind"] in WORKLOADS
        and r["spec"]["template"]["metadata"]["labels"].get("app.kubernetes.io/component")
        == component
    ]
    assert len(found) == 1
    return found[0]


def _container(workload: Resource) -> dict[str, Any]:
    containers = workload["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    container = containers[0]
    assert isinstance(container, dict)
    return container


def _env(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {entry["name"]: entry for entry in container.get("env", [])}


def _config() -> dict[str, str]:
    data = _one("ConfigMap", "warren-config")["data"]
    assert isinstance(data, dict)
    return data


def _ignored(path: Path) -> bool:
    return subprocess.run(["git", "check-ignore", "-q", str(path)], cwd=ROOT).returncode == 0


# -- validation -----------------------------------------------------------------------------


def _closed(schema: Any) -> Any:
    """The CRD's schema with unknown fields refused, as the API server's strict field
    validation (kubectl's default) refuses them."""
    if isinstance(schema, list):
        return [_closed(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    closed = {key: _closed(value) for key, value in schema.items()}
    open_ended = "additionalProperties" in schema or schema.get(
        "x-kubernetes-preserve-unknown-fields"
    )
    if "properties" in schema and not open_ended:
        closed["additionalProperties"] = False
    return closed


@functools.cache
def _crd_validator() -> jsonschema.Draft202012Validator:
    schema = _closed(json.loads(CRD_SCHEMA.read_text())["schema"])
    return jsonschema.Draft202012Validator(schema)


def validate(resource: Resource, version: str) -> None:
    """Raise ``jsonschema.ValidationError`` if ``resource`` is not valid."""
    if resource["apiVersion"] == "rabbitmq.com/v1beta1":
        assert resource["kind"] == "RabbitmqCluster"
        _crd_validator().validate(resource)
    else:
        kubernetes_validate.validate(resource, version, strict=True)


def _name(resource: Resource) -> str:
    return f"{resource['kind']}/{resource['metadata']['name']}"


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_manifest_is_valid_against_the_schemas_of_its_kind(version: str) -> None:
    resources = _resources()
    kinds = {r["kind"] for r in resources}
    assert {"Deployment", "PodDisruptionBudget", "RabbitmqCluster"} <= kinds

    for resource in resources:
        try:
            validate(resource, version)
        except jsonschema.ValidationError as exc:
            pytest.fail(f"{_name(resource)}: {'.'.join(map(str, exc.path))}: {exc.message}")


def _set(path: str, value: Any) -> Callable[[Resource], None]:
    def mutate(resource: Resource) -> None:
        *parents, last = path.split(".")
        node: Any = resource
        for part in parents:
            node = node[int(part)] if part.isdigit() else node[part]
        node[int(last) if last.isdigit() else last] = value

    return mutate


BROKEN = {
    "a replica count that is not a number": (
        "Deployment",
        _set("spec.replicas", "one"),
    ),
    "a misspelt field of a container": (
        "Deployment",
        _set("spec.template.spec.containers.0.livenessprobe", {"periodSeconds": 10}),
    ),
    "a probe on a port that is neither a number nor a name": (
        "Deployment",
        _set("spec.template.spec.containers.0.readinessProbe.httpGet.port", [8000]),
    ),
    "a disruption budget whose selector is not an object": (
        "PodDisruptionBudget",
        _set("spec.selector", "app=warren"),
    ),
    "a negative number of RabbitMQ nodes": ("RabbitmqCluster", _set("spec.replicas", -3)),
    "a RabbitMQ field the operator does not know": (
        "RabbitmqCluster",
        _set("spec.rabbitmq.additionalConf", "heartbeat = 30"),
    ),
    "a RabbitMQ plugin name with a space": (
        "RabbitmqCluster",
        _set("spec.rabbitmq.additionalPlugins", ["rabbitmq shovel"]),
    ),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_a_broken_copy_of_a_manifest_fails_the_validation(case: str) -> None:
    kind, mutate = BROKEN[case]
    original = next(r for r in _resources() if r["kind"] == kind)
    validate(original, KUBERNETES_VERSIONS[0])
    broken = copy.deepcopy(original)
    mutate(broken)

    with pytest.raises(jsonschema.ValidationError):
        validate(broken, KUBERNETES_VERSIONS[0])


# -- the resources against each other -------------------------------------------------------


def _defined(kind: str) -> set[str]:
    return {r["metadata"]["name"] for r in _resources() if r["kind"] == kind}


def _references(template: Resource) -> Iterator[tuple[str, str, bool]]:
    """(kind, name, optional) of what a pod template refers to."""
    spec = template["spec"]
    yield "ServiceAccount", spec["serviceAccountName"], False
    for volume in spec.get("volumes", []):
        if "secret" in volume:
            yield "Secret", volume["secret"]["secretName"], False
        if "persistentVolumeClaim" in volume:
            yield "PersistentVolumeClaim", volume["persistentVolumeClaim"]["claimName"], False
    for container in spec["containers"]:
        for source in container.get("envFrom", []):
            if "configMapRef" in source:
                yield "ConfigMap", source["configMapRef"]["name"], False
        for entry in container.get("env", []):
            for kind, field in (("Secret", "secretKeyRef"), ("ConfigMap", "configMapKeyRef")):
                ref = entry.get("valueFrom", {}).get(field)
                if ref is not None:
                    yield kind, ref["name"], bool(ref.get("optional"))


def test_everything_a_pod_refers_to_is_in_the_kustomization() -> None:
    for template in _pod_templates(_resources()):
        for kind, name, _ in _references(template):
            assert name in _defined(kind), f"{kind} {name} is not defined"


def test_every_secret_key_a_pod_needs_is_in_its_secret() -> None:
    secrets = {r["metadata"]["name"]: r["data"] for r in _resources() if r["kind"] == "Secret"}
    for template in _pod_templates(_resources()):
        for container in template["spec"]["containers"]:
            for entry in container.get("env", []):
                ref = entry.get("valueFrom", {}).get("secretKeyRef")
                if ref is not None and not ref.get("optional"):
                    assert ref["key"] in secrets[ref["name"]], entry["name"]


def test_the_secret_files_are_kept_out_of_git() -> None:
    for generator in _kustomization()["secretGenerator"]:
        paths = [entry.partition("=")[2] for entry in generator.get("files", [])]
        paths += generator.get("envs", [])
        for path in paths:
            assert _ignored(DEPLOY / path), f"{path} would be committed"


def test_services_and_disruption_budgets_select_the_pods_of_a_workload() -> None:
    resources = _resources()
    pod_labels = [t["metadata"]["labels"] for t in _pod_templates(resources)]
    for workload in (r for r in resources if r["kind"] in WORKLOADS):
        selector = workload["spec"]["selector"]["matchLabels"]
        assert selector.items() <= workload["spec"]["template"]["metadata"]["labels"].items()
    for resource in resources:
        if resource["kind"] == "Service":
            selector = resource["spec"]["selector"]
        elif resource["kind"] == "PodDisruptionBudget":
            selector = resource["spec"]["selector"]["matchLabels"]
        else:
            continue
        if selector.get("app.kubernetes.io/name") == "warren-rabbitmq":
            continue  # the operator's pods, labelled with the cluster's name
        matched = [labels for labels in pod_labels if selector.items() <= labels.items()]
        assert len(matched) == 1, f"{_name(resource)} selects {len(matched)} workloads"


# -- the resources against the engine -------------------------------------------------------


def _settings_in(container: dict[str, Any]) -> dict[str, str]:
    """The WARREN_* variables a container is given, with a literal value or ``<ref>``."""
    given = {name: value for name, value in _config().items()}
    for name, entry in _env(container).items():
        given[name] = entry.get("value", "<ref>")
    return {name: value for name, value in given.items() if name.startswith("WARREN_")}


def test_every_warren_variable_given_is_a_setting_and_has_a_usable_value() -> None:
    declared = {variable.name for variable in VARIABLES}
    given = _settings_in(_container(_warren_workload(ENGINE)))

    assert set(given) <= declared, set(given) - declared
    literal = {name: value for name, value in given.items() if "$(" not in value}
    literal = {name: value for name, value in literal.items() if value != "<ref>"}
    Settings.from_environment(literal)  # raises ConfigError on a bad value


def test_the_probes_ask_the_engine_s_health_on_its_http_port() -> None:
    container = _container(_warren_workload(ENGINE))
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}

    assert ports["http"] == int(_config()["WARREN_HTTP_PORT"])
    assert _config()["WARREN_HTTP_HOST"] == "0.0.0.0"
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "http"}


def test_the_node_offers_what_its_pod_may_use() -> None:
    container = _container(_warren_workload(ENGINE))
    env = _env(container)

    for variable, resource in (
        ("WARREN_NODE_CPUS", "limits.cpu"),
        ("WARREN_NODE_MEMORY", "limits.memory"),
    ):
        field = env[variable]["valueFrom"]["resourceFieldRef"]
        assert field["resource"] == resource
        assert field["containerName"] == container["name"]
    assert env["WARREN_NODE_MEMORY"]["valueFrom"]["resourceFieldRef"]["divisor"] == "1Mi"
    assert container["resources"]["limits"].keys() >= {"cpu", "memory"}


def _engine_pod_labels() -> dict[str, str]:
    labels = _warren_workload(ENGINE)["spec"]["template"]["metadata"]["labels"]
    assert isinstance(labels, dict)
    return labels


def test_engine_nodes_are_several_peers_rolled_one_pod_at_a_time() -> None:
    # Peers may overlap: a new pod starts before an old one stops.
    engines = _warren_workload(ENGINE)
    assert engines["kind"] == "Deployment"
    assert engines["spec"]["replicas"] > 1
    assert engines["spec"]["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 1},
    }
    assert _container(engines)["args"] == ["engine"]


def test_the_engine_disruption_budget_selects_its_pods_and_lets_at_most_one_go() -> None:
    replicas = _warren_workload(ENGINE)["spec"]["replicas"]
    budgets = [
        r
        for r in _resources()
        if r["kind"] == "PodDisruptionBudget"
        and r["spec"]["selector"]["matchLabels"].items() <= _engine_pod_labels().items()
    ]
    assert len(budgets) == 1
    spec = budgets[0]["spec"]
    assert "matchExpressions" not in spec["selector"]
    if "maxUnavailable" in spec:
        allowed = spec["maxUnavailable"]
    else:
        allowed = replicas - spec["minAvailable"]
    assert isinstance(allowed, int), "a number of pods, not a percentage"
    assert allowed == 1, "one pod at a time, and a drain is not blocked for good"
    assert replicas - allowed >= 2


def test_each_engine_pod_is_a_node_named_after_the_pod() -> None:
    # Node names must be unique in the cluster: a pod's name is.
    node_name = _env(_container(_warren_workload(ENGINE)))["WARREN_NODE_NAME"]
    assert node_name["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert Settings.from_environment({"WARREN_NODE_NAME": POD_NAME}).node_name == POD_NAME


def test_queues_are_quorum_queues_replicated_over_the_rabbitmq_nodes() -> None:
    queue_type = _settings_in(_container(_warren_workload(ENGINE)))["WARREN_QUEUE_TYPE"]
    assert queue_type == "quorum"
    assert Settings.from_environment({"WARREN_QUEUE_TYPE": queue_type}).queue_type == "quorum"
    assert _one("RabbitmqCluster")["spec"]["replicas"] >= 3


def _broker_hosts(cluster: Resource) -> set[str]:
    """Where the RabbitmqCluster is reached: the Service the operator makes, named as the
    cluster (short, or with its namespace), or one of its pods by the headless Service."""
    name, namespace = cluster["metadata"]["name"], cluster["metadata"]["namespace"]
    service = {name, f"{name}.{namespace}", f"{name}.{namespace}.svc"}
    service |= {f"{name}.{namespace}.svc.cluster.local"}
    pods = {
        f"{name}-server-{index}.{name}-nodes.{namespace}.svc"
        for index in range(cluster["spec"]["replicas"])
    }
    return service | pods | {f"{pod}.cluster.local" for pod in pods}


def test_the_broker_urls_name_the_rabbitmq_cluster() -> None:
    hosts = _broker_hosts(_one("RabbitmqCluster"))
    env = _env(_container(_warren_workload(ENGINE)))
    for variable in ("WARREN_BROKER_URL", "WARREN_CONTAINER_BROKER_URL"):
        ref = env[variable]["valueFrom"]["secretKeyRef"]
        value = base64.b64decode(_one("Secret", ref["name"])["data"][ref["key"]]).decode()

        for url in value.split(","):
            parts = urlsplit(url.strip())
            assert parts.scheme in {"amqp", "amqps"}, variable
            assert parts.hostname in hosts, f"{variable}: {parts.hostname}"
            assert parts.port == AMQP_PORT, variable
        Settings.from_environment({variable: value})


def test_engine_pods_prefer_to_run_on_different_machines() -> None:
    pod = _warren_workload(ENGINE)["spec"]["template"]["spec"]
    anti = pod["affinity"]["podAntiAffinity"]

    # Preferred, not required: more replicas than machines still run.
    assert set(anti) == {"preferredDuringSchedulingIgnoredDuringExecution"}
    (preference,) = anti["preferredDuringSchedulingIgnoredDuringExecution"]
    term = preference["podAffinityTerm"]
    assert term["topologyKey"] == "kubernetes.io/hostname"
    assert term["labelSelector"] == {"matchLabels": _engine_pod_labels()}


def test_no_agent_remains_every_warren_pod_is_a_peer() -> None:
    resources = _resources()
    assert not (DEPLOY / "agent.yaml").exists()
    assert [_name(r) for r in resources if r["kind"] in WORKLOADS] == ["Deployment/warren-engine"]
    for resource in resources:
        labels = resource["metadata"].get("labels", {})
        assert labels.get("app.kubernetes.io/component") != "agent", _name(resource)
        assert "agent" not in resource["metadata"]["name"], _name(resource)
    for template in _pod_templates(resources):
        for container in template["spec"]["containers"]:
            assert "--join" not in container.get("command", []) + container.get("args", [])


def test_warren_pods_meet_the_restricted_pod_security_standard() -> None:
    pod = _warren_workload(ENGINE)["spec"]["template"]["spec"]
    container = _container(_warren_workload(ENGINE))

    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] > 0
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert pod["automountServiceAccountToken"] is False


def test_the_root_file_system_is_read_only_and_what_the_engine_writes_is_a_volume() -> None:
    container = _container(_warren_workload(ENGINE))
    mounts = {mount["mountPath"]: mount for mount in container["volumeMounts"]}

    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    # Its state directory, and the fork server's socket and temporary files.
    for path in (_config()["WARREN_STATE_DIR"], "/tmp"):
        assert path in mounts and not mounts[path].get("readOnly")
    key_file = Path(_env(container)["WARREN_SECRET_KEY_FILE"]["value"])
    assert mounts[str(key_file.parent)]["readOnly"] is True


def test_the_state_directory_is_a_cache_and_pods_stop_within_their_grace_period() -> None:
    # Deployed apps are in the broker: a pod keeps nothing that a new pod needs.
    pod = _warren_workload(ENGINE)["spec"]["template"]["spec"]
    mounts = {
        m["mountPath"]: m["name"] for m in _container(_warren_workload(ENGINE))["volumeMounts"]
    }
    state = next(v for v in pod["volumes"] if v["name"] == mounts[_config()["WARREN_STATE_DIR"]])

    assert "emptyDir" in state
    for claim in (r for r in _resources() if r["kind"] == "PersistentVolumeClaim"):
        assert claim["spec"]["accessModes"] == ["ReadWriteMany"], "every replica mounts it"
    assert pod["terminationGracePeriodSeconds"] > float(_config()["WARREN_STOP_GRACE"])


def test_the_service_account_has_no_api_access() -> None:
    account = _one("ServiceAccount", "warren")
    assert account["automountServiceAccountToken"] is False
    assert not [r for r in _resources() if r["kind"] in {"RoleBinding", "ClusterRoleBinding"}]


def test_the_image_runs_as_the_user_the_pods_name() -> None:
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    user = re.search(r"^USER (\d+):(\d+)$", dockerfile, re.MULTILINE)
    assert user is not None
    context = _warren_workload(ENGINE)["spec"]["template"]["spec"]["securityContext"]
    assert (context["runAsUser"], context["runAsGroup"]) == tuple(map(int, user.groups()))


def test_the_broker_is_a_three_node_cluster_whose_consumer_timeout_the_engine_knows() -> None:
    cluster = _one("RabbitmqCluster")
    assert cluster["spec"]["replicas"] == 3
    config = dict(
        line.split("=", 1) for line in cluster["spec"]["rabbitmq"]["additionalConfig"].splitlines()
    )
    timeout_ms = int(config["consumer_timeout "].strip())
    assert timeout_ms == 1000 * int(_config()["WARREN_BROKER_CONSUMER_TIMEOUT"])
    budget = _one("PodDisruptionBudget", cluster["metadata"]["name"])
    assert budget["spec"]["selector"]["matchLabels"] == {
        "app.kubernetes.io/name": cluster["metadata"]["name"]
    }
    assert budget["spec"]["maxUnavailable"] == 1
