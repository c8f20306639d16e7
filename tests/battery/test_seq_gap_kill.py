"""A collector SIGKILLed while a batch waits on a gap in its producer's seqs loses nothing.

The held batch lives in the consumer group's pending list, not only in the collector's
memory: the next collector claims it with the rest of the shard (XAUTOCLAIM), holds it
again, and applies it once the gap fills, after the batch that fills it.
"""

from __future__ import annotations

import uuid

import pytest
import redis

from runstream import Workspace
from runstream.keys import INGEST_GROUP
from tests.battery.conftest import StartCollector, collector_counters, read_record_series, report, wait_until
from tests.test_seq_gaps import applied_seq, letters, new_run, pending, points, xadd

pytestmark = pytest.mark.battery


class TestKilledWhileHeld:
    """Killed with a batch held ahead of a gap; the gap filled later; a new collector applies everything once."""

    def test_nothing_lost(
        self, workspace: Workspace, start_collector_process: StartCollector, client: redis.Redis
    ) -> None:
        first = start_collector_process(workspace, "c1")
        producer = uuid.uuid4().hex[:16]
        run_id = new_run(client, workspace, producer)
        xadd(client, workspace, points(run_id, producer, 3))
        wait_until(
            lambda: first.check_alive() and collector_counters(client, workspace, "c1").get("waiting") == 1,
            what=lambda: f"c1 holding seq 3:\n{first.tail()}",
        )
        held_by = client.xpending(workspace.keys.ingest_for(run_id), INGEST_GROUP)["consumers"]
        first.kill()
        xadd(client, workspace, points(run_id, producer, 2))  # the gap fills while no collector runs
        second = start_collector_process(workspace, "c2")
        wait_until(
            lambda: second.check_alive() and applied_seq(client, workspace, run_id, producer) == 3,
            what=lambda: f"c2 applying seqs 2 and 3:\n{second.tail()}",
        )
        steps = list(read_record_series(workspace, run_id).steps)
        dead = letters(client, workspace)
        report("collector killed while a batch was held", held_by=held_by, steps=steps, dead_letters=len(dead))

        assert [{"name": b"c1", "pending": 1}] == held_by
        assert list(range(9)) == steps
        assert [] == dead
        assert client.hget(workspace.keys.meta(run_id), "lost_batches") is None
        assert 0 == pending(client, workspace)
