"""Collectors killed, doubled and stopped while a run is logged: nothing lost, nothing applied twice.

Each collector here is the real command, ``python -m runstream.collector``, in a process
of its own (its workspace from the environment, its log in a file of its own under ``tmp_path``);
the producer logs from a thread of the test process.  Every wait is on Redis state or
on a process's exit, under a deadline.
"""

from __future__ import annotations

import json
import math
import random
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from functools import partial
from pathlib import Path
from typing import cast

import pytest
import redis

from runstream import Experiment, Workspace
from runstream.keys import INGEST_GROUP
from tests.battery.conftest import CollectorProcess, PacedProducer
from tests.conftest import read_series, wait_until

#: Seeds where the kills land; change it to explore other interleavings.
SEED = 20261129


StartCollector = Callable[[str, float], CollectorProcess]


@pytest.fixture
def start_process(workspace: Workspace, tmp_path: Path) -> Iterator[StartCollector]:
    """Start collector processes for ``workspace`` (``start_process(reader, lease_ttl)``); killed after the test."""
    started: list[CollectorProcess] = []

    def start(reader: str, lease_ttl: float) -> CollectorProcess:
        # A log file per reader: two processes writing one file could interleave their lines.
        log = tmp_path / f"collector-{reader}.log"
        started.append(CollectorProcess(workspace, reader, log, lease_ttl=lease_ttl))
        return started[-1]

    yield start
    for collector in started:
        collector.end()


@pytest.fixture
def client(workspace: Workspace) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(workspace.settings.redis_url)
    yield client
    client.close()


def lease_owners(client: redis.Redis, workspace: Workspace) -> list[str | None]:
    """The reader holding each shard's lease (None: nobody)."""
    owners = cast(
        "list[bytes | None]", client.mget([workspace.keys.ingest_lease(s) for s in range(workspace.keys.shards)])
    )
    return [owner.decode() if owner is not None else None for owner in owners]


def halves(workspace: Workspace) -> dict[str, int]:
    """The shards of two collectors c1 and c2 sharing them fairly."""
    return {"c1": workspace.keys.shards // 2, "c2": workspace.keys.shards // 2}


def applied_points(client: redis.Redis, workspace: Workspace, run_id: str) -> int:
    """Points of "loss" in the run's record so far."""
    return int(cast("bytes | None", client.hget(workspace.keys.metric_counts(run_id), "loss")) or 0)


def pending(client: redis.Redis, workspace: Workspace) -> list[int]:
    """Entries read but not yet acked, per shard."""
    keys = workspace.keys
    return [
        cast("dict[str, int]", client.xpending(keys.ingest(s), INGEST_GROUP))["pending"] for s in range(keys.shards)
    ]


def describe(values: Sequence[object], points: int) -> str:
    """What is wrong with a series that should be 0..points-1: missing, doubled, first out of order."""
    counts = Counter(values)
    missing = [i for i in range(points) if i not in counts]
    doubled = sorted((v for v, n in counts.items() if n > 1), key=str)
    order = next((i for i, v in enumerate(values) if v != i), None)
    return f"{len(values)} values; missing {missing[:10]}...; doubled {doubled[:10]}...; first misplaced at {order}"


def published_shards(client: redis.Redis, workspace: Workspace) -> dict[str, list[int]]:
    """The shards each collector says it owns in its published counters."""
    reports = cast("dict[bytes, bytes]", client.hgetall(workspace.keys.collectors()))
    return {reader.decode(): json.loads(report)["shards"] for reader, report in reports.items()}


def assert_record_complete(
    client: redis.Redis, workspace: Workspace, run_id: str, points: int, collector: CollectorProcess
) -> None:
    """The run is Completed with "loss" = 0..points-1 in order, once each; nothing dead-lettered or pending."""
    keys = workspace.keys
    wait_until(
        lambda: client.hget(keys.meta(run_id), "status") == b"Completed",
        60,
        f"run Completed; collectors:\n{collector.tail()}",
    )
    # The final status is in the record one round trip before its entry is acked.
    wait_until(
        lambda: pending(client, workspace) == [0] * workspace.keys.shards,
        10,
        f"no entry pending; collectors:\n{collector.tail()}",
    )
    series, log = read_series(workspace, run_id, "loss"), collector.tail()

    assert list(range(points)) == series.values, f"{describe(series.values, points)}\n{log}"
    assert list(range(points)) == series.steps, log
    assert points == applied_points(client, workspace, run_id), log
    assert 0 == client.xlen(keys.deadletter()), log


class TestKilledCollector:
    """A collector killed with SIGKILL anywhere in its loop, then restarted, loses and doubles nothing."""

    @pytest.mark.slow
    def test_kill_9_at_random_points(
        self, experiment: Experiment, start_process: StartCollector, client: redis.Redis
    ) -> None:
        workspace, points = experiment.workspace, 200_000
        rng = random.Random(SEED)  # noqa: S311  # reproducible kill points, not secrets
        readers = ["c1", "c1", "c2", "c1", "c1", "c2", "c1"]  # the same name back, and another one
        collector = start_process(readers[0], 1.0)
        wait_until(
            lambda: lease_owners(client, workspace) == ["c1"] * workspace.keys.shards, 20, "c1 owning every shard"
        )
        producer = PacedProducer(
            experiment.start_logging(), points, math.inf, chunk=100, flush_every=100, complete_timeout=120
        )
        run_id = producer.run.id

        def progressed(collector: CollectorProcess, target: int) -> bool:
            return collector.check_alive() and applied_points(client, workspace, run_id) >= target

        killed = []
        for reader in readers[1:]:
            # Each collector dies once it has applied a random number of points more: mid-way
            # through the run, wherever in its read-apply-ack loop the signal finds it.
            target = min(points, applied_points(client, workspace, run_id) + rng.randrange(1_000, 20_000))
            wait_until(partial(progressed, collector, target), 60, f"{target:,} points applied")
            collector.kill()
            killed.append(collector.reader)
            collector = start_process(reader, 1.0)
        producer.join(120)

        assert_record_complete(client, workspace, run_id, points, collector)
        assert ["c1", "c1", "c2", "c1", "c1", "c2"] == killed


class TestTwoCollectors:
    """Two collectors split the shards; when one is killed, the other takes them all within a bound."""

    @pytest.mark.slow
    def test_split_then_kill_one(
        self, experiment: Experiment, start_process: StartCollector, client: redis.Redis
    ) -> None:
        workspace, ttl, points = experiment.workspace, 1.0, 100_000
        first, second = start_process("c1", ttl), start_process("c2", ttl)
        wait_until(
            lambda: (
                first.check_alive()
                and second.check_alive()
                and Counter(lease_owners(client, workspace)) == halves(workspace)
            ),
            20,
            "the shards split in halves",
        )
        owners = lease_owners(client, workspace)
        split = {reader: [s for s, owner in enumerate(owners) if owner == reader] for reader in ("c1", "c2")}
        wait_until(lambda: published_shards(client, workspace) == split, 10, f"counters showing {split}")
        producer = PacedProducer(
            experiment.start_logging(), points, math.inf, chunk=100, flush_every=100, complete_timeout=120
        )
        run_id = producer.run.id
        shard = workspace.keys.shard_of(run_id)
        victim, survivor = (first, second) if lease_owners(client, workspace)[shard] == "c1" else (second, first)
        wait_until(lambda: applied_points(client, workspace, run_id) >= points // 4, 30, "a quarter of the run applied")

        victim.kill()
        killed, logging_across = time.monotonic(), producer.logging
        # The victim's leases lapse at most ttl after its last renewal, and the survivor tries
        # each shard it lacks every ttl / 3, then claims what the victim had read: ttl * 4 / 3
        # and the claim.  The bound leaves room for a loaded machine.
        bound = 3 * ttl + 2
        wait_until(
            lambda: lease_owners(client, workspace) == [survivor.reader] * workspace.keys.shards,
            bound,
            "the survivor owns all shards",
        )
        takeover = time.monotonic() - killed
        producer.join(120)

        assert takeover <= bound, f"took {takeover:.2f} s"
        assert logging_across, "the run must be logged across the kill"
        assert_record_complete(client, workspace, run_id, points, survivor)


class TestStoppedCollector:
    """SIGTERM stops a collector at once: exit 0, ``collector_stopped`` logged, leases released, not left to expire."""

    @pytest.mark.slow
    def test_sigterm(self, workspace: Workspace, start_process: StartCollector, client: redis.Redis) -> None:
        ttl = 9.0  # a lease left to expire would outlive the checks below by seconds
        stopped, other = start_process("c1", ttl), start_process("c2", ttl)
        wait_until(
            lambda: (
                stopped.check_alive()
                and other.check_alive()
                and Counter(lease_owners(client, workspace)) == halves(workspace)
            ),
            30,
            "the shards split in halves",
        )

        start = time.monotonic()
        code = stopped.terminate(timeout=10)
        exited = time.monotonic() - start
        owners_at_exit = lease_owners(client, workspace)
        # Its last renewal was at most ttl / 3 before the signal, so an unreleased lease
        # would live until 2 * ttl / 3 after it at the earliest.
        expiry = 2 * ttl / 3
        wait_until(
            lambda: lease_owners(client, workspace) == ["c2"] * workspace.keys.shards, expiry, "c2 owning every shard"
        )
        taken = time.monotonic() - start
        events, log = stopped.events(), stopped.tail()

        assert 0 == code, log
        assert exited < 3, log
        assert "c1" not in owners_at_exit, log
        assert taken < expiry, log
        assert "collector_stopped" == events[-1], log
        assert workspace.keys.shards // 2 == events.count("shard_released"), log
