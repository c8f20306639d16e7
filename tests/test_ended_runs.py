"""An ended run gives back its live stream a while after the end; what users read of it stays whole.

Against the session's real Redis and real collectors: the live stream of an ended run
keeps only its final entry once ``live_kept_after_end`` has passed, a running run's
stream is left alone, and the record, the run's ``live_id`` and a subscriber from the
beginning (told to resync, then given the end) are as a user expects.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import cast

import pytest
import redis
import structlog

from runstream import Experiment, Run
from runstream.codec import decode_payload
from runstream.collector.ended import EndedStreams
from runstream.connection import connect
from runstream.consumer.subscribe import Resynced, Update
from runstream.events import StatusChanged
from runstream.keys import Keys
from tests.conftest import CollectorThread, wait_until

STEPS = 40


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    with redis.Redis.from_url(redis_url) as connection:
        yield connection


def log_steps(run: Run, steps: int = STEPS) -> None:
    """One point a step, flushed each time: one live entry a step."""
    for i in range(steps):
        run.log("loss", float(i))
        run.flush()


def newest_event(client: redis.Redis, keys: Keys, run_id: str) -> object:
    """The last event of the run's newest live entry."""
    ((_, fields),) = cast("list[tuple[bytes, dict[bytes, bytes]]]", client.xrevrange(keys.live(run_id), count=1))
    return decode_payload(fields[b"b"])[-1]


class TestTrimmedAfterTheEnd:
    """Once ``live_kept_after_end`` has passed, the collector trims an ended run's live stream."""

    def test_an_ended_run_keeps_its_final_entry(
        self, experiment: Experiment, start_collector: Callable[..., CollectorThread], client: redis.Redis
    ) -> None:
        keys = experiment.workspace.keys
        start_collector(experiment.workspace, live_kept_after_end=0.5)
        ended, running = experiment.start_logging(), experiment.start_logging()
        log_steps(ended)
        log_steps(running)
        ended.complete()

        wait_until(lambda: client.xlen(keys.live(ended.id)) == 1, 30, "the ended run's live stream trimmed")
        updates = list(Run(experiment, ended.id).subscribe(start="beginning"))
        metrics = ended.get_metrics()
        running_entries = client.xlen(keys.live(running.id))
        kept_bytes = cast("int", client.memory_usage(keys.live(ended.id), samples=0))
        running.complete()

        final = newest_event(client, keys, ended.id)
        assert isinstance(final, StatusChanged)
        assert "Completed" == final.status
        assert client.zscore(keys.ended_runs(), ended.id) is None
        assert kept_bytes < 2_000  # sized to its one entry, not a stream node's 4 KB ahead
        assert [float(i) for i in range(STEPS)] == metrics["loss"]
        assert running_entries >= STEPS  # a running run's stream is left whole
        assert isinstance(updates[0], Resynced)  # from the beginning: told to read the record
        assert isinstance(updates[-1], Update)
        assert isinstance(updates[-1].event, StatusChanged)
        assert "Completed" == updates[-1].event.status


class TestTheGrace:
    """Within ``keep`` seconds of its end a run's stream stays whole; the runs of shards another
    collector holds are left to it."""

    @pytest.fixture
    def ended(self, experiment: Experiment, start_collector: Callable[..., CollectorThread]) -> tuple[Run, float]:
        """A run ended under a collector that trims nothing (an hour's grace), and when it ended."""
        start_collector(experiment.workspace, live_kept_after_end=3600.0)
        run = experiment.start_logging()
        log_steps(run)
        run.complete()
        return run, time.time()

    async def test_whole_until_keep_has_passed(
        self, experiment: Experiment, ended: tuple[Run, float], client: redis.Redis
    ) -> None:
        run, end = ended
        keys = experiment.workspace.keys
        async with connect(experiment.workspace.settings.redis_url) as redis_client:
            trimmer = EndedStreams(
                redis_client, experiment.workspace, set(range(keys.shards)), structlog.get_logger(), keep=60.0
            )
            early = await trimmer.trim(end + 30)
            entries_early = client.xlen(keys.live(run.id))
            late = await trimmer.trim(end + 61)

        assert (0, 1) == (early, late)
        assert entries_early > STEPS
        assert 1 == client.xlen(keys.live(run.id))
        assert [float(i) for i in range(STEPS)] == run.get_metrics()["loss"]

    async def test_another_collectors_shard_is_left_alone(
        self, experiment: Experiment, ended: tuple[Run, float], client: redis.Redis
    ) -> None:
        run, end = ended
        keys = experiment.workspace.keys
        others = set(range(keys.shards)) - {keys.shard_of(run.id)}
        async with connect(experiment.workspace.settings.redis_url) as redis_client:
            trimmed = await EndedStreams(
                redis_client, experiment.workspace, others, structlog.get_logger(), keep=60.0
            ).trim(end + 61)

        assert 0 == trimmed
        assert client.xlen(keys.live(run.id)) > STEPS
        assert client.zscore(keys.ended_runs(), run.id) is not None
