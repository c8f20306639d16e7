"""deploy/: the image, compose files, Kubernetes manifests and systemd units agree with the code they run.

The files are read (YAML with PyYAML, the Dockerfile and the units line by line), every
``runstream ...`` command line in them is parsed by the real click commands without
running them, and every ``RUNSTREAM_*`` setting they pass is read back through
:meth:`runstream.Settings.from_config`.  The Redis Cluster variants are also run: their
``redis-server`` arguments, cluster-create scripts and (Kubernetes) restart hook start
real nodes on loopback, and the compose file's collector and server run against them.
"""

from __future__ import annotations

import http.client
import ipaddress
import json
import os
import re
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import tomllib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Self, cast
from urllib.parse import urlsplit, urlunsplit

import click
import pytest
import redis
import yaml  # type: ignore[import-untyped]  # types-PyYAML is not among the dev dependencies

from runstream import Settings
from runstream.connection import seed_nodes
from runstream.consumer.cli import main
from runstream.consumer.server import serve_command
from runstream.keys import Keys
from runstream.redis_server import free_port

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy"
COMPOSE_FILE = DEPLOY / "compose.yaml"
COMPOSE_CLUSTER = DEPLOY / "compose.cluster.yaml"
K8S = DEPLOY / "k8s"
K8S_CLUSTER = K8S / "cluster"
#: What each Kubernetes variant applies (deploy/README.md): all of k8s/, or, for the
#: Redis Cluster, the namespace, settings and artifacts claim of k8s/ and then k8s/cluster/.
MANIFEST_SETS = {
    "k8s": sorted(K8S.glob("*.yaml")),
    "k8s/cluster": [
        K8S / "00-namespace.yaml",
        K8S / "10-config.yaml",
        K8S / "30-artifacts.yaml",
        *sorted(K8S_CLUSTER.glob("*.yaml")),
    ],
}
SYSTEMD = DEPLOY / "systemd"
HEALTH_PATH = "/api/v1/health"
ENV_FILE = "/etc/runstream/runstream.env"
ALL_INTERFACES = "0.0.0.0"  # noqa: S104  # what a server in a container must listen on
_VARIABLE = re.compile(r"\bRUNSTREAM_[A-Z0-9_]+")
_COMPOSE_DEFAULT = re.compile(r"\$\{\w+:-([^}]*)\}")  # ${NAME:-default}, as compose resolves it unset


def load_yaml(path: Path) -> list[Any]:
    """The documents of a YAML file (empty documents left out)."""
    with path.open(encoding="utf-8") as file:
        return [doc for doc in yaml.safe_load_all(file) if doc is not None]


def package_sources() -> dict[str, Path]:
    """The import packages and the folders pyproject maps them to."""
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    mapping: dict[str, str] = pyproject["tool"]["setuptools"]["package-dir"]
    return {package: REPO / folder for package, folder in mapping.items()}


# --- the Dockerfile -------------------------------------------------------------------


def dockerfile() -> list[tuple[str, str]]:
    """The Dockerfile's instructions as (INSTRUCTION, arguments), continuation lines joined."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in (DEPLOY / "Dockerfile").read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        keyword, _, arguments = (pending + line).partition(" ")
        instructions.append((keyword.upper(), arguments.strip()))
        pending = ""
    return instructions


def final_stage() -> list[tuple[str, str]]:
    """The instructions of the image's last stage (the one that ships)."""
    instructions = dockerfile()
    start = max(i for i, (keyword, _) in enumerate(instructions) if "FROM" == keyword)
    return instructions[start:]


def exec_form(instruction: str) -> list[str]:
    """The JSON (exec) form of the stage's ``instruction`` (ENTRYPOINT, CMD), parsed."""
    (arguments,) = [args for keyword, args in final_stage() if keyword == instruction]
    parsed = yaml.safe_load(arguments)  # a JSON array is YAML too
    assert isinstance(parsed, list), f"{instruction} is not in exec form: {arguments}"
    return [str(a) for a in parsed]


def image_environment() -> dict[str, str]:
    """The variables the image sets with ENV."""
    pairs = [shlex.split(args) for keyword, args in final_stage() if "ENV" == keyword]
    return dict(word.split("=", 1) for words in pairs for word in words)


# --- compose, Kubernetes and systemd --------------------------------------------------


def compose(path: Path = COMPOSE_FILE) -> dict[str, Any]:
    (document,) = load_yaml(path)
    assert isinstance(document, dict)
    return document


def compose_services(command_name: str, path: Path = COMPOSE_FILE) -> list[dict[str, Any]]:
    """The compose services running ``runstream <command_name>``."""
    return [
        service
        for service in compose(path)["services"].values()
        if is_runstream_image(service.get("image", "")) and command_name == compose_command(service)[0]
    ]


def compose_command(service: dict[str, Any]) -> list[str]:
    command = service.get("command", [])
    return shlex.split(command) if isinstance(command, str) else [str(c) for c in command]


def compose_environment(service: dict[str, Any]) -> dict[str, str]:
    environment = service.get("environment", {})
    if isinstance(environment, list):
        environment = dict(item.split("=", 1) for item in environment)
    return {name: _COMPOSE_DEFAULT.sub(r"\1", str(value)) for name, value in environment.items()}


def is_runstream_image(image: str) -> bool:
    return "runstream" == image.rpartition("/")[2].partition(":")[0]


def k8s_objects(variant: str = "k8s") -> list[dict[str, Any]]:
    """Every document of every manifest a Kubernetes variant applies (``MANIFEST_SETS``)."""
    return [doc for path in MANIFEST_SETS[variant] for doc in load_yaml(path)]


def k8s_object(kind: str, name: str, variant: str = "k8s") -> dict[str, Any]:
    (found,) = [o for o in k8s_objects(variant) if kind == o["kind"] and name == o["metadata"]["name"]]
    return found


def pod_spec(workload: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = workload["spec"]["template"]["spec"]
    return spec


def pod_labels(o: dict[str, Any], variant: str = "k8s") -> dict[str, str]:
    """The labels of the pods a workload makes, or (a disruption budget) of the workload it guards."""
    if "PodDisruptionBudget" == o["kind"]:
        (guarded,) = [
            w
            for w in k8s_objects(variant)
            if w["kind"] in {"Deployment", "StatefulSet"}
            and o["spec"]["selector"]["matchLabels"].items() <= w["spec"]["template"]["metadata"]["labels"].items()
        ]
        o = guarded
    labels: dict[str, str] = o["spec"]["template"]["metadata"]["labels"]
    return labels


def only_container(workload: dict[str, Any]) -> dict[str, Any]:
    (container,) = pod_spec(workload)["containers"]
    assert isinstance(container, dict)
    return container


def container_port(container: dict[str, Any], port: int | str) -> int:
    """``port`` (a number or the name of one of the container's ports) as a number."""
    if isinstance(port, int):
        return port
    (number,) = [p["containerPort"] for p in container.get("ports", []) if port == p.get("name")]
    assert isinstance(number, int)
    return number


def service_for(workload: dict[str, Any], variant: str = "k8s") -> dict[str, Any]:
    """The one Service whose selector picks the workload's pods."""
    labels = workload["spec"]["template"]["metadata"]["labels"].items()
    (found,) = [o for o in k8s_objects(variant) if "Service" == o["kind"] and o["spec"]["selector"].items() <= labels]
    return found


#: What the downward API gives a pod, for the ``fieldRef`` entries of the manifests.
POD_FIELDS = {"status.podIP": "10.1.2.3"}


def k8s_env_value(entry: dict[str, Any], variant: str = "k8s", pod: Mapping[str, str] = POD_FIELDS) -> str:
    """An ``env`` entry's value, looked up in the ConfigMap or Secret (or pod field) it refers to."""
    if "value" in entry:
        return str(entry["value"])
    source = entry["valueFrom"]
    if "fieldRef" in source:
        return pod[source["fieldRef"]["fieldPath"]]
    if "secretKeyRef" in source:
        ref, data = source["secretKeyRef"], k8s_object("Secret", source["secretKeyRef"]["name"], variant)["stringData"]
    else:
        ref = source["configMapKeyRef"]
        data = k8s_object("ConfigMap", source["configMapKeyRef"]["name"], variant)["data"]
    return str(data[ref["key"]])


def k8s_environment(
    container: dict[str, Any], variant: str = "k8s", pod: Mapping[str, str] = POD_FIELDS
) -> dict[str, str]:
    """What the container's environment holds: ``envFrom`` sources, then ``env``."""
    environment: dict[str, str] = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            environment |= k8s_object("ConfigMap", source["configMapRef"]["name"], variant)["data"]
        else:
            environment |= k8s_object("Secret", source["secretRef"]["name"], variant)["stringData"]
    return environment | {entry["name"]: k8s_env_value(entry, variant, pod) for entry in container.get("env", [])}


def runstream_containers(variant: str = "k8s") -> list[tuple[str, dict[str, Any]]]:
    """(workload name, container) for every container of a variant running the runstream image."""
    return [
        (o["metadata"]["name"], c)
        for o in k8s_objects(variant)
        if o["kind"] in {"Deployment", "StatefulSet", "Job", "CronJob"}
        for c in pod_spec(o)["containers"]
        if is_runstream_image(c["image"])
    ]


def unit(name: str) -> dict[str, dict[str, list[str]]]:
    """A systemd unit file as {section: {key: [values]}} (a key may repeat)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] = {}
    for raw in (SYSTEMD / name).read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        key, equals, value = line.partition("=")
        assert equals, f"{name}: not a key=value line: {line}"
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def service_setting(name: str, key: str) -> str:
    """The single value of ``key`` in the unit's [Service] section."""
    (value,) = unit(name)["Service"][key]
    return value


UNITS = ("runstream-collector.service", "runstream-server.service")


def env_file(path: Path) -> dict[str, str]:
    """The KEY=VALUE lines of an environment file (comments left out)."""
    lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    return dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))


# --- the command lines and settings found in all of deploy/ ----------------------------


#: The compose files, as ``where`` names them.
COMPOSE_FILES = {"compose": COMPOSE_FILE, "compose.cluster": COMPOSE_CLUSTER}


def runstream_services() -> Iterator[tuple[str, dict[str, Any]]]:
    """(where, service) for every compose service running the runstream image."""
    for label, path in COMPOSE_FILES.items():
        for name, service in compose(path)["services"].items():
            if is_runstream_image(service.get("image", "")):
                yield f"{label} {name}", service


def runstream_command_lines() -> Iterator[tuple[str, list[str]]]:
    """(where, argv) for every process deploy/ starts from the runstream image or install."""
    entrypoint = exec_form("ENTRYPOINT")
    yield "Dockerfile CMD", [*entrypoint, *exec_form("CMD")]
    for where, service in runstream_services():
        yield where, [*service.get("entrypoint", entrypoint), *compose_command(service)]
    for variant in MANIFEST_SETS:
        for workload, container in runstream_containers(variant):
            yield f"{variant} {workload}", [*container.get("command", entrypoint), *container.get("args", [])]
    for name in UNITS:
        yield f"{name} ExecStart", shlex.split(service_setting(name, "ExecStart"))


def parse_command_line(args: list[str]) -> tuple[str, dict[str, Any]]:
    """Parse ``runstream ARGS`` as the CLI would, without running it.

    Returns:
        The subcommand's name and the parameters its callback would get.

    Raises:
        click.UsageError: the CLI refuses the command line.
    """
    group = main.make_context("runstream", list(args))
    # The group keeps its own options and leaves the subcommand's name followed by the
    # subcommand's arguments (``group.args``).
    name, *rest = args[len(args) - len(group.args) - 1 :]
    command = main.get_command(group, name)
    if command is None:
        raise click.UsageError(f"no such command: {name!r}")
    if "serve" == name:  # a lazy passthrough (aiohttp loads only when serving): check the real one
        command = serve_command
    return name, command.make_context(name, rest, parent=group).params


def settings_variables() -> Iterator[tuple[str, str, str]]:
    """(where, variable, value) for every RUNSTREAM_* variable deploy/ sets."""
    for name, value in image_environment().items():
        yield "Dockerfile", name, value
    for label, path in COMPOSE_FILES.items():
        for service_name, service in compose(path)["services"].items():
            for name, value in compose_environment(service).items():
                yield f"{label} {service_name}", name, value
    for variant in MANIFEST_SETS:
        for workload, container in runstream_containers(variant):
            for name, value in k8s_environment(container, variant).items():
                yield f"{variant} {workload}", name, value
    for name, value in env_file(SYSTEMD / "runstream.env.example").items():
        yield "runstream.env.example", name, value


def deploy_files() -> list[Path]:
    return sorted(p for p in DEPLOY.rglob("*") if p.is_file())


COMMAND_LINES = list(runstream_command_lines())
SETTINGS = [(where, name, value) for where, name, value in settings_variables() if name.startswith("RUNSTREAM_")]
#: (where, environment) of every runstream process deploy/ starts, and of the systemd units.
PART_ENVIRONMENTS = [
    *((where, compose_environment(service)) for where, service in runstream_services()),
    *(
        (f"{variant} {workload}", k8s_environment(c, variant))
        for variant in MANIFEST_SETS
        for workload, c in runstream_containers(variant)
    ),
    ("runstream.env.example", env_file(SYSTEMD / "runstream.env.example")),
]


class TestCommandLineChecker:
    """The checker parses with the real commands: it refuses what the CLI would refuse."""

    @pytest.mark.parametrize(
        "args",
        [
            ["collecter"],
            ["collector", "--lease-ttl", "soon"],
            ["serve", "--prot", "8080"],
            ["serve", "--port"],
        ],
    )
    def test_refuses_bad_command_lines(self, args: list[str]) -> None:
        with pytest.raises(click.UsageError):
            parse_command_line(args)

    def test_reads_parameters(self) -> None:
        name, params = parse_command_line(["serve", "--host", "10.1.2.3", "--port", "9000"])

        assert "serve" == name
        assert ("10.1.2.3", 9000) == (params["host"], params["port"])

    def test_finds_command_lines_everywhere(self) -> None:
        """Every kind of file contributes its command lines: none is skipped unnoticed."""
        wheres = [where for where, _ in COMMAND_LINES]

        assert {"Dockerfile CMD", *(f"{name} ExecStart" for name in UNITS)} <= set(wheres)
        for prefix in [*COMPOSE_FILES, *MANIFEST_SETS]:
            assert 2 <= sum(w.startswith(f"{prefix} ") for w in wheres), prefix


class TestCommandLines:
    """Every ``runstream ...`` command line in deploy/ is one the CLI accepts."""

    @pytest.mark.parametrize(("where", "argv"), COMMAND_LINES, ids=[where for where, _ in COMMAND_LINES])
    def test_accepted_by_the_cli(self, where: str, argv: list[str]) -> None:
        name, _ = parse_command_line(argv[1:])

        assert "runstream" == Path(argv[0]).name, where
        assert name in {"collector", "serve"}, where

    def test_containers_serve_on_every_interface(self) -> None:
        """In a container the default, 127.0.0.1, is unreachable from outside it."""
        parsed = [(where, *parse_command_line(argv[1:])) for where, argv in COMMAND_LINES if "ExecStart" not in where]
        hosts = {where: params["host"] for where, name, params in parsed if "serve" == name}

        assert 1 + len(COMPOSE_FILES) + len(MANIFEST_SETS) == len(hosts)
        assert dict.fromkeys(hosts, ALL_INTERFACES) == hosts


class TestSettings:
    """Every RUNSTREAM_* variable deploy/ sets is a setting the code reads, with a value it takes."""

    @pytest.mark.parametrize(("where", "name", "value"), SETTINGS, ids=[f"{w}-{n}" for w, n, _ in SETTINGS])
    def test_set_variable_is_read_by_settings(self, tmp_path: Path, where: str, name: str, value: str) -> None:
        env = {"RUNSTREAM_REDIS_URL": "redis://localhost:6379/0", name: value}

        settings = Settings.from_config(tmp_path, env=env)

        assert value in {str(getattr(settings, f.name)) for f in fields(settings)}, f"{where}: {name}"

    @pytest.mark.parametrize("path", deploy_files(), ids=lambda p: str(p.relative_to(DEPLOY)))
    def test_mentioned_variables_exist(self, path: Path) -> None:
        """Comments and docs name only variables the code uses."""
        known = {
            match
            for folder in package_sources().values()
            for source in folder.glob("*.py")
            for match in _VARIABLE.findall(source.read_text(encoding="utf-8"))
        }

        assert set() == set(_VARIABLE.findall(path.read_text(encoding="utf-8"))) - known

    @pytest.mark.parametrize(("where", "environment"), PART_ENVIRONMENTS, ids=[w for w, _ in PART_ENVIRONMENTS])
    def test_every_part_knows_its_redis_and_data_dir(self, where: str, environment: dict[str, str]) -> None:
        assert {"RUNSTREAM_REDIS_URL", "RUNSTREAM_WORKSPACE", "RUNSTREAM_DATA_DIR"} <= environment.keys(), where


class TestYaml:
    """Every YAML file in deploy/ parses."""

    @pytest.mark.parametrize("path", [p for p in deploy_files() if p.suffix in {".yaml", ".yml"}], ids=lambda p: p.name)
    def test_parses(self, path: Path) -> None:
        assert [] != load_yaml(path)


class TestDockerfile:
    """The image: python:3.11-slim, the server extra, a non-root user, ``runstream`` as entrypoint."""

    def test_base_image(self) -> None:
        bases = [args.split()[0] for keyword, args in dockerfile() if "FROM" == keyword]

        assert {"python:3.11-slim"} == set(bases)

    def test_installs_the_server_extra(self) -> None:
        runs = " ".join(args for keyword, args in dockerfile() if "RUN" == keyword)

        assert "install '.[server]'" in runs

    def test_copies_what_the_wheel_is_built_from(self) -> None:
        copied = {
            source.rstrip("/")
            for keyword, args in dockerfile()
            if "COPY" == keyword and "--from" not in args
            for source in shlex.split(args)[:-1]
        }
        needed = {"pyproject.toml", "README.md", *(str(p.relative_to(REPO)) for p in package_sources().values())}

        assert needed <= copied
        assert all((REPO / source).exists() for source in copied)

    def test_runs_as_a_non_root_user(self) -> None:
        (user,) = [args for keyword, args in final_stage() if "USER" == keyword]

        assert user.split(":")[0] not in {"root", "0"}

    def test_entrypoint(self) -> None:
        assert ["runstream"] == exec_form("ENTRYPOINT")

    def test_data_dir_is_writable_by_the_user(self) -> None:
        """The image's data folder is the home the user owns (a fresh volume takes its owner)."""
        runs = " ".join(args for keyword, args in final_stage() if "RUN" == keyword)

        assert f"--home-dir {image_environment()['RUNSTREAM_DATA_DIR']}" in runs
        assert "--create-home" in runs


class TestCompose:
    """compose.yaml: Redis with AOF on a volume, two collectors, a server with a health check."""

    def test_redis_appends_every_second_to_a_volume(self) -> None:
        redis = compose()["services"]["redis"]
        command = compose_command(redis)
        volumes = {v.split(":")[0]: v.split(":")[1] for v in redis["volumes"]}

        assert "redis" == redis["image"].partition(":")[0]
        assert "yes" == command[command.index("--appendonly") + 1]
        assert "everysec" == command[command.index("--appendfsync") + 1]
        assert "noeviction" == command[command.index("--maxmemory-policy") + 1]
        assert "/data" in volumes.values()
        assert {k for k, v in volumes.items() if "/data" == v} <= compose()["volumes"].keys()

    def test_redis_health_check_pings(self) -> None:
        test = compose()["services"]["redis"]["healthcheck"]["test"]

        assert ["redis-cli", "ping"] == test[-2:]

    def test_two_collectors(self) -> None:
        replicas = [s.get("deploy", {}).get("replicas", 1) for s in compose_services("collector")]

        assert 2 <= sum(replicas)

    def test_server_health_check_hits_health_on_its_port(self) -> None:
        (server,) = compose_services("serve")
        _, params = parse_command_line(compose_command(server))
        check = " ".join(server["healthcheck"]["test"])

        assert f":{params['port']}{HEALTH_PATH}" in check
        assert any(str(p).endswith(f":{params['port']}") for p in server["ports"])

    def test_server_data_dir_is_a_volume(self) -> None:
        (server,) = compose_services("serve")
        mounts = {v.split(":")[1]: v.split(":")[0] for v in server["volumes"]}

        assert mounts[compose_environment(server)["RUNSTREAM_DATA_DIR"]] in compose()["volumes"]

    def test_runstream_services_wait_for_redis(self) -> None:
        services = [*compose_services("collector"), *compose_services("serve")]

        assert ["service_healthy"] * len(services) == [s["depends_on"]["redis"]["condition"] for s in services]

    def test_redis_url_names_the_redis_service(self) -> None:
        services = [*compose_services("collector"), *compose_services("serve")]
        urls = {compose_environment(s)["RUNSTREAM_REDIS_URL"] for s in services}

        assert {"redis"} == {urlsplit(url).hostname for url in urls}


@pytest.fixture(params=list(MANIFEST_SETS))
def variant(request: pytest.FixtureRequest) -> str:
    """Each Kubernetes variant: the single Redis (k8s/) and the Redis Cluster (k8s/cluster/)."""
    name: str = request.param
    return name


class TestKubernetesObjects:
    """The manifests of each variant: named objects in one namespace, every reference resolved."""

    def test_every_document_is_an_object(self, variant: str) -> None:
        incomplete = [
            o for o in k8s_objects(variant) if not (o.get("apiVersion") and o.get("kind") and o["metadata"]["name"])
        ]

        assert [] == incomplete

    def test_the_expected_objects(self, variant: str) -> None:
        kinds = {o["kind"] for o in k8s_objects(variant)}

        assert {
            "Namespace",
            "ConfigMap",
            "Secret",
            "StatefulSet",
            "Service",
            "Deployment",
            "PersistentVolumeClaim",
        } <= kinds

    def test_names_are_unique(self, variant: str) -> None:
        """Nothing a variant applies overwrites another of its objects."""
        names = [(o["kind"], o["metadata"]["name"]) for o in k8s_objects(variant)]

        assert sorted(set(names)) == sorted(names)

    def test_all_in_the_namespace(self, variant: str) -> None:
        (namespace,) = [o["metadata"]["name"] for o in k8s_objects(variant) if "Namespace" == o["kind"]]
        namespaces = {o["metadata"].get("namespace") for o in k8s_objects(variant) if "Namespace" != o["kind"]}

        assert {namespace} == namespaces

    def test_namespace_is_applied_first(self, variant: str) -> None:
        """``kubectl apply -f deploy/k8s/`` goes in file-name order."""
        first = load_yaml(MANIFEST_SETS[variant][0])

        assert ["Namespace"] == [o["kind"] for o in first]

    def test_references_resolve(self, variant: str) -> None:
        """Every ConfigMap, Secret key and claim a pod names exists."""
        workloads = [o for o in k8s_objects(variant) if o["kind"] in {"Deployment", "StatefulSet", "Job"}]
        claims = {o["metadata"]["name"] for o in k8s_objects(variant) if "PersistentVolumeClaim" == o["kind"]}
        named = {
            v["persistentVolumeClaim"]["claimName"]
            for o in workloads
            for v in pod_spec(o).get("volumes", [])
            if "persistentVolumeClaim" in v
        }
        # k8s_environment looks every envFrom source and valueFrom key up (KeyError if absent).
        environments = [k8s_environment(c, variant) for o in workloads for c in pod_spec(o)["containers"]]

        assert named <= claims
        assert all(value for environment in environments for value in environment.values())

    def test_workloads_select_their_pods(self, variant: str) -> None:
        workloads = [
            o for o in k8s_objects(variant) if o["kind"] in {"Deployment", "StatefulSet", "PodDisruptionBudget"}
        ]
        labels = {o["metadata"]["name"]: pod_labels(o, variant) for o in workloads}

        astray = [
            o["metadata"]["name"]
            for o in workloads
            if not o["spec"]["selector"]["matchLabels"].items() <= labels[o["metadata"]["name"]].items()
        ]

        assert [] == astray

    @pytest.mark.parametrize("name", ["runstream-collector", "runstream-server"])
    def test_runs_as_the_image_user(self, variant: str, name: str) -> None:
        security = pod_spec(k8s_object("Deployment", name, variant))["securityContext"]
        (user,) = [args for keyword, args in final_stage() if "USER" == keyword]

        assert (True, int(user.split(":")[0])) == (security["runAsNonRoot"], security["runAsUser"])

    @pytest.mark.parametrize("name", ["runstream-collector", "runstream-server"])
    def test_resources_requested_and_limited(self, variant: str, name: str) -> None:
        resources = only_container(k8s_object("Deployment", name, variant))["resources"]

        assert {"cpu", "memory"} == resources["requests"].keys()
        assert {"cpu", "memory"} == resources["limits"].keys()


class TestKubernetesServer:
    """Servers: 2 replicas, probes on /api/v1/health at the port they serve, behind a Service."""

    def test_replicas(self, variant: str) -> None:
        assert 2 <= k8s_object("Deployment", "runstream-server", variant)["spec"]["replicas"]

    @pytest.mark.parametrize("probe", ["readinessProbe", "livenessProbe"])
    def test_probe_on_health_at_the_served_port(self, variant: str, probe: str) -> None:
        container = only_container(k8s_object("Deployment", "runstream-server", variant))
        check = container[probe]["httpGet"]
        _, params = parse_command_line(container["args"])
        (port,) = container["ports"]

        assert HEALTH_PATH == check["path"]
        assert params["port"] == container_port(container, check["port"]) == port["containerPort"]

    def test_service_targets_the_served_port(self, variant: str) -> None:
        server = k8s_object("Deployment", "runstream-server", variant)
        container = only_container(server)
        _, params = parse_command_line(container["args"])
        (port,) = service_for(server, variant)["spec"]["ports"]

        assert params["port"] == container_port(container, port["targetPort"])

    def test_data_dir_is_the_shared_claim(self, variant: str) -> None:
        server = k8s_object("Deployment", "runstream-server", variant)
        container = only_container(server)
        mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
        volumes = {v["name"]: v for v in pod_spec(server)["volumes"]}
        volume = volumes[mounts[k8s_environment(container, variant)["RUNSTREAM_DATA_DIR"]]]
        claim = k8s_object("PersistentVolumeClaim", volume["persistentVolumeClaim"]["claimName"], variant)

        assert ["ReadWriteMany"] == claim["spec"]["accessModes"]


class TestKubernetesCollector:
    """Collectors: at least 2 replicas, given time to finish their batch on SIGTERM."""

    def test_replicas(self, variant: str) -> None:
        assert 2 <= k8s_object("Deployment", "runstream-collector", variant)["spec"]["replicas"]

    def test_graceful_shutdown(self, variant: str) -> None:
        spec = pod_spec(k8s_object("Deployment", "runstream-collector", variant))

        assert 10 <= spec["terminationGracePeriodSeconds"]


class TestKubernetesRedis:
    """Redis: a StatefulSet with a claim template mounted at /data, AOF on, and its Service."""

    def test_volume_claim_template_holds_the_data(self) -> None:
        redis = k8s_object("StatefulSet", "redis")
        (template,) = redis["spec"]["volumeClaimTemplates"]
        mounts = {m["name"]: m["mountPath"] for m in only_container(redis)["volumeMounts"]}

        assert "/data" == mounts[template["metadata"]["name"]]

    def test_append_only(self) -> None:
        args = only_container(k8s_object("StatefulSet", "redis"))["args"]

        assert "yes" == args[args.index("--appendonly") + 1]
        assert "/data" == args[args.index("--dir") + 1]
        assert "noeviction" == args[args.index("--maxmemory-policy") + 1]

    def test_url_names_the_service_and_password(self) -> None:
        """The example Secret's URL reaches this Redis with the password Redis requires."""
        redis = k8s_object("StatefulSet", "redis")
        service = service_for(redis)
        secret = k8s_object("Secret", "runstream-redis")["stringData"]
        url = urlsplit(secret["RUNSTREAM_REDIS_URL"])
        (port,) = service["spec"]["ports"]

        assert service["metadata"]["name"] == (url.hostname or "").split(".")[0]
        assert port["port"] == url.port
        assert 6379 == container_port(only_container(redis), port["targetPort"])
        assert secret["password"] == url.password == k8s_environment(only_container(redis))["REDIS_PASSWORD"]


# --- the Redis Cluster variants ------------------------------------------------------

_COMPOSE_INTERPOLATION = re.compile(r"\$\$|\$\{\w+:-([^}]*)\}")  # what compose replaces in a value
_KUBELET_REFERENCE = re.compile(r"\$\$|\$\((\w+)\)")  # what the kubelet replaces in command, args and env
STATEFULSET = "redis-cluster"
CLUSTER_JOB = "redis-cluster-create"


def option(argv: Sequence[str], name: str) -> str | None:
    """The value after ``name`` in an argument list (the last one: redis-server keeps the last)."""
    positions = [i for i, word in enumerate(argv) if name == word]
    return argv[positions[-1] + 1] if positions else None


def with_options(argv: Sequence[str], values: Mapping[str, str]) -> list[str]:
    """``argv`` with the values of some of its options replaced (each must be there)."""
    changed = list(argv)
    for name, value in values.items():
        positions = [i for i, word in enumerate(changed) if name == word]
        assert positions, f"no {name} in {argv}"
        changed[positions[-1] + 1] = value
    return changed


def compose_value(text: str) -> str:
    """A compose string as the container gets it: ``$$`` is a ``$``, ``${NAME:-default}`` its default."""
    return _COMPOSE_INTERPOLATION.sub(lambda m: "$" if "$$" == m.group(0) else m.group(1), text)


def kubelet_expand(text: str, environment: Mapping[str, str]) -> str:
    """A command, argument or env value as the kubelet hands it over: ``$(NAME)`` replaced."""
    return _KUBELET_REFERENCE.sub(
        lambda m: "$" if "$$" == m.group(0) else environment.get(m.group(1), m.group(0)), text
    )


def shell_script(command: Sequence[str]) -> str:
    """The script of a ``sh -c SCRIPT`` command."""
    assert ["sh", "-c"] == list(command[:2])
    assert 3 == len(command)
    return command[2]


def create_command(script: str) -> list[str]:
    """The script's ``redis-cli --cluster create`` command, as words."""
    (line,) = [line for line in script.splitlines() if "--cluster create" in line]
    return shlex.split(line)


def node_list(value: str) -> list[tuple[str, int]]:
    """A ``NODES`` value (``host:port host:port ...``) as (host, port) pairs."""
    return [(host, int(port)) for host, _, port in (word.rpartition(":") for word in value.split())]


def url_nodes(url: str) -> list[tuple[str, int]]:
    """The nodes a ``RUNSTREAM_REDIS_URL`` names: its one node, or each node of a seed list."""
    seeds = seed_nodes(url)
    if seeds is not None:
        return seeds
    parts = urlsplit(url)
    return [(parts.hostname or "", parts.port or 6379)]


def local_url(url: str, stand_ins: Mapping[tuple[str, int], tuple[str, int]]) -> str:
    """``url`` naming the stand-ins of its nodes (its user and password kept)."""
    parts = urlsplit(url)
    userinfo, at, _ = parts.netloc.rpartition("@")
    nodes = ",".join(f"{host}:{port}" for host, port in (stand_ins[node] for node in url_nodes(url)))
    return urlunsplit(parts._replace(netloc=f"{userinfo}{at}{nodes}"))


def cluster_nodes() -> dict[str, dict[str, Any]]:
    """The services of compose.cluster.yaml running a cluster-mode redis-server, by name."""
    return {
        name: service
        for name, service in compose(COMPOSE_CLUSTER)["services"].items()
        if ["redis-server"] == compose_command(service)[:1]
        and "yes" == option(compose_command(service), "--cluster-enabled")
    }


def node_port(service: dict[str, Any]) -> int:
    return int(option(compose_command(service), "--port") or 6379)


def cluster_init() -> tuple[str, dict[str, Any]]:
    """The compose service that creates the cluster: its name and itself."""
    services = compose(COMPOSE_CLUSTER)["services"].items()
    (found,) = [(n, s) for n, s in services if "--cluster create" in " ".join(compose_command(s))]
    return found


def cluster_runstream_environments() -> list[tuple[str, dict[str, str]]]:
    """(where, environment) of every runstream process of the two cluster variants."""
    return [
        *((where, compose_environment(s)) for where, s in runstream_services() if where.startswith("compose.cluster ")),
        *((f"k8s/cluster {w}", k8s_environment(c, "k8s/cluster")) for w, c in runstream_containers("k8s/cluster")),
    ]


def statefulset_container() -> dict[str, Any]:
    return only_container(k8s_object("StatefulSet", STATEFULSET, "k8s/cluster"))


def job_container() -> dict[str, Any]:
    return only_container(k8s_object("Job", CLUSTER_JOB, "k8s/cluster"))


def pod_addresses() -> list[tuple[str, int]]:
    """Every pod of the StatefulSet at its name under the headless Service, and the Redis port."""
    statefulset = k8s_object("StatefulSet", STATEFULSET, "k8s/cluster")
    port = container_port(statefulset_container(), "redis")
    service = statefulset["spec"]["serviceName"]
    return [(f"{STATEFULSET}-{i}.{service}", port) for i in range(statefulset["spec"]["replicas"])]


def primaries(create: list[str], nodes: int) -> int:
    """How many primaries ``redis-cli --cluster create`` makes of ``nodes`` nodes."""
    return nodes // (1 + int(option(create, "--cluster-replicas") or 0))


class TestComposeCluster:
    """compose.cluster.yaml: six cluster nodes, a one-shot create, four collectors and two servers on the cluster."""

    def test_six_nodes_in_cluster_mode_with_their_own_volumes(self) -> None:
        nodes = cluster_nodes()
        volumes = {name: {v.split(":")[1]: v.split(":")[0] for v in s["volumes"]} for name, s in nodes.items()}
        commands = [compose_command(service) for service in nodes.values()]

        assert 6 == len(nodes)
        assert {"redis"} == {s["image"].partition(":")[0] for s in nodes.values()}
        assert all("yes" == option(c, "--appendonly") for c in commands)
        assert all("everysec" == option(c, "--appendfsync") for c in commands)
        assert all("noeviction" == option(c, "--maxmemory-policy") for c in commands)
        # nodes.conf is written in --dir, the volume: a node keeps its identity across restarts.
        assert all("/" not in (option(c, "--cluster-config-file") or "/") for c in commands)
        assert {"/data"} == {option(c, "--dir") for c in commands}
        assert len(nodes) == len({v["/data"] for v in volumes.values()})
        assert {v["/data"] for v in volumes.values()} <= compose(COMPOSE_CLUSTER)["volumes"].keys()

    def test_node_health_checks_ping(self) -> None:
        assert all(["redis-cli", "ping"] == s["healthcheck"]["test"][-2:] for s in cluster_nodes().values())

    def test_nodes_keep_their_addresses(self) -> None:
        """Fixed addresses, outside the range other containers get: a cluster re-made containers still find."""
        (pool,) = compose(COMPOSE_CLUSTER)["networks"]["default"]["ipam"]["config"]
        subnet, dynamic = ipaddress.ip_network(pool["subnet"]), ipaddress.ip_network(pool["ip_range"])
        addresses = [ipaddress.ip_address(s["networks"]["default"]["ipv4_address"]) for s in cluster_nodes().values()]

        assert len(addresses) == len(set(addresses))
        assert all(a in subnet and a not in dynamic for a in addresses)

    def test_init_creates_three_primaries_with_a_replica_each(self) -> None:
        init = cluster_init()[1]
        script = compose_value(shell_script(compose_command(init)))
        create = create_command(script)
        nodes = node_list(compose_environment(init)["NODES"])

        assert ["redis-cli", "--cluster", "create", "$NODES"] == create[:4]
        assert "1" == option(create, "--cluster-replicas")
        assert "--cluster-yes" in create
        assert sorted((name, node_port(s)) for name, s in cluster_nodes().items()) == sorted(nodes)
        assert 3 == primaries(create, len(nodes)) == len(nodes) - primaries(create, len(nodes))

    def test_init_runs_once_every_node_is_up(self) -> None:
        init = cluster_init()[1]

        assert "no" == init["restart"]
        assert dict.fromkeys(cluster_nodes(), "service_healthy") == {
            name: dependency["condition"] for name, dependency in init["depends_on"].items()
        }

    def test_every_shell_dollar_is_escaped_from_compose(self) -> None:
        """Compose would replace an unescaped ``$NAME`` in the script with the host's variable."""
        script = shell_script(compose_command(cluster_init()[1]))

        assert "$" not in script.replace("$$", "")

    def test_same_script_as_the_kubernetes_job(self) -> None:
        compose_script = compose_value(shell_script(compose_command(cluster_init()[1])))

        assert shell_script(job_container()["command"]) == compose_script

    def test_at_least_two_collectors_and_two_servers(self) -> None:
        collectors = [s.get("deploy", {}).get("replicas", 1) for s in compose_services("collector", COMPOSE_CLUSTER)]
        servers = [s.get("deploy", {}).get("replicas", 1) for s in compose_services("serve", COMPOSE_CLUSTER)]

        assert 2 <= sum(collectors)
        assert 2 <= sum(servers)

    def test_runstream_services_use_the_cluster_once_it_is_made(self) -> None:
        services = [*compose_services("collector", COMPOSE_CLUSTER), *compose_services("serve", COMPOSE_CLUSTER)]
        nodes = {(name, node_port(s)) for name, s in cluster_nodes().items()}
        init_name, _ = cluster_init()

        assert all(set(url_nodes(compose_environment(s)["RUNSTREAM_REDIS_URL"])) <= nodes for s in services)
        assert ["service_completed_successfully"] * len(services) == [
            s["depends_on"][init_name]["condition"] for s in services
        ]

    def test_each_server_replica_has_a_host_port(self) -> None:
        (server,) = compose_services("serve", COMPOSE_CLUSTER)
        _, params = parse_command_line(compose_command(server))
        (published,) = server["ports"]
        hosts, _, target = str(published).rpartition(":")
        first, _, last = hosts.rpartition(":")[2].partition("-")

        assert params["port"] == int(target)
        assert server["deploy"]["replicas"] <= int(last or first) - int(first) + 1
        assert f":{params['port']}{HEALTH_PATH}" in " ".join(server["healthcheck"]["test"])

    def test_server_data_dir_is_a_volume(self) -> None:
        (server,) = compose_services("serve", COMPOSE_CLUSTER)
        mounts = {v.split(":")[1]: v.split(":")[0] for v in server["volumes"]}

        assert mounts[compose_environment(server)["RUNSTREAM_DATA_DIR"]] in compose(COMPOSE_CLUSTER)["volumes"]


class TestKubernetesCluster:
    """k8s/cluster/: a StatefulSet of six cluster nodes under a headless Service, the Job that joins them."""

    def test_headless_service_names_the_pods(self) -> None:
        statefulset = k8s_object("StatefulSet", STATEFULSET, "k8s/cluster")
        service = service_for(statefulset, "k8s/cluster")
        ports = {
            p["name"]: (p["port"], container_port(statefulset_container(), p["targetPort"]))
            for p in service["spec"]["ports"]
        }

        assert statefulset["spec"]["serviceName"] == service["metadata"]["name"]
        assert "None" == service["spec"]["clusterIP"]
        # The Job and the restart hook reach the pods by name before any is ready.
        assert service["spec"]["publishNotReadyAddresses"] is True
        assert (6379, 6379) == ports["redis"]
        assert (6379 + 10000, 6379 + 10000) == ports["bus"]

    def test_six_nodes_in_cluster_mode_on_their_volumes(self) -> None:
        statefulset = k8s_object("StatefulSet", STATEFULSET, "k8s/cluster")
        container = statefulset_container()
        args = container["args"]
        (template,) = statefulset["spec"]["volumeClaimTemplates"]
        mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}

        assert 6 == statefulset["spec"]["replicas"]
        assert "yes" == option(args, "--cluster-enabled")
        assert "yes" == option(args, "--appendonly")
        assert "noeviction" == option(args, "--maxmemory-policy")
        # The AOF and nodes.conf (relative: in --dir) are on the pod's own claim.
        assert mounts[template["metadata"]["name"]] == option(args, "--dir")
        assert "/" not in (option(args, "--cluster-config-file") or "/")
        assert ["ReadWriteOnce"] == template["spec"]["accessModes"]

    def test_announces_the_pod_ip(self) -> None:
        container = statefulset_container()
        (entry,) = [e for e in container["env"] if "POD_IP" == e["name"]]
        environment = k8s_environment(container, "k8s/cluster", {"status.podIP": "10.9.8.7"})
        args = [kubelet_expand(a, environment) for a in container["args"]]

        assert {"fieldRef": {"fieldPath": "status.podIP"}} == entry["valueFrom"]
        assert "10.9.8.7" == option(args, "--cluster-announce-ip")

    def test_one_password_for_clients_replicas_and_redis_cli(self) -> None:
        container = statefulset_container()
        environment = k8s_environment(container, "k8s/cluster")
        args = [kubelet_expand(a, environment) for a in container["args"]]
        secret = k8s_object("Secret", "runstream-redis-cluster", "k8s/cluster")["stringData"]

        assert secret["password"] == option(args, "--requirepass") == option(args, "--masterauth")
        assert (
            secret["password"]
            == environment["REDISCLI_AUTH"]
            == k8s_environment(job_container(), "k8s/cluster")["REDISCLI_AUTH"]
        )
        assert secret["password"] == urlsplit(secret["RUNSTREAM_REDIS_URL"]).password

    def test_nodes_names_every_pod(self) -> None:
        """The hook and the Job reach every pod, by the name the headless Service gives it."""
        for container in (statefulset_container(), job_container()):
            assert pod_addresses() == node_list(k8s_environment(container, "k8s/cluster")["NODES"])

    def test_job_creates_three_primaries_with_a_replica_each(self) -> None:
        script = shell_script(job_container()["command"])
        create = create_command(script)
        pods = len(pod_addresses())

        assert ["redis-cli", "--cluster", "create", "$NODES"] == create[:4]
        assert "1" == option(create, "--cluster-replicas")
        assert "--cluster-yes" in create
        assert 3 == primaries(create, pods) == pods - primaries(create, pods)
        assert "OnFailure" == pod_spec(k8s_object("Job", CLUSTER_JOB, "k8s/cluster"))["restartPolicy"]

    def test_scripts_are_left_alone_by_the_kubelet(self) -> None:
        """``$(NAME)`` in a command is the kubelet's; the scripts use only the shell's ``${NAME}``."""
        hook = statefulset_container()["lifecycle"]["postStart"]["exec"]["command"]
        scripts = [shell_script(job_container()["command"]), shell_script(hook)]
        environment = k8s_environment(statefulset_container(), "k8s/cluster")

        assert scripts == [kubelet_expand(s, environment) for s in scripts]

    def test_readiness_waits_for_the_cluster(self) -> None:
        """A rolling update moves on to the next node only once the cluster is whole again."""
        probe = " ".join(statefulset_container()["readinessProbe"]["exec"]["command"])
        statefulset = k8s_object("StatefulSet", STATEFULSET, "k8s/cluster")

        assert "cluster_state:ok" in probe
        assert "master_link_status" in probe
        assert "Parallel" == statefulset["spec"]["podManagementPolicy"]  # else pod 1 waits for pod 0 forever

    def test_one_node_at_a_time_is_disrupted(self) -> None:
        (budget,) = [o for o in k8s_objects("k8s/cluster") if "PodDisruptionBudget" == o["kind"]]
        statefulset = k8s_object("StatefulSet", STATEFULSET, "k8s/cluster")

        assert 1 == budget["spec"]["maxUnavailable"]
        assert budget["spec"]["selector"] == statefulset["spec"]["selector"]

    def test_runstream_containers_use_the_cluster(self) -> None:
        """Each URL names the headless Service or one of its pods, at the Redis port, with the password."""
        service = k8s_object("StatefulSet", STATEFULSET, "k8s/cluster")["spec"]["serviceName"]
        namespace = k8s_object("StatefulSet", STATEFULSET, "k8s/cluster")["metadata"]["namespace"]
        names = {service, *(host for host, _ in pod_addresses())}
        password = k8s_object("Secret", "runstream-redis-cluster", "k8s/cluster")["stringData"]["password"]
        urls = [
            k8s_environment(c, "k8s/cluster")["RUNSTREAM_REDIS_URL"] for _, c in runstream_containers("k8s/cluster")
        ]

        assert 2 == len(urls)
        for url in urls:
            assert password == urlsplit(url).password
            for host, port in url_nodes(url):
                assert 6379 == port
                assert any(host in {name, f"{name}.{namespace}.svc.cluster.local"} for name in names), host

    def test_at_least_two_collectors_and_two_servers(self) -> None:
        replicas = {
            name: k8s_object("Deployment", name, "k8s/cluster")["spec"]["replicas"]
            for name in ("runstream-collector", "runstream-server")
        }

        assert all(2 <= count for count in replicas.values())


class TestClusterShards:
    """Every runstream process on a cluster has the same shard count, enough to spread over the primaries."""

    @pytest.mark.parametrize(
        ("where", "environment"), cluster_runstream_environments(), ids=[w for w, _ in cluster_runstream_environments()]
    )
    def test_set_explicitly(self, where: str, environment: dict[str, str]) -> None:
        assert "RUNSTREAM_SHARDS" in environment, where

    def test_the_same_everywhere_and_four_per_primary(self, tmp_path: Path) -> None:
        counts = {
            where: Settings.from_config(tmp_path, env=environment).shards
            for where, environment in cluster_runstream_environments()
        }
        compose_primaries = primaries(
            create_command(compose_value(shell_script(compose_command(cluster_init()[1])))), len(cluster_nodes())
        )
        k8s_primaries = primaries(create_command(shell_script(job_container()["command"])), len(pod_addresses()))

        assert 4 == len(counts)
        assert 1 == len(set(counts.values())), counts
        assert 4 * max(compose_primaries, k8s_primaries) <= min(counts.values())


# --- the Redis Cluster variants, run ---------------------------------------------------

REDIS_SERVER, REDIS_CLI = shutil.which("redis-server"), shutil.which("redis-cli")
needs_redis = pytest.mark.skipif(
    REDIS_SERVER is None or REDIS_CLI is None, reason="redis-server and redis-cli are not on PATH"
)
#: The ``runstream`` command of this environment: the image's entrypoint.
RUNSTREAM = Path(sys.executable).with_name("runstream")
#: Seconds anything started here may take to be ready.
READY_WITHIN = 30.0


def wait_until(ready: Callable[[], bool], what: str, timeout: float = READY_WITHIN, every: float = 0.05) -> None:
    """Poll ``ready`` every ``every`` seconds until it holds, for ``timeout`` seconds at most."""
    deadline = time.monotonic() + timeout
    while not ready():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout:.0f} s: {what}")
        time.sleep(every)


def end(process: subprocess.Popen[bytes], sig: signal.Signals, timeout: float) -> int:
    """Send ``sig`` and wait; SIGKILL if the process outlives ``timeout``.  Its exit code."""
    if process.poll() is None:
        process.send_signal(sig)
    try:
        return process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        return process.wait()


@dataclass(frozen=True, slots=True)
class NodeView:
    """One line of CLUSTER NODES, as one node sees another."""

    node_id: str
    address: tuple[str, int]
    primary: bool
    primary_id: str
    has_slots: bool
    healthy: bool


class Nodes:
    """``redis-server`` processes started from a deploy file's arguments; all killed on exit."""

    def __init__(self, folder: Path, password: str | None = None) -> None:
        self.folder = folder
        self.password = password
        self.processes: dict[tuple[str, int], subprocess.Popen[bytes]] = {}

    def start(self, argv: list[str], address: tuple[str, int]) -> None:
        log = self.folder / f"redis-{address[0]}-{address[1]}.log"
        with log.open("ab") as output:
            self.processes[address] = process = subprocess.Popen(argv, stdout=output, stderr=subprocess.STDOUT)
        try:
            wait_until(lambda: process.poll() is None and self.answers(address), f"redis-server {argv} answers")
        except AssertionError:
            raise AssertionError(log.read_text(errors="replace")[-2000:]) from None

    def client(self, address: tuple[str, int]) -> redis.Redis:
        host, port = address
        return redis.Redis(host=host, port=port, password=self.password, socket_timeout=5, decode_responses=True)

    def answers(self, address: tuple[str, int]) -> bool:
        try:
            with self.client(address) as client:
                return bool(client.ping())
        except redis.RedisError:
            return False

    def view(self, address: tuple[str, int]) -> list[NodeView]:
        """The cluster as the node at ``address`` sees it."""
        with self.client(address) as client:
            nodes = cast("dict[str, dict[str, Any]]", client.cluster("nodes"))
        return [
            NodeView(
                node["node_id"],
                (host, int(port)),
                "master" in node["flags"],
                node["master_id"],
                bool(node["slots"]),
                node["connected"] and "fail" not in node["flags"],
            )
            for host, _, port in (key.rpartition(":") for key in nodes)
            for node in [nodes[f"{host}:{port}"]]
        ]

    def settled(self, addresses: Sequence[tuple[str, int]]) -> bool:
        """Whether every node serves the whole cluster, sees every other one at its address,
        connected, and (a replica) is in sync with its primary."""
        for address in addresses:
            try:
                with self.client(address) as client:
                    state = cast("dict[str, str]", client.cluster("info"))["cluster_state"]
                    replication = cast("dict[str, Any]", client.info("replication"))
                view = self.view(address)
            except redis.RedisError:
                return False
            if "ok" != state or set(addresses) != {n.address for n in view} or not all(n.healthy for n in view):
                return False
            if "slave" == replication["role"] and "up" != replication["master_link_status"]:
                return False
        return True

    def stop(self) -> None:
        """SIGTERM every node (each writes its AOF and nodes.conf) and wait."""
        for process in self.processes.values():
            process.terminate()
        for process in self.processes.values():
            end(process, signal.SIGKILL, READY_WITHIN)
        self.processes.clear()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        for process in self.processes.values():
            end(process, signal.SIGKILL, READY_WITHIN)


def assert_three_primaries_with_a_replica_each(view: list[NodeView], first: Sequence[tuple[str, int]]) -> None:
    primaries = {n.node_id: n for n in view if n.primary}
    replicas = [n for n in view if not n.primary]

    assert 3 == len(primaries)
    assert all(p.has_slots for p in primaries.values())
    assert {n.address for n in primaries.values()} == set(first)
    assert sorted(primaries) == sorted(r.primary_id for r in replicas)


def run_script(command: list[str], environment: Mapping[str, str]) -> subprocess.CompletedProcess[str]:
    """A ``sh -c`` script of a deploy file, with the container's environment (and PATH)."""
    return subprocess.run(
        command,
        env={**environment, "PATH": os.environ["PATH"]},
        capture_output=True,
        text=True,
        timeout=READY_WITHIN,
        check=False,
    )


def loopback_addresses(count: int, ports: Sequence[int], avoid: Sequence[str] = ()) -> list[str]:
    """``count`` addresses of 127.0.0.0/8 free on ``ports``: the pod IPs of one host's pods."""
    for _ in range(20):
        block = f"127.{64 + secrets.randbelow(190)}.{secrets.randbelow(256)}"
        addresses = [f"{block}.{10 + i}" for i in range(count)]
        if not set(addresses) & set(avoid) and all(bindable(a, p) for a in addresses for p in ports):
            return addresses
    pytest.skip("no free addresses in 127.0.0.0/8 (only Linux routes all of it to the loopback)")


def bindable(address: str, port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind((address, port))
        except OSError:
            return False
        return True


def redis_version() -> tuple[int, ...]:
    out = subprocess.run([REDIS_SERVER or "redis-server", "--version"], capture_output=True, text=True, check=True)
    (version,) = re.findall(r"v=(\d+(?:\.\d+)*)", out.stdout)
    return tuple(int(part) for part in version.split("."))


@dataclass(frozen=True, slots=True)
class ComposeCluster:
    """compose.cluster.yaml's nodes, running on loopback ports, and the first run of its init."""

    nodes: Nodes
    #: Each node service's (name, port) and the address it runs at here.
    stand_ins: dict[tuple[str, int], tuple[str, int]]
    init_environment: dict[str, str]
    first_run: subprocess.CompletedProcess[str]


@pytest.fixture(scope="class")
def compose_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ComposeCluster]:
    """The compose file's six nodes (one host: loopback ports instead of container addresses), joined by its init."""
    folder = tmp_path_factory.mktemp("compose-cluster")
    services = cluster_nodes()
    with Nodes(folder) as nodes:
        stand_ins = {}
        for name, service in services.items():
            address = ("127.0.0.1", free_port())
            (folder / name).mkdir()
            argv = with_options(
                [compose_value(word) for word in compose_command(service)],
                {"--port": str(address[1]), "--dir": str(folder / name)},
            )
            # Six containers have an address each; six processes on one host share one.
            nodes.start([*argv, "--bind", address[0], "--cluster-port", str(free_port())], address)
            stand_ins[name, node_port(service)] = address
        init = cluster_init()[1]
        environment = compose_environment(init)
        environment["NODES"] = " ".join(f"{h}:{p}" for h, p in (stand_ins[n] for n in node_list(environment["NODES"])))
        first_run = run_script([compose_value(word) for word in compose_command(init)], environment)
        yield ComposeCluster(nodes, stand_ins, environment, first_run)


@needs_redis
@pytest.mark.slow
@pytest.mark.timeout(180)
class TestComposeClusterRuns:
    """compose.cluster.yaml for real: its node arguments and init make a cluster its collector and server use."""

    def test_init_makes_three_primaries_with_a_replica_each(self, compose_cluster: ComposeCluster) -> None:
        # In the order of the create command: the first three become the primaries.
        addresses = [
            compose_cluster.stand_ins[node] for node in node_list(compose_environment(cluster_init()[1])["NODES"])
        ]
        wait_until(lambda: compose_cluster.nodes.settled(addresses), "the cluster settles")

        assert 0 == compose_cluster.first_run.returncode, compose_cluster.first_run.stderr
        assert "the cluster is up" == compose_cluster.first_run.stdout.splitlines()[-1]
        assert_three_primaries_with_a_replica_each(compose_cluster.nodes.view(addresses[0]), addresses[:3])

    def test_init_again_changes_nothing(self, compose_cluster: ComposeCluster) -> None:
        address = next(iter(compose_cluster.stand_ins.values()))
        before = sorted(compose_cluster.nodes.view(address), key=lambda n: n.node_id)
        (_, init) = cluster_init()

        again = run_script([compose_value(word) for word in compose_command(init)], compose_cluster.init_environment)

        assert (0, "the cluster is up already\n") == (again.returncode, again.stdout)
        assert [n.node_id for n in before] == sorted(n.node_id for n in compose_cluster.nodes.view(address))

    def test_collector_and_server_run_on_it(self, compose_cluster: ComposeCluster, tmp_path: Path) -> None:
        """The collector takes every shard's lease (on all three primaries); the server's health
        check passes and shows that collector; on SIGTERM the collector gives its leases back."""
        (collector,) = compose_services("collector", COMPOSE_CLUSTER)
        (server,) = compose_services("serve", COMPOSE_CLUSTER)
        environment = compose_environment(collector)
        environment |= {
            "RUNSTREAM_REDIS_URL": local_url(environment["RUNSTREAM_REDIS_URL"], compose_cluster.stand_ins),
            "RUNSTREAM_DATA_DIR": str(tmp_path),
            "HOME": str(tmp_path),
        }
        settings = Settings.from_config(tmp_path, env=environment)
        leases = [Keys(settings.workspace, settings.key_prefix, settings.shards).ingest_lease(s) for s in range(16)]
        port = free_port()
        serve = with_options(compose_command(server), {"--port": str(port)})
        health = [word.replace(":8080/", f":{port}/") for word in server["healthcheck"]["test"][1:]]
        some_node = next(iter(compose_cluster.stand_ins.values()))

        with (
            redis.RedisCluster(host=some_node[0], port=some_node[1], decode_responses=True) as cluster,
            (tmp_path / "collector.log").open("wb") as collector_log,
            (tmp_path / "server.log").open("wb") as server_log,
        ):
            processes = [
                subprocess.Popen(
                    [str(RUNSTREAM), *argv], env=environment | {"PATH": os.environ["PATH"]}, stdout=log, stderr=log
                )
                for argv, log in ((compose_command(collector), collector_log), (serve, server_log))
            ]
            try:
                wait_until(lambda: all(cluster.get(lease) for lease in leases), "the collector holds every shard")
                owners = {cluster.get(lease) for lease in leases}
                lease_nodes = {cluster.get_node_from_key(lease).port for lease in leases}
                python = [sys.executable, *health[1:]]
                wait_until(lambda: 0 == run_check(python), "the server's health check passes", every=0.5)
                reported = json.loads(http_get(port, HEALTH_PATH))["collectors"]
                stopped = end(processes[0], signal.SIGTERM, float(collector["stop_grace_period"].rstrip("s")))
                left = [lease for lease in leases if cluster.get(lease)]
            finally:
                for process in processes:
                    end(process, signal.SIGKILL, READY_WITHIN)

        assert 16 == settings.shards
        assert 1 == len(owners)
        assert 3 == len(lease_nodes)
        assert owners == reported.keys()
        assert (0, []) == (stopped, left)


def run_check(argv: list[str]) -> int:
    """Run a health check command; its exit code."""
    return subprocess.run(argv, capture_output=True, check=False, timeout=10).returncode


def http_get(port: int, path: str) -> str:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        assert 200 == response.status
        return response.read().decode()
    finally:
        connection.close()


@needs_redis
@pytest.mark.slow
@pytest.mark.timeout(180)
class TestKubernetesClusterRuns:
    """k8s/cluster/ for real: six pods' arguments (each on a loopback address of its own, as
    pods have IPs of their own), the Job's script, and the restart hook."""

    def test_created_and_rejoined_after_every_pod_moves(self, tmp_path: Path) -> None:
        """The Job makes 3 primaries with a replica each; after all six pods restart at once
        with new IPs, the hook rejoins them: the same node ids, the same data."""
        if redis_version() < (7, 0):
            pytest.skip("bind-source-addr (one address per node on one host) needs Redis 7")
        container, job = statefulset_container(), job_container()
        hook = container["lifecycle"]["postStart"]["exec"]["command"]
        port = container_port(container, "redis")
        password = k8s_environment(container, "k8s/cluster")["REDIS_PASSWORD"]
        pods = pod_addresses()
        before = loopback_addresses(len(pods), [port, port + 10000])
        moved = loopback_addresses(len(pods), [port, port + 10000], avoid=before)

        def with_nodes(environment: dict[str, str], stand_ins: list[tuple[str, int]]) -> dict[str, str]:
            """``environment`` with its NODES (pod names) naming the pods' stand-ins."""
            address = dict(zip(pods, stand_ins, strict=True))
            nodes = [address[pod] for pod in node_list(environment["NODES"])]
            return environment | {"NODES": " ".join(f"{h}:{p}" for h, p in nodes)}

        def start(nodes: Nodes, ips: list[str]) -> list[tuple[str, int]]:
            """The pods on ``ips``: their containers started, then their postStart hooks run."""
            stand_ins = [(ip, port) for ip in ips]
            hook_environments = []
            for i, ip in enumerate(ips):
                environment = with_nodes(k8s_environment(container, "k8s/cluster", {"status.podIP": ip}), stand_ins)
                argv = [kubelet_expand(word, environment) for word in container["args"]]
                (tmp_path / f"pod-{i}").mkdir(exist_ok=True)
                argv = with_options(argv, {"--dir": str(tmp_path / f"pod-{i}")})
                nodes.start([*argv, "--bind", ip, "--bind-source-addr", ip], (ip, port))
                hook_environments.append(environment)
            for environment in hook_environments:
                ran = run_script(hook, environment)
                assert 0 == ran.returncode, ran.stderr
            return stand_ins

        with Nodes(tmp_path, password) as nodes:
            first = start(nodes, before)
            alone = [len(nodes.view(address)) for address in first]
            created = run_script(job["command"], with_nodes(k8s_environment(job, "k8s/cluster"), first))
            wait_until(lambda: nodes.settled(first), "the cluster settles")
            view = nodes.view(first[0])
            with redis.RedisCluster(host=first[0][0], port=port, password=password, decode_responses=True) as cluster:
                for n in range(30):
                    cluster.set(f"key-{n}", str(n))

            nodes.stop()
            second = start(nodes, moved)
            wait_until(lambda: nodes.settled(second), "the cluster settles at the pods' new addresses")
            after = nodes.view(second[0])
            with redis.RedisCluster(host=second[0][0], port=port, password=password, decode_responses=True) as cluster:
                values = [cluster.get(f"key-{n}") for n in range(30)]

        assert [1] * len(pods) == alone  # a new node's hook leaves it alone for the Job
        assert 0 == created.returncode, created.stderr
        assert_three_primaries_with_a_replica_each(view, first[:3])
        assert sorted(n.node_id for n in view) == sorted(n.node_id for n in after)
        assert set(second) == {n.address for n in after}
        assert [str(n) for n in range(30)] == values


class TestSystemd:
    """The units: the real commands, the shared environment file, restart, SIGTERM and hardening."""

    @pytest.mark.parametrize("name", UNITS)
    def test_service_settings(self, name: str) -> None:
        service = unit(name)["Service"]

        assert [ENV_FILE] == service["EnvironmentFile"]
        assert ["on-failure"] == service["Restart"]
        assert ["SIGTERM"] == service["KillSignal"]
        assert ["yes"] == service["NoNewPrivileges"]
        assert ["strict"] == service["ProtectSystem"]
        assert service["User"][0] not in {"root", "0"}
        assert re.fullmatch(r"\d+s?", service["TimeoutStopSec"][0])

    @pytest.mark.parametrize("name", UNITS)
    def test_exec_start_is_absolute(self, name: str) -> None:
        argv = shlex.split(service_setting(name, "ExecStart"))

        assert Path(argv[0]).is_absolute()

    @pytest.mark.parametrize("name", UNITS)
    def test_installed_for_boot(self, name: str) -> None:
        assert ["multi-user.target"] == unit(name)["Install"]["WantedBy"]

    def test_server_writes_only_its_data_dir(self) -> None:
        data_dir = env_file(SYSTEMD / "runstream.env.example")["RUNSTREAM_DATA_DIR"]

        assert data_dir == service_setting("runstream-server.service", "ReadWritePaths")


def kubectl_applies(text: str) -> list[list[Path]]:
    """The files each ``kubectl apply -f ...`` command of a text (comment or README) applies, in order
    (a folder's files in name order, as kubectl takes them)."""
    joined = re.sub(r"\\\n[#\s]*", " ", text)  # continuation lines, in a comment too
    commands = [shlex.split(line.lstrip("# ")) for line in joined.splitlines() if "kubectl apply" in line]
    named = [[REPO / words[i + 1] for i, word in enumerate(words) if "-f" == word] for words in commands]
    return [
        [f for path in paths for f in (sorted(path.glob("*.yaml")) if path.is_dir() else [path])] for paths in named
    ]


class TestReadme:
    """deploy/README.md names files that exist and keeps the executors section."""

    def test_named_files_exist(self) -> None:
        text = (DEPLOY / "README.md").read_text(encoding="utf-8")
        paths = re.findall(r"(?<![\w/])(?:deploy|k8s|systemd)/[\w./*-]*", text)
        manifests = re.findall(r"(?<![\w/])\d\d-[\w-]+\.yaml", text)  # "skip 20-redis.yaml"
        named = {*(p.removeprefix("deploy/").rstrip("/.") for p in paths), *(f"k8s/{m}" for m in manifests)}

        assert set() == {name for name in named if not list(DEPLOY.glob(name))}

    def test_cluster_is_applied_as_tested(self) -> None:
        """The cluster's kubectl command (README, k8s/cluster/10-settings.yaml) applies the files checked here."""
        texts = [(DEPLOY / "README.md").read_text(encoding="utf-8"), (K8S_CLUSTER / "10-settings.yaml").read_text()]

        commands = [c for text in texts for c in kubectl_applies(text) if any(K8S_CLUSTER == f.parent for f in c)]

        assert [MANIFEST_SETS["k8s/cluster"]] * 2 == commands

    def test_executors_section_kept(self) -> None:
        text = (DEPLOY / "README.md").read_text(encoding="utf-8")

        assert "## Running submitted scripts elsewhere" in text
        assert "Kubernetes executor" in text
