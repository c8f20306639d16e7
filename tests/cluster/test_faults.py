"""Faults on a real Redis Cluster: a collector of four killed, a primary failed over to its
replica mid-run, and a run's slots migrated to another primary while it logs.

Each test prints what was logged, what arrived, duplicates and the time to recover, as
the battery's tests do, and reads every series back whole to compare it with what was
logged.  Collectors are ``python -m runstream.collector`` processes; producers are paced
threads of this process (the real logger).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from pathlib import Path
from typing import cast

import pytest
import redis
from redis.exceptions import AskError

import runstream
from runstream import Workspace
from runstream.redis_cluster import RedisClusterServers
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
from tests.cluster.conftest import SHARDS, client_kind, cluster_client
from tests.conftest import make_workspace

pytestmark = pytest.mark.battery

LEASE_TTL = 1.0


def lease_owners(client: redis.RedisCluster, workspace: Workspace) -> list[str | None]:
    """The reader holding each shard's lease (None: nobody); one GET each, the leases being in many slots."""
    owners = [cast("bytes | None", client.get(workspace.keys.ingest_lease(s))) for s in range(workspace.keys.shards)]
    return [owner.decode() if owner is not None else None for owner in owners]


def check_whole(client: redis.RedisCluster, workspace: Workspace, producers: list[PacedProducer]) -> dict[str, int]:
    """Wait until every run is Completed; every series' missing points and duplicates, summed."""
    for producer in producers:
        producer.join(120)
    for producer in producers:
        wait_until(
            lambda p=producer: record_status(client, workspace, p.run.id)[0] == "Completed",  # type: ignore[misc]
            60,
            f"run {producer.run.id} Completed",
        )
    lost = doubled = arrived = 0
    for producer in producers:
        values = read_record_series(workspace, producer.run.id).values
        arrived += len(values)
        lost += missing(values, range(producer.points))
        doubled += duplicates(values)
    return {"arrived": arrived, "missing": lost, "duplicates": doubled}


class TestFourCollectors:
    """Four collectors share 16 shards; one is SIGKILLed mid-run and the other three take its
    shards within the lease timeout, losing and doubling nothing."""

    RUNS, POINTS, RATE = 8, 60_000, 15_000.0  # 4 s per run

    def test_one_killed(
        self, cluster: RedisClusterServers, cluster_workspace: Workspace, start_collector_process: StartCollector
    ) -> None:
        workspace, client = cluster_workspace, cluster_client(cluster.url)
        try:
            collectors = [start_collector_process(workspace, f"c{n}", lease_ttl=LEASE_TTL) for n in range(4)]
            fair = {f"c{n}": SHARDS // 4 for n in range(4)}
            wait_until(
                lambda: all(c.check_alive() for c in collectors) and Counter(lease_owners(client, workspace)) == fair,
                30,
                lambda: f"the shards split 4 ways: {Counter(lease_owners(client, workspace))}",
            )
            producers = [
                PacedProducer(start_run(workspace), self.POINTS, self.RATE, chunk=500, flush_every=2_000)
                for _ in range(self.RUNS)
            ]
            logged = self.RUNS * self.POINTS
            wait_until(
                lambda: sum(applied_points(client, workspace, p.run.id) for p in producers) >= logged // 3,
                60,
                "a third of the points applied",
            )
            owners = lease_owners(client, workspace)
            busiest = Counter(owners[workspace.keys.shard_of(p.run.id)] for p in producers).most_common(1)[0][0]
            victim = next(c for c in collectors if c.reader == busiest)
            victim.kill()
            killed, logging_across = time.monotonic(), any(p.logging for p in producers)
            bound = 3 * LEASE_TTL + 2  # lapse (ttl), a look every ttl / 3, the claim; room for a loaded machine
            takeover = wait_until(
                lambda: (
                    victim.reader not in lease_owners(client, workspace) and None not in lease_owners(client, workspace)
                ),
                bound,
                "the survivors holding every shard",
            )
            spread = Counter(lease_owners(client, workspace))
            figures = check_whole(client, workspace, producers)
            report(
                "4 collectors on a 3-primary cluster, one SIGKILLed mid-run",
                logged=f"{logged:,} points in {self.RUNS} runs over {SHARDS} shards",
                **{k: f"{v:,}" for k, v in figures.items()},
                killed=f"{victim.reader}, holding {owners.count(victim.reader)} shards"
                f" and {sum(owners[workspace.keys.shard_of(p.run.id)] == victim.reader for p in producers)} runs",
                takeover_s=f"{takeover:.2f} (lease TTL {LEASE_TTL} s)",
                shards_after=dict(spread),
                total_s=f"{time.monotonic() - killed:.1f} from the kill",
            )

            assert logging_across, "the runs are logged across the kill"
            assert {"arrived": logged, "missing": 0, "duplicates": 0} == figures
            assert victim.reader not in spread
            assert sum(spread.values()) == SHARDS
            assert 0 == client.xlen(workspace.keys.deadletter())
        finally:
            client.close()


class TestFailover:
    """A primary SIGKILLed mid-run: its replica takes over, and logging carries on.

    Replication is asynchronous, so what the killed primary acknowledged but had not yet
    sent to its replica is lost with it: on loopback that is at most the writes of the
    last milliseconds, bounded here by one flush of each run (2,000 points).  Nothing is
    applied twice, every run completes, and the lost part is printed.
    """

    RUNS, POINTS, RATE = 6, 80_000, 10_000.0  # 8 s per run
    FLUSH = 2_000

    def test_primary_killed(
        self, replicated_cluster: RedisClusterServers, tmp_path: Path, start_collector_process: StartCollector
    ) -> None:
        cluster = replicated_cluster
        workspace = make_workspace(cluster.url, tmp_path / ".runstream", shards=SHARDS)
        client = cluster_client(cluster.url)
        try:
            collectors = [start_collector_process(workspace, f"c{n}", lease_ttl=LEASE_TTL) for n in range(2)]
            producers = [
                PacedProducer(start_run(workspace), self.POINTS, self.RATE, chunk=500, flush_every=self.FLUSH)
                for _ in range(self.RUNS)
            ]
            first = producers[0].run.id
            wait_until(lambda: applied_points(client, workspace, first) >= self.POINTS // 4, 60, "a quarter applied")
            victim = cluster.primary_of(workspace.keys.ingest_for(first))
            hit = [p for p in producers if victim in _primaries_of(cluster, workspace, p.run.id)]
            before = {p.run.id: applied_points(client, workspace, p.run.id) for p in producers}
            producers[0].run.get_status()  # this process reads the cluster too (its sender may be another)
            victim.kill()
            killed = time.monotonic()
            promoted = wait_until(cluster.healthy, 30, "a replica promoted in the killed primary's place")
            wait_until(
                lambda: applied_points(client, workspace, first) > before[first] + self.FLUSH,
                60,
                lambda: (
                    f"the first run's record growing again; {runstream.logger_stats()}\n"
                    + "\n".join(c.tail(40) for c in collectors)
                ),
            )
            resumed = time.monotonic() - killed
            figures = check_whole(client, workspace, producers)
            for collector in collectors:
                collector.check_alive()
            report(
                "a primary SIGKILLed mid-run on a 3+3 cluster (node timeout 1 s)",
                logged=f"{self.RUNS * self.POINTS:,} points in {self.RUNS} runs",
                **{k: f"{v:,}" for k, v in figures.items()},
                runs_on_the_killed_primary=f"{len(hit)} of {self.RUNS}",
                replica_promoted_s=f"{promoted:.2f} after the kill (the nodes agree on the new primary)",
                first_run_growing_again_s=f"{resumed:.2f} after the kill",
                total_s=f"{time.monotonic() - killed:.1f} from the kill",
            )

            # A process that met the cluster finds it through any node it knew, the dead one included.
            assert "RedisCluster" == asyncio.run(client_kind(f"redis://127.0.0.1:{victim.port}"))
            assert hit, "the killed primary held a run's shard"
            assert 0 == figures["duplicates"]
            assert figures["missing"] <= len(hit) * self.FLUSH, "lost: at most one flush of each run it held"
            assert 0 == client.xlen(workspace.keys.deadletter())
        finally:
            client.close()


def _primaries_of(cluster: RedisClusterServers, workspace: Workspace, run_id: str) -> list[RedisServer]:
    """The primaries holding a run's record and its ingest shard."""
    return [cluster.primary_of(workspace.keys.meta(run_id)), cluster.primary_of(workspace.keys.ingest_for(run_id))]


class TestSlotMigration:
    """A run's record slot, then its ingest shard's slot, moved to another primary key by key
    while it logs: the cluster answers ASK and TRYAGAIN meanwhile, the clients follow, and
    the record ends whole."""

    POINTS, RATE = 60_000, 10_000.0  # 6 s

    def test_migrated_while_logging(
        self, cluster: RedisClusterServers, cluster_workspace: Workspace, start_collector_process: StartCollector
    ) -> None:
        workspace, client = cluster_workspace, cluster_client(cluster.url)
        try:
            for n in range(2):
                start_collector_process(workspace, f"c{n}", lease_ttl=LEASE_TTL)
            producer = PacedProducer(start_run(workspace), self.POINTS, self.RATE, chunk=200, flush_every=400)
            run_id = producer.run.id
            moves = []
            for fraction, key in ((0.2, workspace.keys.meta(run_id)), (0.5, workspace.keys.ingest_for(run_id))):
                wait_until(
                    lambda f=fraction: applied_points(client, workspace, run_id) >= self.POINTS * f,  # type: ignore[misc]
                    60,
                    f"{fraction:.0%} applied",
                )
                at = applied_points(client, workspace, run_id)
                source, target, keys, took = migrate_slot(cluster, key, pause=0.05)
                moves.append((key, source.port, target.port, keys, at, took))
                assert cluster.primary_of(key) is target
            logging_across = producer.logging
            figures = check_whole(client, workspace, [producer])
            report(
                "a run's slots migrated key by key while it logs (3 primaries)",
                logged=f"{self.POINTS:,}",
                **{k: f"{v:,}" for k, v in figures.items()},
                migrations="; ".join(
                    f"{key.split(':')[-1]} slot {src}->{dst}: {n} keys in {took:.2f} s at {at:,} points"
                    for key, src, dst, n, at, took in moves
                ),
            )

            assert logging_across, "the run is still logging after both migrations"
            assert all(n >= 1 for *_, n, _at, _took in moves), "keys were moved"
            assert {"arrived": self.POINTS, "missing": 0, "duplicates": 0} == figures
            assert 0 == client.xlen(workspace.keys.deadletter())
        finally:
            client.close()


def migrate_slot(cluster: RedisClusterServers, key: str, pause: float) -> tuple[RedisServer, RedisServer, int, float]:
    """Move ``key``'s slot to another primary one key at a time (``pause`` s apart), as
    ``redis-cli --cluster reshard`` does: IMPORTING, MIGRATING, MIGRATE, then SETSLOT NODE
    on every primary.  The source, the target, how many keys moved and the seconds it took."""
    started = time.monotonic()
    source = cluster.primary_of(key)
    primaries = cluster.primaries()
    target = next(node for node in primaries if node is not source)
    source_id, target_id = cluster.node_id(source), cluster.node_id(target)
    with cluster.client(source) as src, cluster.client(target) as dst:
        slot = cast("int", src.cluster("keyslot", key))
        dst.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", source_id)
        src.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", target_id)
        moved = 0
        deadline = time.monotonic() + 30
        while batch := cast("list[bytes]", src.execute_command("CLUSTER", "GETKEYSINSLOT", slot, 1)):
            assert time.monotonic() < deadline, "the slot did not empty"
            src.execute_command("MIGRATE", "127.0.0.1", target.port, "", 0, 5000, "KEYS", *batch)
            moved += len(batch)
            with pytest.raises(AskError):  # what a client of the moved key is told meanwhile
                src.exists(batch[0])
            time.sleep(pause)  # the window in which the slot is split between the two
        dst.execute_command("CLUSTER", "SETSLOT", slot, "NODE", target_id)
        src.execute_command("CLUSTER", "SETSLOT", slot, "NODE", target_id)
    for node in primaries:
        if node not in (source, target):
            with cluster.client(node) as other:
                other.execute_command("CLUSTER", "SETSLOT", slot, "NODE", target_id)
    return source, target, moved, time.monotonic() - started
