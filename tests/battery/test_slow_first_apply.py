"""A run asked for a moment after it started, before a slow collector made its record, is found.

On a 3-primary cluster the first apply of a run can take a second; a page, a subscriber
or a script that asks for the run right after ``start_logging()`` must not be told it
does not exist.  Here the collector is a process of its own, stopped (SIGSTOP) while the
run starts and resumed a second later: ``Run.get(workspace, run_id)`` (as another process
finds it), the REST API and the event stream each wait for the record (a few seconds at most, while a collector is
alive), where they answered "no such run" at once.  An id that names no recent run is
still refused at once.
"""

from __future__ import annotations

import asyncio
import os
import signal
import threading

import pytest
import redis
from pytest_aiohttp import AiohttpClient

from runstream import Experiment, Run, Workspace
from runstream.consumer.server import ServerSettings, create_app
from runstream.errors import RunNotFoundError
from tests.battery.conftest import CollectorProcess, StartCollector, wait_until

pytestmark = pytest.mark.battery

#: Seconds the collector stays stopped after the run started.
STOPPED_FOR = 1.0


def stopped_while_starting(experiment: Experiment, collector: CollectorProcess) -> tuple[Run, threading.Timer]:
    """A run started (and sent) while the collector is stopped, and the timer that resumes the
    collector after STOPPED_FOR (joined by the test before it ends)."""
    os.kill(collector.pid, signal.SIGSTOP)
    run = experiment.start_logging()
    run.flush()
    resume = threading.Timer(STOPPED_FOR, os.kill, (collector.pid, signal.SIGCONT))
    resume.start()
    return run, resume


@pytest.fixture
def collector(workspace: Workspace, client: redis.Redis, start_collector_process: StartCollector) -> CollectorProcess:
    started = start_collector_process(workspace)
    wait_until(lambda: bool(client.hexists(workspace.keys.collectors(), started.reader)), 30, "the collector's report")
    return started


class TestJustStarted:
    def test_the_sdk_waits_for_the_record(self, workspace: Workspace, collector: CollectorProcess) -> None:
        experiment = Experiment(workspace, "slow")
        os.kill(collector.pid, signal.SIGSTOP)
        run = experiment.start_logging()
        run.flush()
        found: list[Run] = []
        finder = threading.Thread(target=lambda: found.append(Run.get(workspace, run.id)))  # as another process

        finder.start()
        finder.join(0.3)
        waiting = finder.is_alive()  # no record while the collector is stopped: it waits, it has not failed
        os.kill(collector.pid, signal.SIGCONT)
        finder.join(30)

        assert waiting
        assert ["Running"] == [again.status for again in found]
        with pytest.raises(RunNotFoundError):
            Run.get(workspace, "slow_1700000000_0a1b2c3d")  # no recent run: refused at once
        run.complete()

    async def test_the_api_and_the_event_stream_wait_for_the_record(
        self, workspace: Workspace, collector: CollectorProcess, aiohttp_client: AiohttpClient
    ) -> None:
        api = await aiohttp_client(create_app(ServerSettings(workspace=workspace.settings)))
        experiment = Experiment(workspace, "slow")
        first, resume = await asyncio.to_thread(stopped_while_starting, experiment, collector)

        details = await api.get(f"/api/v1/runs/{first.id}")
        await asyncio.to_thread(resume.join)
        await asyncio.to_thread(wait_until, lambda: first.get_status() == "Running", 30, "the first run recorded")
        second, resume = await asyncio.to_thread(stopped_while_starting, experiment, collector)
        events = await api.get(f"/api/v1/runs/{second.id}/events")
        await asyncio.to_thread(resume.join)

        assert 200 == details.status, await details.text()
        assert 200 == events.status, await events.text()
        events.close()
        for run in (first, second):
            await asyncio.to_thread(run.complete)
