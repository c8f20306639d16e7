"""A private Redis Cluster on loopback ports: ``redis-server --cluster-enabled yes`` nodes
joined by ``redis-cli --cluster create``.

Used by the tests and benchmarks that show runstream on a cluster: they start one,
kill and fail over its nodes, and tear it down after.  Each node is a
:class:`~runstream.redis_server.RedisServer` of its own.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Self, cast

import redis

from runstream.errors import ConfigError
from runstream.redis_server import RedisServer, free_port

__all__ = ["RedisClusterServers"]


class RedisClusterServers:
    """``masters`` primaries, each with ``replicas`` replicas, on 127.0.0.1.

    Args:
        folder: where the nodes keep their files (a temp folder by default).
        masters: how many primaries share the 16384 slots (3 at least, as Redis asks).
        replicas: replicas per primary; with one, a killed primary is failed over.
        node_timeout_ms: how long a primary may be unreachable before its replica takes
            over (Redis' default is 15 s; tests want it short).
        appendonly: persist each node's writes to an AOF (fsync every second).
    """

    def __init__(
        self,
        folder: Path | None = None,
        *,
        masters: int = 3,
        replicas: int = 0,
        node_timeout_ms: int = 1000,
        appendonly: bool = False,
    ) -> None:
        if masters < 3:
            raise ValueError("a Redis Cluster needs 3 primaries at least")
        if shutil.which("redis-cli") is None:
            raise ConfigError("redis-cli is not installed (apt-get install redis-tools)")
        self._own_folder = folder is None
        self.folder = folder or Path(tempfile.mkdtemp(prefix="runstream-cluster-"))
        self.masters = masters
        self.replicas = replicas
        self.nodes = [
            RedisServer(
                self.folder / f"node{n}",
                appendonly=appendonly,
                appendfsync="everysec",
                args=_node_args(node_timeout_ms),
            )
            for n in range(masters * (1 + replicas))
        ]

    @property
    def url(self) -> str:
        """The URL of one node: all runstream needs to find the whole cluster."""
        return f"redis://127.0.0.1:{self.nodes[0].port}"

    @property
    def seed_url(self) -> str:
        """A URL naming every node (the seed-list form)."""
        return "redis://" + ",".join(f"127.0.0.1:{node.port}" for node in self.nodes)

    def start(self, timeout: float = 30.0) -> Self:
        """Start the nodes, join them into a cluster and wait until every slot is served."""
        for node in self.nodes:
            node.start()
        command = [
            "redis-cli", "--cluster", "create",
            *(f"127.0.0.1:{node.port}" for node in self.nodes),
            "--cluster-replicas", str(self.replicas),
            "--cluster-yes",
        ]  # fmt: skip
        create = subprocess.run(  # noqa: S603  # our own argv, redis-cli found on PATH as redis-server is
            command,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if create.returncode != 0:
            self.kill()
            raise ConfigError(f"redis-cli --cluster create failed: {create.stdout[-2000:]}{create.stderr[-2000:]}")
        self.wait_healthy(timeout)
        return self

    def wait_healthy(self, timeout: float = 30.0) -> None:
        """Wait until every running node says the cluster is ok and agrees on the primaries,
        and every replica is in sync with its primary."""
        deadline = time.monotonic() + timeout
        while not self.healthy():
            if time.monotonic() > deadline:
                raise ConfigError(f"the cluster on ports {[n.port for n in self.nodes]} did not become healthy")
            time.sleep(0.05)

    def healthy(self) -> bool:
        """Whether every running node says the cluster is ok, they agree on ``masters``
        primaries, none of which is stopped, and every replica is in sync."""
        views = self.views()
        running = {node.port for node in self.running()}
        return views is not None and len(set(views)) == 1 and len(views[0]) == self.masters and views[0] <= running

    def views(self) -> list[frozenset[int]] | None:
        """Each running node's primaries (ports, failed ones left out); None while a node
        says the cluster is not ok, or a replica is out of sync."""
        views = []
        for node in self.running():
            try:
                with self.client(node) as client:
                    info = cast("dict[str, object]", client.cluster("info"))
                    replication = cast("dict[str, object]", client.info("replication"))
                    views.append(frozenset(self._primaries(client)))
            except (redis.RedisError, redis.exceptions.RedisClusterException):
                return None
            if info.get("cluster_state") != "ok":
                return None
            if replication.get("role") == "slave" and replication.get("master_link_status") != "up":
                return None
        return views

    def primaries(self) -> list[RedisServer]:
        """The running nodes that serve slots now."""
        views = self.views() or []
        ports = set.intersection(*(set(v) for v in views)) if views else set()
        return [node for node in self.running() if node.port in ports]

    @staticmethod
    def _primaries(client: redis.Redis) -> list[int]:
        nodes = cast("dict[str, dict[str, object]]", client.cluster("nodes"))
        return sorted(
            int(address.rsplit(":", 1)[1].split("@")[0])
            for address, node in nodes.items()
            if "master" in str(node.get("flags")) and "fail" not in str(node.get("flags")) and node.get("slots")
        )

    def running(self) -> list[RedisServer]:
        return [node for node in self.nodes if node.pid is not None]

    def client(self, node: RedisServer) -> redis.Redis:
        """A plain (not cluster) client of one node, for looking at or steering it."""
        return redis.Redis(host="127.0.0.1", port=node.port, socket_timeout=5)

    def primary_of(self, key: str) -> RedisServer:
        """The node now serving ``key``'s slot."""
        for node in self.running():
            with self.client(node) as client:
                slot = cast("int", client.cluster("keyslot", key))
                role = cast("dict[str, object]", client.info("replication"))["role"]
                if role != "master":
                    continue
                owned = cast("list[list[object]]", client.execute_command("CLUSTER", "SLOTS"))
                if any(cast("int", start) <= slot <= cast("int", end) and _port(first) == node.port
                       for start, end, first, *_ in owned):  # fmt: skip
                    return node
        raise ConfigError(f"no running primary serves the slot of {key!r}")

    def node_id(self, node: RedisServer) -> str:
        with self.client(node) as client:
            return cast("bytes", client.execute_command("CLUSTER", "MYID")).decode()

    def kill(self) -> None:
        for node in self.nodes:
            node.kill()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.kill()
        if self._own_folder:
            shutil.rmtree(self.folder, ignore_errors=True)


def _node_args(node_timeout_ms: int) -> tuple[str, ...]:
    return (
        "--cluster-enabled", "yes",
        "--cluster-config-file", "nodes.conf",
        "--cluster-node-timeout", str(node_timeout_ms),
        # The bus port is named, not port + 10000, which may be taken (or past 65535).
        "--cluster-port", str(free_port()),
    )  # fmt: skip


def _port(node: object) -> int:
    """The port of a node entry of CLUSTER SLOTS (``[host, port, id, ...]``)."""
    return int(cast("list[int]", node)[1])
