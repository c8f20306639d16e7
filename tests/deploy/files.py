"""deploy/'s files, read: the paths, and readers for the Dockerfile, compose files, manifests and units.

Shared by every module of this package.  Each reader parses a file as the tool that runs it
would (``docker build``, ``docker compose``, ``kubectl apply``, systemd), far enough to check
it: YAML with PyYAML, the Dockerfile and the units line by line.  :func:`parse_command_line`
parses a ``runstream ...`` command line with the real click commands, without running it.
"""

from __future__ import annotations

import re
import shlex
import tomllib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import click
import yaml  # type: ignore[import-untyped]  # types-PyYAML is not among the dev dependencies

from runstream.consumer.cli import main
from runstream.consumer.server import serve_command

REPO = Path(__file__).resolve().parents[2]
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
#: The token-free probes: readiness (Redis answers) and liveness (the process serves).
READY_PATH = "/api/v1/health/ready"
LIVE_PATH = "/api/v1/health/live"
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


# --- the command lines found in all of deploy/ ----------------------------------------


#: The compose files, as ``where`` names them.
COMPOSE_FILES = {"compose": COMPOSE_FILE, "compose.cluster": COMPOSE_CLUSTER}


def runstream_services() -> Iterator[tuple[str, dict[str, Any]]]:
    """(where, service) for every compose service running the runstream image."""
    for label, path in COMPOSE_FILES.items():
        for name, service in compose(path)["services"].items():
            if is_runstream_image(service.get("image", "")):
                yield f"{label} {name}", service


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
