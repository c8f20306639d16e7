"""Network stalls between a part of the pipeline and Redis (the fault proxy's ``stall``).

A stall freezes the path both ways and keeps the connections open, as a congested or
partitioned network does: no error, no reply.  Stalls of 1 and 3 s run always; the
issue asks for up to 10 s, so a 10 s stall runs too, marked slow (it outlasts the
clients' 5 s socket timeout, so requests are retried on new connections and the held
ones still reach Redis on resume: the wire carries duplicates).

Producer side: ``run.log`` never blocks (each call timed; the longest must stay under
50 ms), the backlog goes to the spool (a 16 KiB memory bound), and everything arrives
once the path flows again.  Collector side: the collector (a process, through the proxy)
rides the stall out and applies everything exactly once.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable

import pytest
import redis

from runstream import Run, Workspace, logger_stats
from tests.battery.conftest import (
    StartCollector,
    applied_points,
    collector_counters,
    duplicates,
    missing,
    read_record_series,
    record_status,
    report,
    shard_pending,
    start_run,
    through,
    wait_until,
)
from tests.battery.proxy import FaultProxy

pytestmark = pytest.mark.battery

STALLS = [1.0, 3.0, pytest.param(10.0, marks=pytest.mark.slow)]
LOG_BOUND = 0.050  # seconds: the longest a log() call may take
BURST = 50  # points logged between two 1 ms pauses: about 40,000 points a second


def log_for(run: Run, seconds: float, first: int) -> tuple[int, float]:
    """Log "loss" = first, first+1, ... for ``seconds``; (the next value, the longest call in seconds).

    The calls are timed with the garbage collector paused, as ``timeit`` times: a full
    collection of the whole test session's heap (100-170 ms under coverage in CI) lands
    in whichever line allocates, a ``log`` call among them, and is not the logger waiting.
    """
    clock, longest, i = time.perf_counter, 0.0, first
    end = time.monotonic() + seconds
    collecting = gc.isenabled()
    gc.disable()
    try:
        while time.monotonic() < end:
            for _ in range(BURST):
                began = clock()
                run.log("loss", i)
                longest = max(longest, clock() - began)
                i += 1
            time.sleep(0.001)  # a training step's pace, not synchronisation
    finally:
        if collecting:
            gc.enable()
    return i, longest


class TestProducerStall:
    """A stalled path to Redis: ``log`` does not block, the spool takes the backlog, all of it arrives once."""

    @pytest.mark.parametrize("stall", STALLS)
    def test_stall(
        self,
        stall: float,
        workspace: Workspace,
        client: redis.Redis,
        fault_proxy: Callable[[str], FaultProxy],
        start_collector_process: StartCollector,
    ) -> None:
        proxy = fault_proxy(workspace.settings.redis_url)
        producing = through(Workspace.from_settings(workspace.settings.with_changes(max_memory_bytes=16 * 1024)), proxy)
        collector = start_collector_process(workspace, "c1")
        # Running before the run ends: complete() waits for the record only while a collector
        # is alive (on a slow machine a collector process took longer to start than the test
        # took to log, and the record was read before anything was applied).
        wait_until(lambda: collector.check_alive() and bool(collector_counters(client, workspace, "c1")), 30)
        run = start_run(producing)
        after_warmup, longest_before = log_for(run, 0.2, 0)
        run.flush(timeout=10)
        before = logger_stats()

        proxy.stall()
        after_stall, longest = log_for(run, stall, after_warmup)  # returns on time: log never waits
        during = logger_stats()
        proxy.resume()
        resumed = time.monotonic()
        run.flush(timeout=60)
        delivered = time.monotonic() - resumed
        run.complete(timeout=60)
        series = read_record_series(workspace, run.id)
        wait_until(lambda: collector_counters(client, workspace, "c1").get("applied", 0) > 0, 10, "counters")
        counters = collector_counters(client, workspace, "c1")
        report(
            f"{stall:g} s stall between the producer and Redis",
            logged=after_stall,
            logged_during_stall=after_stall - after_warmup,
            arrived=len(series.values),
            missing=missing(series.values, range(after_stall)),
            duplicates=duplicates(series.values),
            longest_log_ms=f"{max(longest, longest_before) * 1000:.2f} (during the stall {longest * 1000:.2f})",
            spooled_batches=during.batches_spooled - before.batches_spooled,
            pending_at_resume=f"{during.pending_batches} batches, {during.pending_events} events",
            recovery_s=f"{delivered:.2f} (resume to everything in Redis)",
            wire_duplicates=f"{counters.get('deduped')} entries skipped by the seq check (retried XADDs)",
            proxy_connections=proxy.accepted,
        )

        assert longest < LOG_BOUND, f"a log() call took {longest * 1000:.1f} ms"
        assert during.batches_spooled > before.batches_spooled, "the backlog went to the spool"
        assert during.pending_batches > 0
        assert list(range(after_stall)) == series.values
        assert ("Completed", None) == record_status(client, workspace, run.id)


class TestCollectorStall:
    """A stalled path between the collector and Redis: it recovers and applies everything exactly once.

    The stall begins while the collector is caught up, so each shard's reader is inside a
    blocking XREADGROUP, and the producer (straight to Redis) logs on through the stall:
    once the stall outlasts the socket timeout (10 s), the read is sent again on a new
    connection while the first one still reaches Redis on resume, and delivers entries.
    """

    @pytest.mark.parametrize("stall", STALLS)
    def test_stall(
        self,
        stall: float,
        workspace: Workspace,
        client: redis.Redis,
        fault_proxy: Callable[[str], FaultProxy],
        start_collector_process: StartCollector,
    ) -> None:
        proxy = fault_proxy(workspace.settings.redis_url)
        collector = start_collector_process(workspace, "c1", redis_url=through(workspace, proxy).settings.redis_url)
        run = start_run(workspace)
        before_stall, _ = log_for(run, 0.3, 0)
        run.flush(timeout=10)
        wait_until(
            lambda: collector.check_alive() and applied_points(client, workspace, run.id) == before_stall,
            30,
            "the collector caught up (blocked in its reads)",
        )

        proxy.stall()
        after_stall, _ = log_for(run, stall, before_stall)  # the fault lasts as long as this logging
        run.flush(timeout=10)  # in Redis (the producer's path is not stalled)
        applied_in_stall = applied_points(client, workspace, run.id) - before_stall
        proxy.resume()
        resumed = time.monotonic()
        wait_until(
            lambda: collector.check_alive() and applied_points(client, workspace, run.id) >= after_stall,
            30,
            lambda: (
                f"every point logged until the resume applied: {applied_points(client, workspace, run.id)}"
                f" of {after_stall}; {shard_pending(client, workspace, run.id)}; collector:\n{collector.tail(8)}"
            ),
        )
        recovered = time.monotonic() - resumed
        points, _ = log_for(run, 0.3, after_stall)
        run.complete(timeout=30)
        series = read_record_series(workspace, run.id)
        counters = collector_counters(client, workspace, "c1")
        report(
            f"{stall:g} s stall between the collector and Redis",
            logged=points,
            logged_during_stall=after_stall - before_stall,
            arrived=len(series.values),
            missing=missing(series.values, range(points)),
            duplicates=duplicates(series.values),
            applied_during_stall=applied_in_stall,
            recovery_s=f"{recovered:.2f} (resume to everything logged until then applied)",
            collector=f"applied {counters.get('applied')}, deduped {counters.get('deduped')}",
            collector_events=sorted(set(collector.events()) - {"collector_stats"}),
            proxy_connections=proxy.accepted,
        )

        assert 0 == applied_in_stall
        assert list(range(points)) == series.values
        assert list(range(points)) == series.steps
        assert ("Completed", None) == record_status(client, workspace, run.id)
