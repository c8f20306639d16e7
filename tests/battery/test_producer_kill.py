"""A training process SIGKILLed mid-run: its run goes NotResponding, then Failed, and what it flushed is kept.

The script logs "loss" = 0, 1, 2, ... in chunks, flushes after each chunk and then says
how far it has flushed; it sends heartbeats every 0.25 s.  The test kills it with SIGKILL
once it has flushed 20,000 points, while it goes on logging.  The collector (a process,
heartbeat timeout 2 s, lost after 6 s) must mark the run NotResponding within the timeout
and a sweep (a paused process could still come back), then Failed with "heartbeat lost"
once 6 s have passed without a heartbeat; the record must hold every point the script
said it had flushed, once and in order.  What the script logged after its last flush was
in its memory only: a SIGKILL loses that by nature (no exit hook runs), and the record
must show a clean prefix.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from typing import cast

import pytest
import redis

from runstream import Workspace
from tests.battery.conftest import (
    ScriptProcess,
    StartCollector,
    applied_points,
    duplicates,
    read_record_series,
    record_status,
    report,
    wait_until,
)

pytestmark = pytest.mark.battery

HEARTBEAT_TIMEOUT = 2.0
LOST_AFTER = 6.0
CHUNK = 500
KILL_AFTER = 20_000

_TRAIN = f"""
import time
i = 0
while True:
    for j in range(i, i + {CHUNK}):
        run.log("loss", j)
    run.flush(timeout=30)
    i += {CHUNK}
    print("flushed", i, flush=True)
    time.sleep(0.002)  # the rest of a training step
"""


def flushed(script: ScriptProcess) -> int:
    """How far the script said it had flushed."""
    said = [int(line.split()[1]) for line in list(script.lines) if line.startswith("flushed ")]
    return max(said, default=0)


class TestProducerKilled:
    """A producer SIGKILLed: its run is NotResponding, then Failed ("heartbeat lost"); its flushed points stay."""

    def test_sigkill_mid_run(
        self,
        workspace: Workspace,
        client: redis.Redis,
        start_collector_process: StartCollector,
        start_script: Callable[..., ScriptProcess],
    ) -> None:
        collector = start_collector_process(
            workspace, "c1", heartbeat_timeout=HEARTBEAT_TIMEOUT, heartbeat_lost_after=LOST_AFTER
        )
        script = start_script(workspace, _TRAIN, heartbeat_interval=0.25)
        run_id = script.run_id()
        wait_until(lambda: flushed(script) >= KILL_AFTER, 60, f"{KILL_AFTER:,} points flushed\n{script.stderr}")
        # The collector process may still be starting on a loaded machine: the kill is meant
        # to land on a run the record shows Running, heartbeats and all.
        wait_until(
            lambda: collector.check_alive() and record_status(client, workspace, run_id)[0] == "Running",
            30,
            lambda: f"the run Running in its record\n{collector.tail()}",
        )

        script.process.send_signal(signal.SIGKILL)
        killed = time.monotonic()
        code = script.wait(10)
        said = flushed(script)
        running_at_kill = record_status(client, workspace, run_id)
        wait_until(
            lambda: collector.check_alive() and record_status(client, workspace, run_id)[0] != "Running",
            HEARTBEAT_TIMEOUT + 15,
            "the run marked NotResponding",
        )
        silent = record_status(client, workspace, run_id)
        not_responding = time.monotonic() - killed
        failed_after = wait_until(
            lambda: collector.check_alive() and record_status(client, workspace, run_id)[0] == "Failed",
            LOST_AFTER + 15,
            "the run marked Failed",
        )
        detected = time.monotonic() - killed
        times = cast("list[bytes]", client.hmget(workspace.keys.meta(run_id), ["last_heartbeat", "ended_at"]))
        beat, ended = (float(t) for t in times)
        series = read_record_series(workspace, run_id)
        arrived = len(series.values)
        report(
            "producer process SIGKILLed mid-run",
            flushed_said=said,
            logged_at_most=said + CHUNK,
            arrived=arrived,
            duplicates=duplicates(series.values),
            lost_unflushed=f"{said + CHUNK - arrived} at most (logged after the last flush, in the killed memory)",
            status=record_status(client, workspace, run_id),
            not_responding_s=f"{not_responding:.2f} (kill to NotResponding; heartbeat timeout {HEARTBEAT_TIMEOUT} s)",
            recovery_s=f"{detected:.2f} (kill to Failed; lost after {LOST_AFTER} s)",
        )

        assert -signal.SIGKILL == code
        assert ("Running", None) == running_at_kill
        assert ("NotResponding", None) == silent
        assert ("Failed", "heartbeat lost") == record_status(client, workspace, run_id)
        assert ended - beat >= LOST_AFTER, "failed only once the longer bound had passed"
        assert arrived >= said, "every point the script had flushed is in the record"
        assert list(range(arrived)) == series.values, "a clean prefix: in order, each once"
        assert arrived == applied_points(client, workspace, run_id)
        assert failed_after < LOST_AFTER + 15
