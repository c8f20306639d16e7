"""Every ``RUNSTREAM_*`` setting deploy/ passes is read back through :meth:`runstream.Settings.from_config`.

Also: every YAML file in deploy/ parses, and every process on a Redis Cluster has the same shard count.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import fields
from pathlib import Path

import pytest

from runstream import Settings
from tests.deploy.cluster import (
    cluster_init,
    cluster_nodes,
    compose_value,
    create_command,
    job_container,
    pod_addresses,
    primaries,
    shell_script,
)
from tests.deploy.files import (
    COMPOSE_FILES,
    DEPLOY,
    MANIFEST_SETS,
    SYSTEMD,
    compose,
    compose_command,
    compose_environment,
    env_file,
    image_environment,
    k8s_environment,
    load_yaml,
    package_sources,
    runstream_containers,
    runstream_services,
)

_VARIABLE = re.compile(r"\bRUNSTREAM_[A-Z0-9_]+")


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


def cluster_runstream_environments() -> list[tuple[str, dict[str, str]]]:
    """(where, environment) of every runstream process of the two cluster variants."""
    return [
        *((where, compose_environment(s)) for where, s in runstream_services() if where.startswith("compose.cluster ")),
        *((f"k8s/cluster {w}", k8s_environment(c, "k8s/cluster")) for w, c in runstream_containers("k8s/cluster")),
    ]


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
