"""deploy/k8s/: the Kubernetes manifests, and what both variants (k8s/, k8s/cluster/) share."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.deploy.files import (
    LIVE_PATH,
    MANIFEST_SETS,
    READY_PATH,
    container_port,
    final_stage,
    k8s_environment,
    k8s_object,
    k8s_objects,
    load_yaml,
    only_container,
    parse_command_line,
    pod_spec,
    service_for,
)


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
    """Servers: 2 replicas, token-free probes (/api/v1/health/ready, /live) at the port they serve, behind a Service."""

    def test_replicas(self, variant: str) -> None:
        assert 2 <= k8s_object("Deployment", "runstream-server", variant)["spec"]["replicas"]

    @pytest.mark.parametrize(("probe", "path"), [("readinessProbe", READY_PATH), ("livenessProbe", LIVE_PATH)])
    def test_probe_on_health_at_the_served_port(self, variant: str, probe: str, path: str) -> None:
        container = only_container(k8s_object("Deployment", "runstream-server", variant))
        check = container[probe]["httpGet"]
        _, params = parse_command_line(container["args"])
        (port,) = container["ports"]

        assert path == check["path"]
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
