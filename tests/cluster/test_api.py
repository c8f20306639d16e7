"""The whole API on a real 3-primary Redis Cluster, reached through the URL of one node.

Runs land on every primary (each run's keys share one hash tag, so one slot), ingest
shards too; logging, reading, listing, the REST API, live updates and
``wait_for_completion`` work as they do on one server.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis
from pytest_aiohttp import AiohttpClient
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import MovedError

from runstream import Experiment, Run, Workspace
from runstream.connection import connect, seed_nodes
from runstream.consumer._widget_state import RunState, read_record
from runstream.consumer.reader import RecordReader
from runstream.consumer.server import ServerSettings, create_app
from runstream.consumer.subscribe import Update, subscribe
from runstream.redis_cluster import RedisClusterServers
from tests.cluster.conftest import client_kind, cluster_client
from tests.conftest import CollectorThread

RUNS = 12  # runs logged to, at the least
MAX_RUNS = 60  # runs made at most until their records fall on every primary (all three: 1 - 3 x (2/3)**60)


class TestConnect:
    """``RUNSTREAM_REDIS_URL`` set to any one node of a cluster just works; seeds too."""

    def test_one_node_url_gives_a_cluster_client(self, cluster: RedisClusterServers, redis_url: str) -> None:
        assert "RedisCluster" == asyncio.run(client_kind(cluster.url))
        for node in cluster.nodes:  # any node, not only the first
            assert "RedisCluster" == asyncio.run(client_kind(f"redis://127.0.0.1:{node.port}/0"))
        assert "Redis" == asyncio.run(client_kind(redis_url))  # a server alone stays a plain client

    def test_seed_list(self, cluster: RedisClusterServers) -> None:
        assert [("127.0.0.1", node.port) for node in cluster.nodes] == seed_nodes(cluster.seed_url)
        assert "RedisCluster" == asyncio.run(client_kind(cluster.seed_url))
        assert seed_nodes(cluster.url) is None

    def test_a_bad_seed_list_is_named(self) -> None:
        with pytest.raises(ValueError, match=r"HOST:PORT.*'nohost'"):
            seed_nodes("redis://user:secret@a:1,nohost")

    def test_a_cluster_client_follows_every_slot(self, cluster: RedisClusterServers) -> None:
        async def spread() -> set[int]:
            async with connect(cluster.url) as client:
                assert isinstance(client, RedisCluster)
                for n in range(30):
                    await client.set(f"rs-test-spread-{n}", n)
                return {int(node.port) for n in range(30) if (node := client.get_node_from_key(f"rs-test-spread-{n}"))}

        assert 3 == len(asyncio.run(spread()))

    def test_a_command_racing_a_fail_overs_disconnect_is_answered(self, cluster: RedisClusterServers) -> None:
        """A fail-over makes the client drop a node's free connections from one task while
        another takes one to send on: that command is answered (reconnected and retried),
        never met with the ``AttributeError`` on ``None`` that ended a collector."""

        async def race() -> list[object]:
            answers: list[object] = []
            async with connect(cluster.url) as client:
                assert isinstance(client, RedisCluster)
                await client.set("rs-test-race", b"here")
                node = client.get_node_from_key("rs-test-race")
                assert node is not None
                for yields in range(8):  # the command starts at each step of the disconnects in turn

                    async def command(yields: int = yields) -> object:
                        for _ in range(yields):
                            await asyncio.sleep(0)
                        return await client.get("rs-test-race")

                    drop = node.disconnect_free_connections
                    raced = await asyncio.gather(drop(), command(), drop(), return_exceptions=True)
                    answers.append(raced[1])
            return answers

        assert [b"here"] * 8 == asyncio.run(race())


def log_everything(run: Run, image: Path, n: int) -> dict[str, Any]:
    """Log one of each shape (DESIGN §2) into ``run``; what get_metrics must then return."""
    for v in (1.0, 0.5, math.inf):
        run.log("loss", v + n)
    run.log("epochs", n)
    run.log_list("accuracy", [0.6, 0.7])
    run.log_row("Y over X", x=1, y=0.4)
    run.log_row("Y over X", x=2, y=0.5)
    run.log_table("Sine Wave", {"angle": [0, 1], "sine": [0.0, 0.84]})
    run.log_image("ROC", path=image)
    run.tag("index", str(n))
    run.upload_file("outputs/notes.txt", str(image))
    return {
        "loss": [1.0 + n, 0.5 + n, math.inf],
        "epochs": n,
        "accuracy": [0.6, 0.7],
        "Y over X": {"x": [1, 2], "y": [0.4, 0.5]},
        "Sine Wave": {"angle": [0, 1], "sine": [0.0, 0.84]},
        "ROC": "roc.png",
    }


class TestEndToEnd:
    """The SDK, the collector, the readers and the server on a cluster."""

    def test_runs_on_every_primary(
        self,
        cluster: RedisClusterServers,
        cluster_workspace: Workspace,
        start_collector: Callable[..., CollectorThread],
        tmp_path: Path,
    ) -> None:
        image = tmp_path / "roc.png"
        image.write_bytes(b"\x89PNG")
        start_collector(cluster_workspace)
        experiment = Experiment(cluster_workspace, "on-a-cluster")
        parent = experiment.start_logging()
        keys = cluster_workspace.keys
        runs: list[Run] = []
        primaries: set[int] = set()  # the ports of the primaries holding the runs' records
        # Run ids are random: twelve runs miss one of three primaries about one time in forty,
        # so runs are added (before any is logged to) until every primary holds one.
        while len(runs) < RUNS or (len(primaries) < 3 and len(runs) < MAX_RUNS):
            runs.append(parent.child_run(f"child-{len(runs)}"))
            primaries.add(cluster.primary_of(keys.meta(runs[-1].id)).port)
        expected = {run.id: log_everything(run, image, n) for n, run in enumerate(runs)}
        for run in runs:
            run.complete()
        parent.complete()

        for run in runs:
            assert expected[run.id] == run.get_metrics()
            assert "Completed" == run.get_status()
            details = run.get_details()
            assert {"index": str(expected[run.id]["epochs"])} == {
                k: v for k, v in details["tags"].items() if k == "index"
            }
            assert "outputs/notes.txt" in run.get_file_names()
        assert {run.id for run in runs} == {child.id for child in parent.get_children()}
        listed = [run.id for run in experiment.get_runs(include_children=True)]
        assert {parent.id, *expected} == set(listed)

        shards = {cluster.primary_of(keys.ingest(shard)).port for shard in range(keys.shards)}
        assert 3 == len(primaries), "the runs' records are spread over every primary"
        assert 3 == len(shards), "the ingest shards are spread over every primary"
        client = cluster_client(cluster.url)
        try:
            assert 0 == client.xlen(keys.deadletter())
        finally:
            client.close()

    async def test_server_and_live_updates(
        self,
        cluster_workspace: Workspace,
        start_collector: Callable[..., CollectorThread],
        aiohttp_client: AiohttpClient,
    ) -> None:
        start_collector(cluster_workspace)
        api = await aiohttp_client(create_app(ServerSettings(workspace=cluster_workspace.settings)))
        experiment = Experiment(cluster_workspace, "served")
        runs = [experiment.start_logging() for _ in range(6)]
        for n, run in enumerate(runs):
            for step in range(100):
                run.log("loss", step * n)
        for run in runs:
            await asyncio.to_thread(run.complete)

        listed = await (await api.get("/api/v1/runs", params={"experiment": "served"})).json()
        assert {run.id for run in runs} == {r["id"] for r in listed["runs"]}
        experiments = await (await api.get("/api/v1/experiments")).json()
        assert [{"name": "served", "runs": 6}] == [
            {"name": e["name"], "runs": e["runs"]} for e in experiments["experiments"]
        ]
        for n, run in enumerate(runs):
            response = await api.get(f"/api/v1/runs/{run.id}/metrics/loss")
            body = json.loads(await response.read())
            assert 200 == response.status, body
            assert [step * n for step in range(100)] == body["values"]
            sse = await api.get(f"/api/v1/runs/{run.id}/events", params={"from": "0-0"})
            assert 200 == sse.status
            seen: list[str] = []
            async for raw in sse.content:
                seen.append(raw.decode())
                if raw.startswith(b"event: end"):
                    break
            text = "".join(seen)
            assert '"status": "Completed"' in text or '"status":"Completed"' in text, text[-500:]
            sse.close()

        async with connect(cluster_workspace.settings.redis_url) as client:
            updates = [
                item
                async for item in subscribe(client, cluster_workspace.keys, runs[-1].id, start="beginning")
                if isinstance(item, Update)
            ]
        assert updates, "the live stream of a run on a cluster is followed from its start"
        details = await asyncio.to_thread(runs[0].wait_for_completion)
        assert "Completed" == details["status"]


def test_the_notebook_widget_reads_a_record_at_once(
    cluster_workspace: Workspace, start_collector: Callable[..., CollectorThread]
) -> None:
    """The widget reads a record in one MULTI, which a cluster allows for the keys of one slot (one run)."""
    start_collector(cluster_workspace)
    run = Experiment(cluster_workspace, "widget").start_logging()
    for step in range(5):
        run.log("loss", 1.0 / (step + 1))
    run.tag("lr", "0.1")
    run.complete()

    async def read() -> RunState:
        state = RunState(name="", cap=1000, lines=100)
        async with connect(cluster_workspace.settings.redis_url) as client:
            await read_record(RecordReader(client, cluster_workspace.keys), run.id, state)
        return state

    state = asyncio.run(read())
    assert ("Completed", {"lr": "0.1"}) == (state.status, state.tags)
    assert [1.0, 0.5, 1 / 3, 0.25, 0.2] == state.metrics["loss"].ys


def test_a_plain_client_is_redirected(cluster: RedisClusterServers, cluster_workspace: Workspace) -> None:
    """What the tests' own looks rely on: a plain client of one node gets MOVED for another's slot
    (so a runstream client that ignored cluster mode would fail, not pass by luck)."""
    keys = cluster_workspace.keys
    other = next(s for s in range(keys.shards) if cluster.primary_of(keys.ingest(s)).port != cluster.nodes[0].port)
    plain = redis.Redis(host="127.0.0.1", port=cluster.nodes[0].port)
    try:
        with pytest.raises(MovedError):
            plain.xlen(keys.ingest(other))
    finally:
        plain.close()
