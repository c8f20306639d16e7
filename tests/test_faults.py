"""Redis stopped, killed or stalled mid-run: nothing logged is lost, and ``log`` never waits.

Each test proves that ``log`` does not block by its shape: every logging loop runs to
its end while Redis is down or frozen, and Redis only comes back after the loop.
A ``log`` that waited on Redis would never get there.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from runstream import Experiment, FlushTimeoutError, logger_stats
from runstream.codec import Batch
from runstream.events import MetricsLogged, StatusChanged, TagsSet
from runstream.redis_server import RedisServer
from tests.conftest import RunScript, first_of_each_seq, make_workspace, read_batches


def loss_points(batches: list[Batch]) -> list[tuple[int, object]]:
    return [
        (s, v)
        for b in batches
        for e in b.events
        if isinstance(e, MetricsLogged) and e.name == "loss"
        for s, v in zip(e.steps, e.values, strict=True)
    ]


def assert_exactly_once_in_order(batches: list[Batch]) -> list[Batch]:
    """Every seq from 1 arrives, first copies in order; copies of a seq are identical."""
    unique = first_of_each_seq(batches)
    by_seq = {b.seq: b for b in unique}
    for batch in batches:
        assert by_seq[batch.seq] == batch, "a redelivered seq must carry the same events"
    assert list(range(1, len(unique) + 1)) == [b.seq for b in unique]
    return unique


class TestRedisDown:
    """Events logged while Redis is down are spooled, then replayed in order, once per seq."""

    @pytest.mark.slow
    def test_killed_and_restarted(self, restartable_redis: RedisServer, tmp_path: Path) -> None:
        workspace = make_workspace(restartable_redis.url, tmp_path / ".runstream", max_memory_bytes=64 * 1024)
        run = Experiment(workspace, "faults").start_logging()
        for i in range(1_000):
            run.log("loss", i)
        run.flush(timeout=10)
        spooled_before = logger_stats().batches_spooled

        restartable_redis.kill()
        for i in range(1_000, 60_000):  # returns while Redis is down: log never waits for it
            run.log("loss", i)
            if i % 10_000 == 0:
                run.tag("at", str(i))
        with pytest.raises(FlushTimeoutError, match="not in Redis yet"):
            run.flush(timeout=0.5)
        spooled_during = logger_stats().batches_spooled - spooled_before
        restartable_redis.restart()
        run.complete(timeout=60)

        unique = assert_exactly_once_in_order(read_batches(workspace, run.id))
        assert [(i, i) for i in range(60_000)] == loss_points(unique)
        assert [str(i) for i in range(10_000, 60_000, 10_000)] == [
            e.tags["at"] for b in unique for e in b.events if isinstance(e, TagsSet)
        ]
        assert isinstance(unique[-1].events[-1], StatusChanged)
        assert spooled_during > 0, "a 64 KiB memory bound must send the backlog to the spool"

    @pytest.mark.slow
    def test_stalled_redis(self, restartable_redis: RedisServer, tmp_path: Path) -> None:
        """A frozen server (SIGSTOP) accepts connections but never answers."""
        workspace = make_workspace(restartable_redis.url, tmp_path / ".runstream")
        run = Experiment(workspace, "faults").start_logging()
        run.flush(timeout=10)
        assert restartable_redis.pid is not None

        os.kill(restartable_redis.pid, signal.SIGSTOP)
        try:
            for i in range(20_000):  # returns while Redis is frozen
                run.log("loss", i)
            with pytest.raises(FlushTimeoutError):
                run.flush(timeout=0.5)
        finally:
            os.kill(restartable_redis.pid, signal.SIGCONT)
        run.complete(timeout=60)

        unique = assert_exactly_once_in_order(read_batches(workspace, run.id))
        assert [(i, i) for i in range(20_000)] == loss_points(unique)


class TestSpoolAcrossProcesses:
    """A process that exits while Redis is down leaves a spool; the next process sends it."""

    @pytest.mark.slow
    def test_spool_is_adopted(self, restartable_redis: RedisServer, tmp_path: Path, run_script: RunScript) -> None:
        workspace = make_workspace(restartable_redis.url, tmp_path / ".runstream")
        restartable_redis.kill()

        first = run_script(workspace, "for i in range(5000):\n    run.log('loss', i)\n", exit_flush_timeout=0.5)
        spools = list((tmp_path / ".runstream" / "spool").rglob("*.spool"))
        restartable_redis.restart()
        second = run_script(workspace, "run.complete()\n")

        unique = assert_exactly_once_in_order(read_batches(workspace, first.run_id))
        assert "events_not_delivered" in first.stderr
        assert 1 == len(spools)
        assert str(spools[0]) in first.stderr
        assert [(i, i) for i in range(5000)] == loss_points(unique)
        assert "spool_adopted" in second.stderr
        assert not any(p.stat().st_size for p in (tmp_path / ".runstream" / "spool").rglob("*.spool"))

    @pytest.mark.slow
    def test_exit_while_redis_is_frozen(
        self, restartable_redis: RedisServer, tmp_path: Path, run_script: RunScript
    ) -> None:
        """A send stuck on a frozen server is abandoned at exit; its batches go to the spool."""
        workspace = make_workspace(restartable_redis.url, tmp_path / ".runstream")
        assert restartable_redis.pid is not None

        os.kill(restartable_redis.pid, signal.SIGSTOP)
        try:
            first = run_script(workspace, "for i in range(5000):\n    run.log('loss', i)\n", exit_flush_timeout=0.5)
        finally:
            os.kill(restartable_redis.pid, signal.SIGCONT)
        run_script(workspace, "run.complete()\n")

        unique = assert_exactly_once_in_order(read_batches(workspace, first.run_id))
        assert 0 == first.returncode, first.stderr
        assert "events_not_delivered" in first.stderr
        assert [(i, i) for i in range(5000)] == loss_points(unique)
