"""deploy/compose.yaml: the single-Redis compose file."""

from __future__ import annotations

from urllib.parse import urlsplit

from tests.deploy.files import (
    READY_PATH,
    compose,
    compose_command,
    compose_environment,
    compose_services,
    parse_command_line,
)


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

        assert f":{params['port']}{READY_PATH}'" in check
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
