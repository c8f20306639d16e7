"""Redis SIGKILLed mid-run and restarted from its AOF while the producer keeps logging.

The pipeline: a producer thread of this process logging at a training loop's pace, a
collector process, and a Redis of the test's own with ``appendonly yes`` and
``appendfsync`` ``everysec`` or ``always``.  Redis is killed while the run is being
applied, stays down while the producer logs on (into memory, then the spool), and comes
back on the same port and folder.

What a SIGKILL of the *process* can lose: only what Redis never handed to the kernel.
Redis write()s its AOF buffer before it sends the replies of the commands in it, so an
acknowledged XADD is in the page cache, which outlives the process; ``always`` fsyncs it
too (that only matters for a crash of the machine).  One exception with ``everysec``:
while a background fsync is still running, Redis may hold the AOF write() back for up to
2 s yet reply; a kill in that window loses those acknowledged writes.  That needs an
fsync slower than the gap between two writes, which this machine's disk is not (the
figures print Redis's ``aof_delayed_fsync`` counter), so both cases assert the same
thing: nothing lost, nothing doubled, every value once and in order.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import cast

import pytest
import redis

from runstream.redis_server import RedisServer
from tests.battery.conftest import (
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

POINTS = 40_000
RATE = 10_000.0  # points a second: a 4 s run
DOWN_POINTS = 10_000  # logged while Redis is down (about a second)


class TestRedisKilled:
    """A Redis killed with SIGKILL and restarted from its AOF loses nothing acknowledged, applies nothing twice."""

    @pytest.mark.parametrize("fsync", ["everysec", "always"])
    def test_killed_mid_run(self, fsync: str, tmp_path: Path, start_collector_process: StartCollector) -> None:
        server = RedisServer(tmp_path / "redis", appendonly=True, appendfsync=fsync).start()
        client = redis.Redis.from_url(server.url, socket_timeout=5)
        try:
            self._run(server, client, fsync, tmp_path, start_collector_process)
        finally:
            client.close()
            server.kill()

    def _run(
        self,
        server: RedisServer,
        client: redis.Redis,
        fsync: str,
        tmp_path: Path,
        start_collector_process: StartCollector,
    ) -> None:
        workspace = make_workspace(server.url, tmp_path / ".runstream", max_memory_bytes=64 * 1024)
        collector = start_collector_process(workspace, "c1")
        producer = PacedProducer(start_run(workspace), POINTS, RATE)
        run_id = producer.run.id
        wait_until(
            lambda: collector.check_alive() and applied_points(client, workspace, run_id) >= POINTS // 4,
            30,
            "a quarter of the run applied",
        )
        persistence = cast("dict[str, object]", client.info("persistence"))

        server.kill()
        killed, logged_at_kill = time.monotonic(), producer.logged
        with pytest.raises(redis.ConnectionError):  # really down
            client.ping()
        # Down until the producer has logged a second more: it must not wait for Redis.
        wait_until(lambda: producer.logged >= logged_at_kill + DOWN_POINTS, 20, "logging while Redis is down")
        logged_while_down = producer.logged - logged_at_kill
        server.start()
        restarted = time.monotonic()
        wait_until(
            lambda: collector.check_alive() and applied_points(client, workspace, run_id) >= POINTS,
            60,
            f"every point applied after the restart; collector:\n{collector.tail()}",
        )
        caught_up = time.monotonic() - restarted
        producer.join(60)
        series = read_record_series(workspace, run_id)
        status = record_status(client, workspace, run_id)
        report(
            f"Redis SIGKILL + restart, AOF appendfsync {fsync}",
            logged=POINTS,
            logged_while_down=logged_while_down,
            arrived=len(series.values),
            missing=missing(series.values, range(POINTS)),
            duplicates=duplicates(series.values),
            redis_down_s=f"{restarted - killed:.2f}",
            recovery_s=f"{caught_up:.2f} (restart to every point in the record)",
            longest_log_ms=f"{producer.longest_log * 1000:.1f}",
            aof_delayed_fsync=persistence.get("aof_delayed_fsync"),
            status=status,
        )

        assert list(range(POINTS)) == series.values
        assert list(range(POINTS)) == series.steps
        assert ("Completed", None) == status
        assert POINTS == applied_points(client, workspace, run_id)
