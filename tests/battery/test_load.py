"""Load: 16 producer processes of 8 threads each log at once for 30 s; every point is accounted for.

Each thread logs its own metric of its process's run, the values 0, 1, 2, ... at about
``RATE`` points/s (bounded, so the test's Redis holds a few million points, not
hundreds), and reports how many it logged.  Two collector processes apply it all.
Then every run's every metric is read back: exactly the values logged, in order.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from runstream import Experiment, Run, Workspace
from tests.battery.conftest import StartCollector
from tests.conftest import wait_until

pytestmark = [pytest.mark.battery, pytest.mark.slow]

PROCESSES = 16
THREADS = 8
SECONDS = 30.0
RATE = 1_000  # points/s per thread

PRODUCER = """
import json, sys, threading, time
from runstream import Experiment, Workspace

workspace = Workspace(sys.argv[1], redis_url=sys.argv[2], data_dir=sys.argv[3])
threads, seconds, rate = int(sys.argv[4]), float(sys.argv[5]), int(sys.argv[6])
run = Experiment(workspace, "load").start_logging()
counts = {}

def log(k):
    name, logged, start = f"t{k}", 0, time.monotonic()
    while (elapsed := time.monotonic() - start) < seconds:
        due = min(int(elapsed * rate) + 1, int(seconds * rate))
        while logged < due:
            run.log(name, float(logged))
            logged += 1
        time.sleep(0.005)
    counts[name] = logged

workers = [threading.Thread(target=log, args=(k,)) for k in range(threads)]
for w in workers:
    w.start()
for w in workers:
    w.join()
run.complete(timeout=None)
run.flush(timeout=120)
print(json.dumps({"run": run.id, "counts": counts}), flush=True)
"""


class TestLoad:
    """Every point of 16 x 8 concurrent loggers is in the records, once, in order."""

    def test_sixteen_processes_of_eight_threads(
        self, workspace: Workspace, start_collector_process: StartCollector
    ) -> None:
        collectors = [start_collector_process(workspace, f"load{k}", lease_ttl=3.0) for k in range(2)]
        settings = workspace.settings
        argv = [settings.workspace, settings.redis_url, str(settings.data_dir)]
        started = time.monotonic()
        producers = [
            subprocess.Popen(
                [sys.executable, "-c", PRODUCER, *argv, str(THREADS), str(SECONDS), str(RATE)],
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
            )
            for _ in range(PROCESSES)
        ]
        outputs = [p.communicate(timeout=SECONDS + 120)[0] for p in producers]
        logged_in = time.monotonic() - started
        reports = [json.loads(out.decode().strip().splitlines()[-1]) for out in outputs]
        experiment = Experiment(workspace, "load")
        runs = {report["run"]: Run(experiment, report["run"]) for report in reports}
        wait_until(
            lambda: all(r.get_status() == "Completed" for r in runs.values()), 120, "every run applied and Completed"
        )
        drained_in = time.monotonic() - started - logged_in
        wrong = {}
        total = 0
        for report in reports:
            metrics = runs[report["run"]].get_metrics()
            for name, count in report["counts"].items():
                total += count
                if metrics.get(name) != [float(i) for i in range(count)]:
                    got = metrics.get(name)
                    wrong[(report["run"], name)] = (count, len(got) if isinstance(got, list) else got)
        alive = all(c.check_alive() for c in collectors)
        print(
            f"load: {PROCESSES} processes x {THREADS} threads, {total:,} points logged in {logged_in:.1f} s,"
            f" in the records {drained_in:.1f} s after the last producer ended; wrong series: {len(wrong)}"
        )

        assert [0] * PROCESSES == [p.returncode for p in producers]
        assert PROCESSES * THREADS == sum(len(report["counts"]) for report in reports)
        assert total >= PROCESSES * THREADS * RATE * SECONDS * 0.5  # the load was real
        assert {} == wrong
        assert alive
