"""Health that tells the truth: ``/api/v1/health`` reports the collectors alive by their last report, the
lag, Redis's memory against ``maxmemory``, its eviction policy and persistence, and says "degraded" with
its reasons when one is wrong; the probes (``/api/v1/health/live``, ``/api/v1/health/ready``) need no
token and say nothing but a status; and the server refuses an evicting Redis at start, warns about one
that persists nothing, and still starts (answering 503) when Redis does not answer yet.

Against real redis-server processes: the session's (no persistence), and ones of a test's own.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import structlog
from aiohttp import web
from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpClient

from runstream import Workspace
from runstream.consumer.health import MAX_LAG, assess
from runstream.consumer.server import ServerSettings, create_app
from runstream.errors import ConfigError
from runstream.redis_server import RedisServer, free_port
from runstream.redis_settings import RedisSettings
from tests.conftest import CollectorThread, make_workspace

Client = TestClient[Any, Any]
TOKEN = "tok-4ea1"  # noqa: S105  # a test token
HEALTHY = RedisSettings(used_memory=10, maxmemory=0, maxmemory_policy="noeviction", aof_enabled=True, save="")


def report(reader: str, age: float, **fields: Any) -> dict[str, Any]:
    """A collector's published report, ``age`` seconds old, as the health endpoint reads it."""
    return {"reader": reader, "updated_at": time.time() - age, "lag": {}, "outage": None, **fields}


def alive(reader: str, **fields: Any) -> dict[str, Any]:
    return report(reader, 0.0, **fields) | {"alive": True}


class TestAssess:
    """The reasons the pipeline is degraded, from the collectors' reports and Redis's settings."""

    def test_healthy(self) -> None:
        assert [] == assess({"c1": alive("c1")}, HEALTHY)

    @pytest.mark.parametrize(
        ("collectors", "redis", "reason"),
        [
            ({}, HEALTHY, "no collector is alive"),
            ({"c1": report("c1", 1800) | {"alive": False}}, HEALTHY, "no collector is alive"),
            ({"c1": alive("c1", lag={"0": MAX_LAG, "1": 1})}, HEALTHY, f"lag {MAX_LAG + 1} ingest entries"),
            ({"c1": alive("c1", outage={"cause": "redis_full"})}, HEALTHY, "outage: redis_full"),
            ({"c1": alive("c1")}, RedisSettings(10, 0, "allkeys-lru", True, ""), "maxmemory-policy allkeys-lru"),
            ({"c1": alive("c1")}, RedisSettings(95, 100, "noeviction", True, ""), "95% of its maxmemory"),
            ({"c1": alive("c1")}, RedisSettings(10, 0, "noeviction", False, ""), "persists nothing"),
        ],
        ids=["no-report", "dead", "lag", "outage", "evicting", "full", "not-persistent"],
    )
    def test_one_thing_wrong(self, collectors: dict[str, dict[str, Any]], redis: RedisSettings, reason: str) -> None:
        reasons = assess(collectors, redis)

        assert 1 == len(reasons), reasons
        assert reason in reasons[0]

    def test_what_is_not_known_is_not_wrong(self) -> None:
        unknown = RedisSettings(0, 0, "unknown", None, "unknown")  # a managed Redis refusing INFO and CONFIG

        assert [] == assess({"c1": alive("c1")}, unknown)


async def json_of(client: Client, path: str, status: int = 200, headers: dict[str, str] | None = None) -> Any:
    response = await client.get(path, headers=headers or {})
    body = await response.json()
    assert status == response.status, body
    return body


async def until(condition: Callable[[], Awaitable[bool]], bound: float = 30.0, what: str = "condition") -> None:
    """Re-check an API read until it holds (each check is a round trip, not a sleep)."""
    deadline = time.monotonic() + bound
    while not await condition():
        assert time.monotonic() < deadline, f"timed out after {bound} s waiting for {what}"
        await asyncio.sleep(0.05)  # interval between two checks of the server's state


@pytest.fixture
def persistent(tmp_path: Path) -> Iterator[RedisServer]:
    """A Redis of the test's own that persists (AOF), with no memory limit."""
    with RedisServer(tmp_path / "redis", appendonly=True, appendfsync="everysec") as server:
        yield server


ServerOn = Callable[..., Awaitable[tuple[Client, Workspace]]]


@pytest.fixture
def server_on(aiohttp_client: AiohttpClient, tmp_path: Path) -> ServerOn:
    """A test client of a server (needing ``TOKEN``) for a fresh workspace on the Redis at ``url``."""

    async def make(url: str) -> tuple[Client, Workspace]:
        workspace = make_workspace(url, tmp_path / ".runstream")
        settings = ServerSettings(workspace=workspace.settings, tokens=frozenset({TOKEN}))
        return await aiohttp_client(create_app(settings)), workspace

    return make


class TestHealthReport:
    """``/api/v1/health`` (behind the token) is "ok" only when a collector is alive and Redis keeps records
    whole and durable, and lists what is wrong otherwise."""

    async def test_ok_with_a_live_collector_on_a_persistent_redis(
        self, persistent: RedisServer, server_on: ServerOn, start_collector: Callable[..., CollectorThread]
    ) -> None:
        client, workspace = await server_on(persistent.url)
        start_collector(workspace)
        bearer = {"Authorization": f"Bearer {TOKEN}"}

        async def reported() -> bool:
            return bool((await json_of(client, "/api/v1/health", headers=bearer))["collectors"])

        await until(reported, what="the collector's report")
        health = await json_of(client, "/api/v1/health", headers=bearer)
        refused = await client.get("/api/v1/health")
        (collector,) = health["collectors"].values()

        assert ("ok", []) == (health["status"], health["reasons"])
        assert collector["alive"]
        assert 2.0 == collector["lease_ttl"]  # start_collector's: what "alive" is judged by
        assert 0 == health["lag"]
        assert {"maxmemory_policy": "noeviction", "aof_enabled": True, "persistent": True} == {
            k: health["redis"][k] for k in ("maxmemory_policy", "aof_enabled", "persistent")
        }
        assert health["redis"]["used_memory"] > 0
        assert 401 == refused.status

    async def test_a_dead_collector_and_a_redis_without_persistence(self, redis_url: str, server_on: ServerOn) -> None:
        client, workspace = await server_on(redis_url)
        dead = report("gone-1", 1800)  # what a collector killed half an hour ago left
        with redis.Redis.from_url(redis_url) as plain:
            plain.hset(workspace.keys.collectors(), "gone-1", json.dumps(dead))

        health = await json_of(client, "/api/v1/health", headers={"Authorization": f"Bearer {TOKEN}"})

        assert "degraded" == health["status"]
        assert 2 == len(health["reasons"]), health["reasons"]
        assert "no collector is alive" in health["reasons"][0]
        assert "persists nothing" in health["reasons"][1]
        assert not health["collectors"]["gone-1"]["alive"]
        assert False is health["redis"]["persistent"]

    async def test_memory_near_maxmemory_and_an_evicting_policy(
        self, persistent: RedisServer, server_on: ServerOn, start_collector: Callable[..., CollectorThread]
    ) -> None:
        client, workspace = await server_on(persistent.url)
        start_collector(workspace)
        with redis.Redis.from_url(persistent.url) as plain:
            used = int(plain.info("memory")["used_memory"])
            plain.config_set("maxmemory", str(used))  # full: writes are refused from here on
            plain.config_set("maxmemory-policy", "allkeys-lru")  # switched after the server started

            health = await json_of(client, "/api/v1/health", headers={"Authorization": f"Bearer {TOKEN}"})
            plain.config_set("maxmemory", "0")
            plain.config_set("maxmemory-policy", "noeviction")

        assert "degraded" == health["status"]
        assert any("maxmemory-policy allkeys-lru" in r for r in health["reasons"])
        assert any("of its maxmemory" in r for r in health["reasons"])
        assert health["redis"]["memory_fraction"] > 0.9


class TestProbes:
    """The probes need no token and say nothing but a status: liveness "up" while the process serves,
    readiness 200 while Redis answers and 503 while it does not."""

    async def test_with_redis(self, redis_url: str, server_on: ServerOn) -> None:
        client, _ = await server_on(redis_url)

        live = await json_of(client, "/api/v1/health/live")
        ready = await json_of(client, "/api/v1/health/ready")

        assert {"status": "up"} == live
        assert {"status": "ready"} == ready

    async def test_without_redis(self, server_on: ServerOn) -> None:
        client, _ = await server_on(f"redis://127.0.0.1:{free_port()}/0")  # nothing listens there

        live = await json_of(client, "/api/v1/health/live")
        ready = await json_of(client, "/api/v1/health/ready", status=503)
        runs = await client.get("/api/v1/runs", headers={"Authorization": f"Bearer {TOKEN}"})

        assert {"status": "up"} == live
        assert {"status": "unavailable"} == ready
        assert 503 == runs.status


class TestStartChecks:
    """The server refuses a Redis that evicts (a one-line message naming maxmemory-policy, a non-zero exit),
    warns loudly about one that persists nothing, and starts when Redis does not answer yet."""

    def test_evicting_redis_is_refused_in_one_line(self, tmp_path: Path) -> None:
        with RedisServer(tmp_path / "redis", args=("--maxmemory-policy", "allkeys-lru")) as evicting:
            workspace = make_workspace(evicting.url, tmp_path / ".runstream")
            env = {
                "RUNSTREAM_REDIS_URL": evicting.url,
                "RUNSTREAM_WORKSPACE": workspace.name,
                "RUNSTREAM_DATA_DIR": str(tmp_path / ".runstream"),
                "PATH": "/usr/bin:/bin",
            }
            command = [sys.executable, "-c", "from runstream.consumer.cli import main; main()", "serve"]
            done = subprocess.run(
                [*command, "--port", str(free_port()), "--json"], env=env, capture_output=True, text=True, timeout=60
            )
        last = done.stderr.strip().splitlines()[-1]

        assert 1 == done.returncode
        assert last.startswith("Error: "), done.stderr
        assert "maxmemory-policy allkeys-lru" in last
        assert "noeviction" in last
        assert "Traceback" not in done.stderr

    async def test_evicting_redis_stops_the_app(self, tmp_path: Path) -> None:
        with RedisServer(tmp_path / "redis", args=("--maxmemory-policy", "volatile-lru")) as evicting:
            workspace = make_workspace(evicting.url, tmp_path / ".runstream")
            runner = web.AppRunner(create_app(ServerSettings(workspace=workspace.settings)))

            try:
                with pytest.raises(ConfigError, match="maxmemory-policy volatile-lru"):
                    await runner.setup()
            finally:
                await runner.cleanup()

    async def test_no_persistence_is_warned_about(self, redis_url: str, server_on: ServerOn) -> None:
        with structlog.testing.capture_logs() as logs:
            await server_on(redis_url)  # the session's Redis persists nothing

        warnings = [e for e in logs if e["event"] == "redis_not_persistent"]

        assert 1 == len(warnings)
        assert "warning" == warnings[0]["log_level"]
        assert "appendonly" in warnings[0]["hint"]

    async def test_redis_not_answering_yet(self, server_on: ServerOn) -> None:
        with structlog.testing.capture_logs() as logs:
            client, _ = await server_on(f"redis://127.0.0.1:{free_port()}/0")

        live = await client.get("/api/v1/health/live")

        assert 200 == live.status
        assert "redis_settings_unchecked" in [e["event"] for e in logs]
