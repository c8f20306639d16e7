"""runstream.redis_settings: a Redis's memory and durability state, on one server and on a cluster."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from runstream.connection import connect
from runstream.redis_cluster import RedisClusterServers
from runstream.redis_server import RedisServer
from runstream.redis_settings import UNKNOWN, RedisSettings, read_redis_settings


def read(url: str) -> RedisSettings:
    async def go() -> RedisSettings:
        async with connect(url) as client:
            return await read_redis_settings(client)

    return asyncio.run(go())


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A Redis of this test's own, without persistence, with a 64 MB limit."""
    with RedisServer(tmp_path / "redis", args=("--maxmemory", "64mb")) as server:
        yield server


class TestOneRedis:
    """One server's settings are read as it states them."""

    def test_no_persistence(self, own_redis: RedisServer) -> None:
        state = read(own_redis.url)

        assert 64 * 1024 * 1024 == state.maxmemory
        assert "noeviction" == state.maxmemory_policy
        assert state.evicting is False
        assert state.aof_enabled is False
        assert "" == state.save
        assert state.persistent is False
        assert 0 < state.used_memory
        assert state.memory_fraction is not None
        assert 0 < state.memory_fraction < 1
        assert state.node is None

    def test_evicting_and_persistent(self, own_redis: RedisServer) -> None:
        with redis.Redis(port=own_redis.port) as client:
            client.config_set("maxmemory-policy", "allkeys-lru")
            client.config_set("save", "900 1")

        state = read(own_redis.url)

        assert "allkeys-lru" == state.maxmemory_policy
        assert state.evicting is True
        assert "900 1" == state.save
        assert state.persistent is True

    def test_aof(self, restartable_redis: RedisServer) -> None:
        state = read(restartable_redis.url)

        assert state.aof_enabled is True
        assert state.persistent is True
        assert 0 == state.maxmemory
        assert state.memory_fraction is None

    def test_config_refused(self, own_redis: RedisServer) -> None:
        with redis.Redis(port=own_redis.port) as client:
            client.acl_setuser("limited", enabled=True, passwords=["+pw"], keys=["*"], commands=["+@all", "-config"])

        state = read(f"redis://limited:pw@127.0.0.1:{own_redis.port}/0")

        assert UNKNOWN == state.save
        assert state.persistent is None
        assert "noeviction" == state.maxmemory_policy

    def test_info_refused(self, own_redis: RedisServer) -> None:
        with redis.Redis(port=own_redis.port) as client:
            client.acl_setuser(
                "writer", enabled=True, passwords=["+pw"], keys=["*"], commands=["+@all", "-config", "-info"]
            )

        state = read(f"redis://writer:pw@127.0.0.1:{own_redis.port}/0")

        assert UNKNOWN == state.maxmemory_policy
        assert state.evicting is None
        assert state.aof_enabled is None
        assert state.persistent is None


class TestCluster:
    """On a cluster every primary is read and the worst is reported."""

    def test_worst_primary(self, tmp_path: Path) -> None:
        with RedisClusterServers(tmp_path / "cluster") as cluster:
            primaries = cluster.primaries()
            with cluster.client(primaries[1]) as client:
                client.config_set("maxmemory-policy", "volatile-lru")
                client.config_set("maxmemory", str(2 * 1024 * 1024 * 1024))
            with cluster.client(primaries[2]) as client:
                client.config_set("maxmemory", str(1024 * 1024 * 1024))
            for node in primaries:
                with cluster.client(node) as client:
                    client.config_set("save", "900 1" if node is primaries[0] else "")

            state = read(cluster.url)

        assert "volatile-lru" == state.maxmemory_policy
        assert state.evicting is True
        assert 1024 * 1024 * 1024 == state.maxmemory
        assert f"127.0.0.1:{primaries[2].port}" == state.node
        assert state.persistent is False
