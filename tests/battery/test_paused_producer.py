"""A training process paused past the heartbeat timeout is NotResponding, not Failed; a dead one fails later.

A process stopped by SIGSTOP (as a debugger, a long checkpoint or a swapped-out host
stops it) sends no heartbeats.  The collector (a process) marks its run NotResponding,
Azure ML's status for that, after the heartbeat timeout; SIGCONT, and the run's next
batch brings it back to Running, the script logs its second half and completes: the
record ends Completed with every point, and ``wait_for_completion`` waited through it
all.  A process SIGKILLed instead is NotResponding, then Failed ("heartbeat lost") once
the second, longer bound has passed.  A live subscriber sees each transition.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, cast

import pytest
import redis

from runstream import Experiment, Run, Workspace
from runstream.connection import connect
from runstream.consumer.subscribe import Update, subscribe
from runstream.consumer.wait import RunFailedError
from runstream.events import StatusChanged
from tests.battery.conftest import (
    CollectorProcess,
    ScriptProcess,
    StartCollector,
    read_record_series,
    record_status,
    report,
    wait_until,
)

pytestmark = pytest.mark.battery

HALF = 1000

#: Logs the first half of "loss", waits for the test's go (a file in its folder), logs the second half.
_TRAIN = f"""
import os, time
for i in range({HALF}):
    run.log("loss", i)
run.flush(timeout=30)
print("first half", flush=True)
deadline = time.monotonic() + 120
while not os.path.exists("go") and time.monotonic() < deadline:
    time.sleep(0.02)
for i in range({HALF}, {2 * HALF}):
    run.log("loss", i)
run.complete()
print("completed", flush=True)
"""


def statuses(workspace: Workspace, run_id: str) -> list[str]:
    """The statuses a live subscriber sees, from the run's beginning until a final one (bounded)."""

    async def follow() -> list[str]:
        async with asyncio.timeout(120), connect(workspace.settings.redis_url) as client:
            return [
                item.event.status
                async for item in subscribe(client, workspace.keys, run_id)
                if isinstance(item, Update) and isinstance(item.event, StatusChanged)
            ]

    return asyncio.run(follow())


def waited(workspace: Workspace, run_id: str) -> dict[str, Any]:
    """What ``wait_for_completion`` returns for the run (bounded)."""
    return Run(Experiment(workspace, "battery"), run_id).wait_for_completion(timeout=120)


@pytest.fixture
def watchers() -> Iterator[ThreadPoolExecutor]:
    """Threads for a live subscriber and a waiter, joined after the test."""
    with ThreadPoolExecutor(max_workers=2) as pool:
        yield pool


def started_run(workspace: Workspace, client: redis.Redis, collector: CollectorProcess, script: ScriptProcess) -> str:
    """The script's run id, once the record shows its first half and the run Running."""
    run_id = script.run_id()
    wait_until(lambda: "first half" in script.lines, 30, lambda: f"the first half flushed\n{script.stderr}")
    wait_until(
        lambda: collector.check_alive() and record_status(client, workspace, run_id)[0] == "Running",
        30,
        lambda: f"the run Running in its record\n{collector.tail()}",
    )
    return run_id


def status_becomes(
    client: redis.Redis, workspace: Workspace, run_id: str, collector: CollectorProcess, status: str
) -> float:
    """Wait until the record shows ``status``; the seconds it took."""
    return wait_until(
        lambda: collector.check_alive() and record_status(client, workspace, run_id)[0] == status,
        30,
        lambda: f"the run {status}, not {record_status(client, workspace, run_id)}\n{collector.tail()}",
    )


class TestPausedProducer:
    """A producer SIGSTOPped past the heartbeat timeout: NotResponding, then Running again, then Completed."""

    def test_sigstop_then_sigcont(
        self,
        workspace: Workspace,
        client: redis.Redis,
        tmp_path: Path,
        watchers: ThreadPoolExecutor,
        start_collector_process: StartCollector,
        start_script: Callable[..., ScriptProcess],
    ) -> None:
        collector = start_collector_process(workspace, heartbeat_timeout=1.5, heartbeat_lost_after=120.0)
        script = start_script(workspace, _TRAIN, heartbeat_interval=0.2)
        run_id = started_run(workspace, client, collector, script)
        seen: Future[list[str]] = watchers.submit(statuses, workspace, run_id)
        waiter = watchers.submit(waited, workspace, run_id)

        script.process.send_signal(signal.SIGSTOP)
        try:
            stopped_to_silent = status_becomes(client, workspace, run_id, collector, "NotResponding")
            silent = record_status(client, workspace, run_id)
            waiting_through = not waiter.done()
        finally:
            script.process.send_signal(signal.SIGCONT)
        resumed_after = status_becomes(client, workspace, run_id, collector, "Running")
        resumed = record_status(client, workspace, run_id)
        (tmp_path / "go").touch()
        code = script.wait(60)
        status_becomes(client, workspace, run_id, collector, "Completed")
        details = waiter.result(timeout=60)
        series = read_record_series(workspace, run_id)
        transitions = seen.result(timeout=60)
        report(
            "producer SIGSTOPped past the heartbeat timeout, then SIGCONT",
            stop_to_not_responding_s=f"{stopped_to_silent:.2f} (heartbeat timeout 1.5 s)",
            cont_to_running_s=f"{resumed_after:.2f}",
            statuses_seen=transitions,
            points=len(series.values),
        )

        assert ("NotResponding", None) == silent
        assert waiting_through, "wait_for_completion does not end on NotResponding"
        assert ("Running", None) == resumed
        assert 0 == code, script.stderr
        assert ("Completed", None) == record_status(client, workspace, run_id)
        assert "Completed" == details["status"]
        assert list(range(2 * HALF)) == series.values
        assert ["NotResponding", "Running", "Completed"] == transitions[-3:]
        assert "Failed" not in transitions


_DIE = f"""
import time
for i in range({HALF}):
    run.log("loss", i)
run.flush(timeout=30)
print("first half", flush=True)
while True:  # the test kills it here
    time.sleep(0.1)
"""


class TestKilledProducer:
    """A producer SIGKILLed: NotResponding after the heartbeat timeout, then Failed ("heartbeat lost") later."""

    def test_sigkill(
        self,
        workspace: Workspace,
        client: redis.Redis,
        watchers: ThreadPoolExecutor,
        start_collector_process: StartCollector,
        start_script: Callable[..., ScriptProcess],
    ) -> None:
        collector = start_collector_process(workspace, heartbeat_timeout=1.0, heartbeat_lost_after=3.0)
        script = start_script(workspace, _DIE, heartbeat_interval=0.2)
        run_id = started_run(workspace, client, collector, script)
        seen: Future[list[str]] = watchers.submit(statuses, workspace, run_id)
        waiter = watchers.submit(waited, workspace, run_id)

        script.process.send_signal(signal.SIGKILL)
        script.wait(10)
        killed = time.monotonic()
        status_becomes(client, workspace, run_id, collector, "NotResponding")
        silent_at = time.monotonic() - killed
        status_becomes(client, workspace, run_id, collector, "Failed")
        failed_at = time.monotonic() - killed
        with pytest.raises(RunFailedError, match="heartbeat lost"):
            waiter.result(timeout=60)
        transitions = seen.result(timeout=60)
        times = cast("list[bytes]", client.hmget(workspace.keys.meta(run_id), ["last_heartbeat", "ended_at"]))
        beat, ended = (float(t) for t in times)
        report(
            "producer SIGKILLed: NotResponding, then Failed",
            kill_to_not_responding_s=f"{silent_at:.2f} (heartbeat timeout 1.0 s)",
            kill_to_failed_s=f"{failed_at:.2f} (lost after 3.0 s)",
            statuses_seen=transitions,
        )

        assert ("Failed", "heartbeat lost") == record_status(client, workspace, run_id)
        assert ["NotResponding", "Failed"] == transitions[-2:]
        assert ended - beat >= 3.0, "failed only once the longer bound had passed"
        assert list(range(HALF)) == read_record_series(workspace, run_id).values
