"""The archive on a real 3-primary Redis Cluster: runs whose records live on every primary
are archived (by ``run.archive()`` and by the collector's retention) and read back the same.

Each run's keys share one hash tag, so the archive's swap script, the live stream's trim
and the restore each run on the one primary that holds the run; the workspace's indexes
(archive-due, summaries) live on whichever primary holds theirs.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

import pytest
import redis

from runstream import Experiment, Run, Workspace
from runstream.connection import connect
from runstream.consumer.reader import RecordReader
from runstream.redis_cluster import RedisClusterServers
from tests.cluster.conftest import cluster_client
from tests.conftest import CollectorThread, wait_until
from tests.test_archive import STUB, every_read, exact, log_everything

RUNS = 4  # runs archived, at the least
MAX_RUNS = 40  # runs made at most until their records fall on every primary (all three: 1 - 3 x (2/3)**40)


@pytest.fixture
def client(cluster: RedisClusterServers) -> Iterator[redis.RedisCluster]:
    connection = cluster_client(cluster.url)
    yield connection
    connection.close()


@pytest.fixture
def image(tmp_path: Path) -> Path:
    path = tmp_path / "roc.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(64))
    return path


def on_every_primary(cluster: RedisClusterServers, experiment: Experiment) -> list[Run]:
    """Runs started until their records are on all three primaries (run ids are random)."""
    runs: list[Run] = []
    primaries: set[int] = set()
    while len(runs) < RUNS or (len(primaries) < 3 and len(runs) < MAX_RUNS):
        runs.append(experiment.start_logging())
        primaries.add(cluster.primary_of(experiment.workspace.keys.meta(runs[-1].id)).port)
    assert 3 == len(primaries), "the runs' records are spread over every primary"
    return runs


def run_keys(client: redis.RedisCluster, workspace: Workspace, run_id: str) -> set[str]:
    """The parts of the run's keys that exist (``meta``, ``m:loss``, ...), on whichever primary."""
    prefix = f"{workspace.keys.prefix}:{workspace.name}:{{{run_id}}}:"
    return {key.decode().removeprefix(prefix) for key in client.scan_iter(match=f"{prefix}*")}


async def reads_of(workspace: Workspace, run_ids: list[str]) -> dict[str, dict[str, Any]]:
    async with connect(workspace.settings.redis_url) as redis_client:
        reader = RecordReader(redis_client, workspace.keys)
        return {run_id: await every_read(reader, run_id) for run_id in run_ids}


def archived(client: redis.RedisCluster, workspace: Workspace, run_id: str) -> bool:
    return bool(client.hexists(workspace.keys.meta(run_id), "archive"))


class TestOnACluster:
    def test_archived_by_hand_reads_the_same(
        self,
        cluster: RedisClusterServers,
        cluster_workspace: Workspace,
        start_collector: Callable[..., CollectorThread],
        client: redis.RedisCluster,
        image: Path,
    ) -> None:
        start_collector(cluster_workspace, live_kept_after_end=0.2, archive_after=None)
        experiment = Experiment(cluster_workspace, "archived-on-a-cluster")
        keys = cluster_workspace.keys
        runs = on_every_primary(cluster, experiment)
        for run in runs:
            log_everything(run, image)
            run.complete()
        ids = [run.id for run in runs]
        wait_until(lambda: all(client.xlen(keys.live(run_id)) == 1 for run_id in ids), 30, "the live streams trimmed")
        before = asyncio.run(reads_of(cluster_workspace, ids))

        assert all(run.archive() for run in runs)
        after = asyncio.run(reads_of(cluster_workspace, ids))

        for run_id in ids:
            for what in before[run_id]:
                assert exact(before[run_id][what]) == exact(after[run_id][what]), (run_id, what)
            assert STUB == run_keys(client, cluster_workspace, run_id)
            assert cast("int", client.memory_usage(keys.live(run_id), samples=0)) < 2_000
        assert [1.0 / (1 + s) for s in range(300)] == Run(experiment, ids[0]).get_metrics()["loss"]
        assert "Completed" == Run(experiment, ids[-1]).get_status()

    def test_retention_archives_every_primarys_runs(
        self,
        cluster: RedisClusterServers,
        cluster_workspace: Workspace,
        start_collector: Callable[..., CollectorThread],
        client: redis.RedisCluster,
    ) -> None:
        start_collector(cluster_workspace, live_kept_after_end=0.2, archive_after=0.5)
        experiment = Experiment(cluster_workspace, "retained-on-a-cluster")
        runs = on_every_primary(cluster, experiment)
        for n, run in enumerate(runs):
            run.log_list("loss", [float(n + i) for i in range(100)])
            run.tag("n", str(n))
            run.complete()

        wait_until(lambda: all(archived(client, cluster_workspace, run.id) for run in runs), 60, "every run archived")
        for n, run in enumerate(runs):
            again = Run(experiment, run.id)
            assert {"loss": [float(n + i) for i in range(100)]} == again.get_metrics()
            assert str(n) == again.get_tags()["n"]
        found = experiment.get_runs(filter="min(metrics.loss) >= 1 and attributes.status = 'Completed'")
        assert {run.id for run in runs[1:]} == {run.id for run in found}
