"""The Redis Cluster variants' parts, read: compose.cluster.yaml's nodes and init, k8s/cluster/'s StatefulSet and Job.

Shared by the modules that check each variant and by the shard-count check across both.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

from runstream.connection import seed_nodes
from tests.deploy.files import (
    COMPOSE_CLUSTER,
    compose,
    compose_command,
    container_port,
    k8s_object,
    only_container,
)

_COMPOSE_INTERPOLATION = re.compile(r"\$\$|\$\{\w+:-([^}]*)\}")  # what compose replaces in a value
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
