"""A first end-to-end pass: a run logged, collected, and its record read back."""

from __future__ import annotations

from collections.abc import Callable

import redis

from runstream import Experiment
from tests.conftest import CollectorThread, read_series, wait_until


class TestCollectedRun:
    """What a producer logged is in the run's record once a collector has applied it."""

    def test_points_and_status(self, experiment: Experiment, start_collector: Callable[..., CollectorThread]) -> None:
        workspace = experiment.workspace
        start_collector(workspace)
        client = redis.Redis.from_url(workspace.settings.redis_url)
        with experiment.start_logging() as run:
            for i in range(10_000):
                run.log("loss", i * 0.5)

        wait_until(lambda: client.hget(workspace.keys.meta(run.id), "status") == b"Completed", what="Completed")
        series = read_series(workspace, run.id, "loss")
        client.close()

        assert [i * 0.5 for i in range(10_000)] == series.values
        assert list(range(10_000)) == series.steps
