"""Seqs applied in order on a Redis Cluster: a held batch applied once its gap fills, a gap given up.

The same rules as ``tests/test_seq_gaps.py``, where a run's record, its shard and the
dead-letter stream live on different primaries (the held batch is read again there, and
its gap's letter written to another node's slot).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator

import pytest
import redis

from runstream import Workspace
from tests.battery.conftest import read_record_series
from tests.cluster.conftest import cluster_client
from tests.conftest import CollectorThread, wait_until
from tests.test_seq_gaps import applied_seq, letters, new_run, pending, points, xadd


@pytest.fixture
def client(cluster_workspace: Workspace) -> Iterator[redis.RedisCluster]:
    connection = cluster_client(cluster_workspace.settings.redis_url)
    yield connection
    connection.close()


class TestOnACluster:
    """A batch ahead of a gap waits for it; a gap never filled is dead-lettered, counted, and the batch applied."""

    def test_held_then_given_up(
        self,
        cluster_workspace: Workspace,
        start_collector: Callable[..., CollectorThread],
        client: redis.RedisCluster,
    ) -> None:
        workspace = cluster_workspace
        collector = start_collector(workspace, gap_timeout=0.5)
        filled, gapped = uuid.uuid4().hex[:16], uuid.uuid4().hex[:16]
        filled_run, gapped_run = new_run(client, workspace, filled), new_run(client, workspace, gapped)
        xadd(client, workspace, points(filled_run, filled, 3))
        xadd(client, workspace, points(filled_run, filled, 2))  # the resend, after the later batch
        xadd(client, workspace, points(gapped_run, gapped, 3))  # seq 2 never comes
        wait_until(
            lambda: (
                applied_seq(client, workspace, filled_run, filled) == 3
                and applied_seq(client, workspace, gapped_run, gapped) == 3
            ),
            what="both runs' seq 3 applied",
        )
        [letter] = letters(client, workspace)

        assert list(range(9)) == list(read_record_series(workspace, filled_run).steps)
        assert [0, 1, 2, 6, 7, 8] == list(read_record_series(workspace, gapped_run).steps)
        assert (gapped_run, "2") == (letter["run"], letter["missing"])
        assert b"1" == client.hget(workspace.keys.meta(gapped_run), "lost_batches")
        assert client.hget(workspace.keys.meta(filled_run), "lost_batches") is None
        assert 1 == collector.stats.lost_batches
        assert 0 == pending(client, workspace)
