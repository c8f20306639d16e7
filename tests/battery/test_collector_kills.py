"""The collector SIGKILLed ten times during a run of 1,000,000 points, restarted each time.

A producer thread of this process logs "loss" = 0..999,999 at about 100,000 points a
second, flushing every 1,000 points (one ingest entry each: a thousand entries for the
kills to land among).  Collector processes (``python -m runstream.collector``, lease TTL
1 s) come and go: each is killed once the record has grown by about a tenth of the run
past the previous kill (with seeded jitter), wherever its read-apply-ack loop is then,
and the next is started at once, under the same reader name or the other one (a same-
name restart re-reads its own pending entries; the other name claims them once the
lease lapses).  The whole series is then read back as the server reads it and compared
with the range in bulk: every point once, in order.  The full million runs in about 11 s
on this 2-core machine, so it is not reduced.
"""

from __future__ import annotations

import random
import time
from functools import partial
from pathlib import Path

import pytest
import redis

from runstream import Workspace
from runstream.keys import INGEST_GROUP
from runstream.redis_server import RedisServer
from tests.battery.conftest import (
    CollectorProcess,
    PacedProducer,
    StartCollector,
    applied_points,
    duplicates,
    missing,
    read_record_series,
    record_status,
    report,
    start_run,
    wait_until,
)
from tests.conftest import make_workspace

pytestmark = pytest.mark.battery

POINTS = 1_000_000
RATE = 100_000.0  # points a second: a 10 s run
KILLS = 10
SEED = 20261129  # where the kills land; change it to explore other interleavings


@pytest.fixture
def own_redis(tmp_path: Path) -> RedisServer:
    """A Redis of this test's own (a million points, and ingest streams it may fill)."""
    return RedisServer(tmp_path / "redis")


class TestCollectorKilled:
    """A collector killed with SIGKILL ten times, restarted each time, loses and doubles nothing."""

    def test_ten_kills_in_a_million_points(
        self, own_redis: RedisServer, tmp_path: Path, start_collector_process: StartCollector
    ) -> None:
        with own_redis as server:
            client = redis.Redis.from_url(server.url, socket_timeout=10)
            try:
                self._run(client, make_workspace(server.url, tmp_path / ".runstream"), start_collector_process)
            finally:
                client.close()

    def _run(self, client: redis.Redis, workspace: Workspace, start_collector_process: StartCollector) -> None:
        rng = random.Random(SEED)  # noqa: S311  # reproducible kill points, not secrets
        began = time.monotonic()
        collector = start_collector_process(workspace, "c1")
        producer = PacedProducer(start_run(workspace), POINTS, RATE, chunk=1000, flush_every=1000)
        run_id = producer.run.id

        def progressed(collector: CollectorProcess, target: int) -> bool:
            return collector.check_alive() and applied_points(client, workspace, run_id) >= target

        kills: list[tuple[str, int, bool]] = []  # (reader, points applied when killed, producer still logging)
        restarts: list[float] = []  # seconds from each kill to the next collector's first progress
        for k in range(1, KILLS + 1):
            target = int(POINTS * k / (KILLS + 1)) + rng.randrange(-20_000, 20_000)
            wait_until(partial(progressed, collector, target), 60, f"{target:,} points applied (kill {k})")
            collector.kill()
            killed, at = time.monotonic(), applied_points(client, workspace, run_id)
            kills.append((collector.reader, at, producer.logging))
            collector = start_collector_process(workspace, rng.choice(["c1", "c2"]))
            if at < POINTS:
                wait_until(partial(progressed, collector, at + 1), 60, f"progress after kill {k}")
                restarts.append(time.monotonic() - killed)
        producer.join(120)
        wait_until(
            lambda: collector.check_alive() and record_status(client, workspace, run_id)[0] == "Completed",
            60,
            "the run Completed",
        )
        wait_until(lambda: not any(pending(client, workspace)), 30, "every ingest entry acked")
        took = time.monotonic() - began
        series = read_record_series(workspace, run_id)
        report(
            f"collector SIGKILLed {KILLS} times during a {POINTS:,}-point run",
            logged=POINTS,
            arrived=len(series.values),
            missing=missing(series.values, range(POINTS)),
            duplicates=duplicates(series.values),
            kills=", ".join(f"{reader}@{at:,}{'' if logging else ' (producer done)'}" for reader, at, logging in kills),
            recovery_s=f"max {max(restarts, default=0):.2f}, mean {sum(restarts) / max(1, len(restarts)):.2f}"
            " (kill to the next collector's first applied batch)",
            total_s=f"{took:.1f}",
            dead_lettered=client.xlen(workspace.keys.deadletter()),
        )

        assert KILLS == len(kills)
        assert all(at < POINTS for _, at, _ in kills), "every kill lands mid-run"
        assert list(range(POINTS)) == series.values
        assert list(range(POINTS)) == series.steps
        assert POINTS == applied_points(client, workspace, run_id)
        assert 0 == client.xlen(workspace.keys.deadletter())
        assert took < 60, "bounded: about 11 s on this 2-core machine"


def pending(client: redis.Redis, workspace: Workspace) -> list[int]:
    """Entries read but not acked, per shard."""
    keys = workspace.keys
    return [int(client.xpending(keys.ingest(s), INGEST_GROUP)["pending"]) for s in range(keys.shards)]
