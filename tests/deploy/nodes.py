"""``redis-server`` nodes started from a deploy file's arguments on loopback, and the scripts run beside them.

Shared by the modules that run the Redis Cluster variants (compose.cluster.yaml, k8s/cluster/).
Every node is killed when its :class:`Nodes` closes.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self, cast

import pytest
import redis

REDIS_SERVER, REDIS_CLI = shutil.which("redis-server"), shutil.which("redis-cli")
needs_redis = pytest.mark.skipif(
    REDIS_SERVER is None or REDIS_CLI is None, reason="redis-server and redis-cli are not on PATH"
)
#: Seconds anything started here may take to be ready.
READY_WITHIN = 30.0


def wait_until(ready: Callable[[], bool], what: str, timeout: float = READY_WITHIN, every: float = 0.05) -> None:
    """Poll ``ready`` every ``every`` seconds until it holds, for ``timeout`` seconds at most."""
    deadline = time.monotonic() + timeout
    while not ready():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout:.0f} s: {what}")
        time.sleep(every)


def end(process: subprocess.Popen[bytes], sig: signal.Signals, timeout: float) -> int:
    """Send ``sig`` and wait; SIGKILL if the process outlives ``timeout``.  Its exit code."""
    if process.poll() is None:
        process.send_signal(sig)
    try:
        return process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        return process.wait()


@dataclass(frozen=True, slots=True)
class NodeView:
    """One line of CLUSTER NODES, as one node sees another."""

    node_id: str
    address: tuple[str, int]
    primary: bool
    primary_id: str
    has_slots: bool
    healthy: bool


class Nodes:
    """``redis-server`` processes started from a deploy file's arguments; all killed on exit."""

    def __init__(self, folder: Path, password: str | None = None) -> None:
        self.folder = folder
        self.password = password
        self.processes: dict[tuple[str, int], subprocess.Popen[bytes]] = {}

    def start(self, argv: list[str], address: tuple[str, int]) -> None:
        log = self.folder / f"redis-{address[0]}-{address[1]}.log"
        with log.open("ab") as output:
            self.processes[address] = process = subprocess.Popen(argv, stdout=output, stderr=subprocess.STDOUT)
        try:
            wait_until(lambda: process.poll() is None and self.answers(address), f"redis-server {argv} answers")
        except AssertionError:
            raise AssertionError(log.read_text(errors="replace")[-2000:]) from None

    def client(self, address: tuple[str, int]) -> redis.Redis:
        host, port = address
        return redis.Redis(host=host, port=port, password=self.password, socket_timeout=5, decode_responses=True)

    def answers(self, address: tuple[str, int]) -> bool:
        try:
            with self.client(address) as client:
                return bool(client.ping())
        except redis.RedisError:
            return False

    def view(self, address: tuple[str, int]) -> list[NodeView]:
        """The cluster as the node at ``address`` sees it."""
        with self.client(address) as client:
            nodes = cast("dict[str, dict[str, Any]]", client.cluster("nodes"))
        return [
            NodeView(
                node["node_id"],
                (host, int(port)),
                "master" in node["flags"],
                node["master_id"],
                bool(node["slots"]),
                node["connected"] and "fail" not in node["flags"],
            )
            for host, _, port in (key.rpartition(":") for key in nodes)
            for node in [nodes[f"{host}:{port}"]]
        ]

    def settled(self, addresses: Sequence[tuple[str, int]]) -> bool:
        """Whether every node serves the whole cluster, sees every other one at its address,
        connected, and (a replica) is in sync with its primary."""
        for address in addresses:
            try:
                with self.client(address) as client:
                    state = cast("dict[str, str]", client.cluster("info"))["cluster_state"]
                    replication = cast("dict[str, Any]", client.info("replication"))
                view = self.view(address)
            except redis.RedisError:
                return False
            if "ok" != state or set(addresses) != {n.address for n in view} or not all(n.healthy for n in view):
                return False
            if "slave" == replication["role"] and "up" != replication["master_link_status"]:
                return False
        return True

    def stop(self) -> None:
        """SIGTERM every node (each writes its AOF and nodes.conf) and wait."""
        for process in self.processes.values():
            process.terminate()
        for process in self.processes.values():
            end(process, signal.SIGKILL, READY_WITHIN)
        self.processes.clear()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        for process in self.processes.values():
            end(process, signal.SIGKILL, READY_WITHIN)


def assert_three_primaries_with_a_replica_each(view: list[NodeView], first: Sequence[tuple[str, int]]) -> None:
    primaries = {n.node_id: n for n in view if n.primary}
    replicas = [n for n in view if not n.primary]

    assert 3 == len(primaries)
    assert all(p.has_slots for p in primaries.values())
    assert {n.address for n in primaries.values()} == set(first)
    assert sorted(primaries) == sorted(r.primary_id for r in replicas)


def run_script(command: list[str], environment: Mapping[str, str]) -> subprocess.CompletedProcess[str]:
    """A ``sh -c`` script of a deploy file, with the container's environment (and PATH)."""
    return subprocess.run(
        command,
        env={**environment, "PATH": os.environ["PATH"]},
        capture_output=True,
        text=True,
        timeout=READY_WITHIN,
        check=False,
    )
