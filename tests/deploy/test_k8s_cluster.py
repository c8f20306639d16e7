"""deploy/k8s/cluster/: the Redis Cluster manifests, read and run.

Run for real: six pods' arguments (each on a loopback address of its own), the Job's
cluster-create script and the StatefulSet's restart hook.
"""

from __future__ import annotations

import re
import secrets
import socket
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import redis

from tests.deploy.cluster import (
    CLUSTER_JOB,
    STATEFULSET,
    create_command,
    job_container,
    node_list,
    option,
    pod_addresses,
    primaries,
    shell_script,
    statefulset_container,
    url_nodes,
    with_options,
)
from tests.deploy.files import (
    container_port,
    k8s_environment,
    k8s_object,
    k8s_objects,
    pod_spec,
    runstream_containers,
    service_for,
)
from tests.deploy.nodes import (
    REDIS_SERVER,
    Nodes,
    assert_three_primaries_with_a_replica_each,
    needs_redis,
    run_script,
    wait_until,
)

_KUBELET_REFERENCE = re.compile(r"\$\$|\$\((\w+)\)")  # what the kubelet replaces in command, args and env


def kubelet_expand(text: str, environment: Mapping[str, str]) -> str:
    """A command, argument or env value as the kubelet hands it over: ``$(NAME)`` replaced."""
    return _KUBELET_REFERENCE.sub(
        lambda m: "$" if "$$" == m.group(0) else environment.get(m.group(1), m.group(0)), text
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
