"""Redis fills up (``maxmemory`` under ``noeviction``, deploy/'s setting) in the middle of a multi-million-point run.

The pipeline: a training script in a process of its own logging as fast as it can, a
collector process, and a Redis of the test's own whose ``maxmemory`` the run outgrows
(points are packed at about 16 bytes each in the record; the ingest streams take room
too).  Once Redis is full, and stays so while the script logs on (its batches kept in
memory, then in its spool) and the collector holds its shards, ``maxmemory`` is raised
(``CONFIG SET``), as an operator would.

Before the fix, four of five 12 M-point trials lost 24,000-510,000 points (the apply's
OOM reply was taken for a bad batch and dead-lettered; the dead letter's XADD failed
while the XACK beside it succeeded; the collector died and, its lease script refused,
crash-looped) and every run still said Completed.  Now: every point is in the record
exactly once, the collector process is the same one throughout, nothing is
dead-lettered, and both sides said ``redis_full``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any, cast

import pytest
import redis

from runstream.redis_server import RedisServer
from tests.battery.conftest import (
    ScriptProcess,
    StartCollector,
    applied_points,
    collector_counters,
    duplicates,
    missing,
    read_record_series,
    record_status,
    report,
    wait_until,
)
from tests.conftest import make_workspace

pytestmark = pytest.mark.battery

POINTS = 3_000_000
#: Well under what the run needs: its record alone takes about 30 MB (points are delta-encoded,
#: about 10 bytes each here), an empty Redis about 1 MB.
MAXMEMORY = 12 * 1024 * 1024
#: The producer's memory bound: past it, its batches go to its spool while Redis is full.
PRODUCER_MEMORY = 4 * 1024 * 1024

_LOG = f"""
import json, time
from runstream import logger_stats
began = time.monotonic()
for i in range({POINTS}):
    run.log("loss", i)
print("logged", time.monotonic() - began, flush=True)
run.complete(timeout=120)
stats = logger_stats()
print("completed", json.dumps({{"spooled": stats.batches_spooled, "retries": stats.retries}}), flush=True)
"""


def outage(client: redis.Redis, key: str, reader: str) -> dict[str, Any] | None:
    """The outage the collector's last report names, or None."""
    raw = cast("bytes | None", client.hget(key, reader))
    return cast("dict[str, Any] | None", json.loads(raw).get("outage")) if raw else None


def full_for(client: redis.Redis, key: str) -> float:
    """Seconds from the start of the outage under way to the collector's last report of it (0: none)."""
    raw = cast("bytes | None", client.hget(key, "c1"))
    report = json.loads(raw) if raw else {}
    return float(report["updated_at"]) - float(report["outage"]["since"]) if report.get("outage") else 0.0


def first_event(log: Path, event: str) -> float:
    """The time of a collector's first ``event`` (its JSON log's timestamp), in Unix seconds."""
    for line in log.read_text().splitlines():
        if line.startswith("{") and json.loads(line)["event"] == event:
            return datetime.fromisoformat(json.loads(line)["timestamp"]).timestamp()
    raise AssertionError(f"no {event} in {log}")


class TestRedisFull:
    """A Redis that fills up mid-run loses nothing, applies nothing twice, dead-letters nothing, kills nothing."""

    def test_filled_then_raised(
        self,
        tmp_path: Path,
        start_collector_process: StartCollector,
        start_script: Callable[..., ScriptProcess],
    ) -> None:
        args = ("--maxmemory", str(MAXMEMORY), "--maxmemory-policy", "noeviction")
        with RedisServer(tmp_path / "redis", args=args) as server:
            client = redis.Redis(port=server.port, socket_timeout=10)
            try:
                self._run(server, client, tmp_path, start_collector_process, start_script)
            finally:
                client.close()

    def _run(
        self,
        server: RedisServer,
        client: redis.Redis,
        tmp_path: Path,
        start_collector_process: StartCollector,
        start_script: Callable[..., ScriptProcess],
    ) -> None:
        workspace = make_workspace(server.url, tmp_path / ".runstream")
        collectors_key = workspace.keys.collectors()
        collector = start_collector_process(workspace, "c1")
        wait_until(lambda: collector.check_alive() and bool(collector_counters(client, workspace, "c1")), 30)
        began = time.monotonic()
        script = start_script(workspace, _LOG, max_memory_bytes=PRODUCER_MEMORY)
        run_id = script.run_id()

        def full() -> bool:
            collector.check_alive()
            return "redis_full" in script.stderr and outage(client, collectors_key, "c1") is not None

        wait_until(full, 60, lambda: f"Redis full; producer:\n{script.stderr[-2000:]}\ncollector:\n{collector.tail()}")
        # Full until the script has logged the whole run: the rest of it waits in the producer.  (Redis
        # has room again for a while each time the collector trims what it applied, until the
        # record alone outgrows maxmemory: then it stays full.)
        wait_until(
            lambda: collector.check_alive() and any(line.startswith("logged") for line in script.lines),
            60,
            lambda: f"the run logged; producer:\n{script.stderr[-2000:]}",
        )
        # Then three lease TTLs of the collector's reports with Redis full: it keeps its shards and says why.
        wait_until(lambda: full() and full_for(client, collectors_key) >= 3.0, 60, "Redis full for three lease TTLs")
        state = outage(client, collectors_key, "c1")
        assert state is not None
        holders = {client.get(workspace.keys.ingest_lease(shard)) for shard in range(workspace.keys.shards)}
        points_while_full = applied_points(client, workspace, run_id)
        memory = client.info("memory")
        client.config_set("maxmemory", str(1024 * 1024 * 1024))
        raised = time.monotonic()
        raised_at = time.time()

        wait_until(
            lambda: collector.check_alive() and applied_points(client, workspace, run_id) >= POINTS,
            120,
            lambda: f"every point applied; collector:\n{collector.tail()}",
        )
        recovered = time.monotonic() - raised
        assert 0 == script.wait(120), script.stderr[-3000:]
        wait_until(lambda: outage(client, collectors_key, "c1") is None, 30, "the collector's report to clear")
        series = read_record_series(workspace, run_id)
        status = record_status(client, workspace, run_id)
        counters = collector_counters(client, workspace, "c1")
        letters = client.xlen(workspace.keys.deadletter())
        completed = json.loads(next(line for line in script.lines if line.startswith("completed")).split(" ", 1)[1])
        events = collector.events()
        memory_after = client.info("memory")
        report(
            "Redis full mid-run (maxmemory, noeviction), then maxmemory raised",
            logged=POINTS,
            arrived=len(series.values),
            missing=missing(series.values, range(POINTS)),
            duplicates=duplicates(series.values),
            in_record_when_full=points_while_full,
            maxmemory_mb=MAXMEMORY // 2**20,
            used_memory_when_raised_mb=f"{int(memory['used_memory']) / 2**20:.1f}",
            used_memory_after_mb=f"{int(memory_after['used_memory']) / 2**20:.1f}",
            full_s=f"{raised_at - float(state['since']):.2f} (this outage's start to maxmemory raised)",
            first_full_s=f"{raised_at - first_event(collector.log, 'redis_full'):.2f} (the collector's first refusal)",
            recovered_s=f"{recovered:.2f} (maxmemory raised to every point in the record)",
            run_s=f"{time.monotonic() - began:.2f}",
            producer_spooled_batches=completed["spooled"],
            producer_retries=completed["retries"],
            dead_letters=letters,
            collector_pid=collector.pid,
            collector_outages=events.count("redis_recovered"),
            collector_redis_full_lines=events.count("redis_full"),
            status=status,
        )

        assert list(range(POINTS)) == series.values
        assert list(range(POINTS)) == series.steps
        assert ("Completed", None) == status
        assert 0 == letters
        assert {b"c1"} == holders  # every lease kept while full
        assert 0 == counters["dead_lettered"]
        assert collector.check_alive()
        assert 1 == events.count("collector_started")  # the same process, never restarted
        assert "redis_full" in events
        assert "redis_recovered" in events
        assert "redis_full" in script.stderr
        assert "redis_unreachable" not in script.stderr
        assert 0 < completed["spooled"]  # past its memory bound, the producer kept the batches on disk
