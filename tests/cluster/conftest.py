"""Fixtures: real Redis Clusters on loopback ports, and the battery's process factories.

``cluster``: 3 primaries, shared by a module's tests (each test takes a workspace of its
own on it).  ``replicated_cluster``: 3 primaries with a replica each, a test's own, for
tests that kill a primary and watch its replica take over.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from runstream import Workspace
from runstream.connection import connect
from runstream.redis_cluster import RedisClusterServers
from tests.battery.conftest import start_collector_process, started  # noqa: F401  # fixtures used here
from tests.conftest import make_workspace

#: Shards of a workspace on a cluster: enough that every primary holds some.
SHARDS = 16


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisClusterServers]:
    """A 3-primary cluster, for a module's tests."""
    with RedisClusterServers(tmp_path_factory.mktemp("cluster")) as servers:
        yield servers


@pytest.fixture
def replicated_cluster(tmp_path: Path) -> Iterator[RedisClusterServers]:
    """A 3-primary cluster with one replica per primary (fails over in about 2 s)."""
    with RedisClusterServers(tmp_path / "cluster", replicas=1) as servers:
        yield servers


@pytest.fixture
def cluster_workspace(cluster: RedisClusterServers, tmp_path: Path) -> Workspace:
    """A fresh workspace on the module's cluster, reached through the URL of one node."""
    return make_workspace(cluster.url, tmp_path / ".runstream", shards=SHARDS)


async def client_kind(url: str) -> str:
    """The class of the client ``connect`` gives for ``url`` ("Redis" or "RedisCluster"), once it answered."""
    async with connect(url) as client:
        await client.ping()
        return type(client).__name__


def cluster_client(url: str) -> redis.RedisCluster:
    """A plain synchronous cluster client, for the tests' own looks at the record."""
    return redis.RedisCluster.from_url(url, socket_timeout=10)
