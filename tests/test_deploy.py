"""deploy/: the image, compose file, Kubernetes manifests and systemd units agree with the code they run.

Nothing is started: the files are read (YAML with PyYAML, the Dockerfile and the units
line by line), every ``runstream ...`` command line in them is parsed by the real click
commands without running them, and every ``RUNSTREAM_*`` setting they pass is read back
through :meth:`runstream.Settings.from_config`.
"""

from __future__ import annotations

import re
import shlex
import tomllib
from collections.abc import Iterator
from dataclasses import fields
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import click
import pytest
import yaml  # type: ignore[import-untyped]  # types-PyYAML is not among the dev dependencies

from runstream import Settings
from runstream.consumer.cli import main
from runstream.consumer.server import serve_command

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy"
K8S = DEPLOY / "k8s"
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


def compose() -> dict[str, Any]:
    (document,) = load_yaml(DEPLOY / "compose.yaml")
    assert isinstance(document, dict)
    return document


def compose_services(command_name: str) -> list[dict[str, Any]]:
    """The compose services running ``runstream <command_name>``."""
    return [
        service
        for service in compose()["services"].values()
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


def k8s_objects() -> list[dict[str, Any]]:
    """Every document of every manifest under deploy/k8s/."""
    return [doc for path in sorted(K8S.glob("*.yaml")) for doc in load_yaml(path)]


def k8s_object(kind: str, name: str) -> dict[str, Any]:
    (found,) = [o for o in k8s_objects() if kind == o["kind"] and name == o["metadata"]["name"]]
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


def service_for(workload: dict[str, Any]) -> dict[str, Any]:
    """The one Service whose selector picks the workload's pods."""
    labels = workload["spec"]["template"]["metadata"]["labels"].items()
    (found,) = [o for o in k8s_objects() if "Service" == o["kind"] and o["spec"]["selector"].items() <= labels]
    return found


def k8s_env_value(entry: dict[str, Any]) -> str:
    """An ``env`` entry's value, looked up in the ConfigMap or Secret it refers to."""
    if "value" in entry:
        return str(entry["value"])
    source = entry["valueFrom"]
    if "secretKeyRef" in source:
        ref, data = source["secretKeyRef"], k8s_object("Secret", source["secretKeyRef"]["name"])["stringData"]
    else:
        ref, data = source["configMapKeyRef"], k8s_object("ConfigMap", source["configMapKeyRef"]["name"])["data"]
    return str(data[ref["key"]])


def k8s_environment(container: dict[str, Any]) -> dict[str, str]:
    """What the container's environment holds: ``envFrom`` sources, then ``env``."""
    environment: dict[str, str] = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            environment |= k8s_object("ConfigMap", source["configMapRef"]["name"])["data"]
        else:
            environment |= k8s_object("Secret", source["secretRef"]["name"])["stringData"]
    return environment | {entry["name"]: k8s_env_value(entry) for entry in container.get("env", [])}


def runstream_containers() -> list[tuple[str, dict[str, Any]]]:
    """(workload name, container) for every container running the runstream image."""
    return [
        (o["metadata"]["name"], c)
        for o in k8s_objects()
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


def runstream_command_lines() -> Iterator[tuple[str, list[str]]]:
    """(where, argv) for every process deploy/ starts from the runstream image or install."""
    entrypoint = exec_form("ENTRYPOINT")
    yield "Dockerfile CMD", [*entrypoint, *exec_form("CMD")]
    for name, service in compose()["services"].items():
        if is_runstream_image(service.get("image", "")):
            yield f"compose {name}", [*service.get("entrypoint", entrypoint), *compose_command(service)]
    for workload, container in runstream_containers():
        yield f"k8s {workload}", [*container.get("command", entrypoint), *container.get("args", [])]
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
    for service_name, service in compose()["services"].items():
        for name, value in compose_environment(service).items():
            yield f"compose {service_name}", name, value
    for workload, container in runstream_containers():
        for name, value in k8s_environment(container).items():
            yield f"k8s {workload}", name, value
    for name, value in env_file(SYSTEMD / "runstream.env.example").items():
        yield "runstream.env.example", name, value


def deploy_files() -> list[Path]:
    return sorted(p for p in DEPLOY.rglob("*") if p.is_file())


COMMAND_LINES = list(runstream_command_lines())
SETTINGS = [(where, name, value) for where, name, value in settings_variables() if name.startswith("RUNSTREAM_")]
#: (where, environment) of every runstream process deploy/ starts, and of the systemd units.
PART_ENVIRONMENTS = [
    *(
        (f"compose {n}", compose_environment(s))
        for n, s in compose()["services"].items()
        if is_runstream_image(s.get("image", ""))
    ),
    *((f"k8s {workload}", k8s_environment(c)) for workload, c in runstream_containers()),
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
        assert 2 <= sum(w.startswith("compose ") for w in wheres)
        assert 2 <= sum(w.startswith("k8s ") for w in wheres)


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

        assert 3 == len(hosts)
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


class TestKubernetesObjects:
    """The manifests: named objects in one namespace, every reference resolved."""

    def test_every_document_is_an_object(self) -> None:
        incomplete = [o for o in k8s_objects() if not (o.get("apiVersion") and o.get("kind") and o["metadata"]["name"])]

        assert [] == incomplete

    def test_the_expected_objects(self) -> None:
        kinds = {o["kind"] for o in k8s_objects()}

        assert {
            "Namespace",
            "ConfigMap",
            "Secret",
            "StatefulSet",
            "Service",
            "Deployment",
            "PersistentVolumeClaim",
        } <= kinds

    def test_all_in_the_namespace(self) -> None:
        (namespace,) = [o["metadata"]["name"] for o in k8s_objects() if "Namespace" == o["kind"]]
        namespaces = {o["metadata"].get("namespace") for o in k8s_objects() if "Namespace" != o["kind"]}

        assert {namespace} == namespaces

    def test_namespace_is_applied_first(self) -> None:
        """``kubectl apply -f deploy/k8s/`` goes in file-name order."""
        first = load_yaml(sorted(K8S.glob("*.yaml"))[0])

        assert ["Namespace"] == [o["kind"] for o in first]

    def test_references_resolve(self) -> None:
        """Every ConfigMap, Secret key and claim a pod names exists."""
        workloads = [o for o in k8s_objects() if o["kind"] in {"Deployment", "StatefulSet"}]
        claims = {o["metadata"]["name"] for o in k8s_objects() if "PersistentVolumeClaim" == o["kind"]}
        named = {
            v["persistentVolumeClaim"]["claimName"]
            for o in workloads
            for v in pod_spec(o).get("volumes", [])
            if "persistentVolumeClaim" in v
        }
        # k8s_environment looks every envFrom source and valueFrom key up (KeyError if absent).
        environments = [k8s_environment(c) for o in workloads for c in pod_spec(o)["containers"]]

        assert named <= claims
        assert all(value for environment in environments for value in environment.values())

    def test_workloads_select_their_pods(self) -> None:
        workloads = [o for o in k8s_objects() if o["kind"] in {"Deployment", "StatefulSet"}]

        astray = [
            o["metadata"]["name"]
            for o in workloads
            if not o["spec"]["selector"]["matchLabels"].items() <= o["spec"]["template"]["metadata"]["labels"].items()
        ]

        assert [] == astray

    @pytest.mark.parametrize("name", ["runstream-collector", "runstream-server"])
    def test_runs_as_the_image_user(self, name: str) -> None:
        security = pod_spec(k8s_object("Deployment", name))["securityContext"]
        (user,) = [args for keyword, args in final_stage() if "USER" == keyword]

        assert (True, int(user.split(":")[0])) == (security["runAsNonRoot"], security["runAsUser"])

    @pytest.mark.parametrize("name", ["runstream-collector", "runstream-server"])
    def test_resources_requested_and_limited(self, name: str) -> None:
        resources = only_container(k8s_object("Deployment", name))["resources"]

        assert {"cpu", "memory"} == resources["requests"].keys()
        assert {"cpu", "memory"} == resources["limits"].keys()


class TestKubernetesServer:
    """Servers: 2 replicas, probes on /api/v1/health at the port they serve, behind a Service."""

    def test_replicas(self) -> None:
        assert 2 <= k8s_object("Deployment", "runstream-server")["spec"]["replicas"]

    @pytest.mark.parametrize("probe", ["readinessProbe", "livenessProbe"])
    def test_probe_on_health_at_the_served_port(self, probe: str) -> None:
        container = only_container(k8s_object("Deployment", "runstream-server"))
        check = container[probe]["httpGet"]
        _, params = parse_command_line(container["args"])
        (port,) = container["ports"]

        assert HEALTH_PATH == check["path"]
        assert params["port"] == container_port(container, check["port"]) == port["containerPort"]

    def test_service_targets_the_served_port(self) -> None:
        server = k8s_object("Deployment", "runstream-server")
        container = only_container(server)
        _, params = parse_command_line(container["args"])
        (port,) = service_for(server)["spec"]["ports"]

        assert params["port"] == container_port(container, port["targetPort"])

    def test_data_dir_is_the_shared_claim(self) -> None:
        server = k8s_object("Deployment", "runstream-server")
        container = only_container(server)
        mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
        volumes = {v["name"]: v for v in pod_spec(server)["volumes"]}
        volume = volumes[mounts[k8s_environment(container)["RUNSTREAM_DATA_DIR"]]]
        claim = k8s_object("PersistentVolumeClaim", volume["persistentVolumeClaim"]["claimName"])

        assert ["ReadWriteMany"] == claim["spec"]["accessModes"]


class TestKubernetesCollector:
    """Collectors: at least 2 replicas, given time to finish their batch on SIGTERM."""

    def test_replicas(self) -> None:
        assert 2 <= k8s_object("Deployment", "runstream-collector")["spec"]["replicas"]

    def test_graceful_shutdown(self) -> None:
        spec = pod_spec(k8s_object("Deployment", "runstream-collector"))

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


class TestReadme:
    """deploy/README.md names files that exist and keeps the executors section."""

    def test_named_files_exist(self) -> None:
        text = (DEPLOY / "README.md").read_text(encoding="utf-8")
        paths = re.findall(r"(?<![\w/])(?:deploy|k8s|systemd)/[\w./*-]*", text)
        manifests = re.findall(r"(?<![\w/])\d\d-[\w-]+\.yaml", text)  # "skip 20-redis.yaml"
        named = {*(p.removeprefix("deploy/").rstrip("/.") for p in paths), *(f"k8s/{m}" for m in manifests)}

        assert set() == {name for name in named if not list(DEPLOY.glob(name))}

    def test_executors_section_kept(self) -> None:
        text = (DEPLOY / "README.md").read_text(encoding="utf-8")

        assert "## Running submitted scripts elsewhere" in text
        assert "Kubernetes executor" in text
