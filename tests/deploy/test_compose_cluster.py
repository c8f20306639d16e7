"""deploy/compose.cluster.yaml: the Redis Cluster compose file, read and run.

Run for real: its ``redis-server`` arguments and cluster-create script start six nodes on
loopback ports, and its collector and server run against them.
"""

from __future__ import annotations

import http.client
import ipaddress
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
import redis

from runstream import Settings
from runstream.keys import Keys
from runstream.redis_server import free_port
from tests.deploy.cluster import (
    cluster_init,
    cluster_nodes,
    compose_value,
    create_command,
    job_container,
    node_list,
    node_port,
    option,
    primaries,
    shell_script,
    url_nodes,
    with_options,
)
from tests.deploy.files import (
    COMPOSE_CLUSTER,
    HEALTH_PATH,
    READY_PATH,
    compose,
    compose_command,
    compose_environment,
    compose_services,
    parse_command_line,
)
from tests.deploy.nodes import (
    READY_WITHIN,
    Nodes,
    assert_three_primaries_with_a_replica_each,
    end,
    needs_redis,
    run_script,
    wait_until,
)

#: The ``runstream`` command of this environment: the image's entrypoint.
RUNSTREAM = Path(sys.executable).with_name("runstream")


def local_url(url: str, stand_ins: Mapping[tuple[str, int], tuple[str, int]]) -> str:
    """``url`` naming the stand-ins of its nodes (its user and password kept)."""
    parts = urlsplit(url)
    userinfo, at, _ = parts.netloc.rpartition("@")
    nodes = ",".join(f"{host}:{port}" for host, port in (stand_ins[node] for node in url_nodes(url)))
    return urlunsplit(parts._replace(netloc=f"{userinfo}{at}{nodes}"))


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
        assert f":{params['port']}{READY_PATH}'" in " ".join(server["healthcheck"]["test"])

    def test_server_data_dir_is_a_volume(self) -> None:
        (server,) = compose_services("serve", COMPOSE_CLUSTER)
        mounts = {v.split(":")[1]: v.split(":")[0] for v in server["volumes"]}

        assert mounts[compose_environment(server)["RUNSTREAM_DATA_DIR"]] in compose(COMPOSE_CLUSTER)["volumes"]


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
