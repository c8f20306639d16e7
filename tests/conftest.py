"""Fixtures: real Redis servers started by the test session, and isolated workspaces.

A session-wide ``redis-server`` (no persistence) serves most tests; each test gets
its own workspace name and data folder, so nothing is shared between tests.  Fault
tests take a server of their own (``restartable_redis``) that they may stop, kill
and restart.  ``RUNSTREAM_TEST_REDIS_URL`` points the shared fixture at an existing
server instead.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, cast

import pytest
import redis
import structlog
from aiohttp.test_utils import TestClient
from hypothesis import settings as hypothesis_settings
from pytest_aiohttp import AiohttpClient

from runstream import Experiment, Settings, Workspace
from runstream.codec import Batch, decode_entry
from runstream.collector import CollectorSettings
from runstream.collector.background import BackgroundCollector
from runstream.collector.records import Series, unpack_series
from runstream.consumer.server import ServerSettings, create_app
from runstream.logger import get_logger
from runstream.redis_server import RedisServer

#: The S3-compatible server's fixtures (``s3``, ``bucket``), for the tests of object stores.
pytest_plugins = ("tests.s3_server",)

# Property tests assert what comes back, not how fast: Hypothesis's default 200 ms deadline per
# example turned a slow moment of a shared machine into a failure (a round-trip property, in CI).
hypothesis_settings.register_profile("runstream", deadline=None)
hypothesis_settings.load_profile("runstream")


@pytest.fixture(scope="session", autouse=True)
def _logs_to_stderr() -> None:
    """Services started inside the test process (collectors) log to the real stderr, so
    their lines never mix with what a test captures from stdout (the CLI's output)."""
    structlog.configure(logger_factory=structlog.WriteLoggerFactory(sys.__stderr__))


@pytest.fixture(scope="session", autouse=True)
def _logger_closed_at_the_end() -> Iterator[None]:
    """The session's logger closes before coverage is combined, so the sender process that
    sent for every test exits and its coverage is counted (at interpreter exit it would be late)."""
    yield
    get_logger().close(timeout=2.0)


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """URL of the session's Redis."""
    existing = os.environ.get("RUNSTREAM_TEST_REDIS_URL")
    if existing:
        yield existing
        return
    with RedisServer(tmp_path_factory.mktemp("redis")) as server:
        yield server.url


@pytest.fixture
def restartable_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A Redis of this test's own, persisting every write (AOF, fsync always)."""
    server = RedisServer(tmp_path / "redis", appendonly=True)
    with server:
        yield server


def make_workspace(redis_url: str, data_dir: Path, **settings: Any) -> Workspace:
    """A workspace with a unique name, logging to ``redis_url``."""
    name = f"t{uuid.uuid4().hex[:12]}"
    return Workspace.from_settings(Settings(redis_url=redis_url, workspace=name, data_dir=data_dir, **settings))


@pytest.fixture
def workspace(redis_url: str, tmp_path: Path) -> Workspace:
    """A fresh workspace on the session's Redis, with its own data folder."""
    return make_workspace(redis_url, tmp_path / ".runstream")


@pytest.fixture
def experiment(workspace: Workspace) -> Experiment:
    return Experiment(workspace, "tests")


def read_batches(workspace: Workspace, run_id: str) -> list[Batch]:
    """Every batch of ``run_id`` on its ingest stream, in stream order, decoded."""
    client = redis.Redis.from_url(workspace.settings.redis_url)
    try:
        entries = cast("list[tuple[bytes, dict[bytes, bytes]]]", client.xrange(workspace.keys.ingest_for(run_id)))
    finally:
        client.close()
    batches = [decode_entry(fields) for _, fields in entries]
    return [b for b in batches if b.run_id == run_id]


def first_of_each_seq(batches: list[Batch]) -> list[Batch]:
    """The batches with redelivered copies (a retried XADD) dropped, as the collector does."""
    seen: set[tuple[str, int]] = set()
    kept = []
    for batch in batches:
        if (batch.producer, batch.seq) not in seen:
            seen.add((batch.producer, batch.seq))
            kept.append(batch)
    return kept


@dataclass(frozen=True)
class ScriptResult:
    """What a training script run in its own process left behind."""

    run_id: str
    returncode: int
    stdout: str
    stderr: str


class RunScript(Protocol):
    def __call__(self, workspace: Workspace, body: str, **settings: Any) -> ScriptResult: ...


_SCRIPT = """
import json, sys
from pathlib import Path
from runstream import Experiment, Settings, Workspace
config = json.loads(sys.argv[1])
config["data_dir"] = Path(config["data_dir"])
run = Experiment(Workspace.from_settings(Settings(**config)), "scripts").start_logging()
print(run.id, flush=True)
"""


@pytest.fixture
def run_script(tmp_path: Path) -> RunScript:
    """Run ``body`` as a training script in a new Python process (``run`` is its run).

    The script starts a run in ``workspace`` (with ``settings`` changed), prints its
    id, runs ``body`` and exits as the body leaves it: without ``complete()`` unless
    the body calls it.
    """

    def run(workspace: Workspace, body: str, **settings: Any) -> ScriptResult:
        config = {
            "redis_url": workspace.settings.redis_url,
            "workspace": workspace.name,
            "data_dir": str(workspace.settings.data_dir),
            **settings,
        }
        script = tmp_path / f"train_{uuid.uuid4().hex[:6]}.py"
        script.write_text(_SCRIPT + textwrap.dedent(body))
        done = subprocess.run(
            [sys.executable, str(script), json.dumps(config)],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            cwd=tmp_path,
        )
        run_id = done.stdout.split("\n", 1)[0].strip()
        return ScriptResult(run_id, done.returncode, done.stdout, done.stderr)

    return run


#: A collector running in a thread of the test process (see BackgroundCollector).
CollectorThread = BackgroundCollector


@pytest.fixture
def start_collector() -> Iterator[Callable[..., CollectorThread]]:
    """Start collectors for a workspace (``start_collector(workspace, **settings)``); stopped after the test."""
    started: list[CollectorThread] = []

    def start(workspace: Workspace, **settings: Any) -> CollectorThread:
        options = {"lease_ttl": 2.0, "heartbeat_timeout": 30.0, "stats_interval": 1.0, **settings}
        thread = BackgroundCollector(CollectorSettings(workspace=workspace.settings, **options)).start()
        started.append(thread)
        return thread

    yield start
    for thread in started:
        thread.stop()


@pytest.fixture
async def api(
    experiment: Experiment, start_collector: Callable[..., CollectorThread], aiohttp_client: AiohttpClient
) -> TestClient[Any, Any]:
    """A test client of the real ``create_app`` for the experiment's workspace, with a collector running."""
    start_collector(experiment.workspace)
    return await aiohttp_client(create_app(ServerSettings(workspace=experiment.workspace.settings)))


def wait_until(condition: Callable[[], bool], timeout: float = 30.0, what: str = "condition") -> None:
    """Poll ``condition`` (a read of Redis state) until it holds, or fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)


def read_series(workspace: Workspace, run_id: str, name: str) -> Series:
    """The packed series of a metric in the run's record, decoded."""
    client = redis.Redis.from_url(workspace.settings.redis_url)
    try:
        sealed = cast("list[bytes]", client.lrange(workspace.keys.metric_series(run_id, name), 0, -1))
        tail = cast("bytes | None", client.get(workspace.keys.metric_tail(run_id, name)))
    finally:
        client.close()
    return unpack_series(b"".join(sealed) + (tail or b""))


@pytest.fixture(params=["process", "thread"])
def each_sender(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Scripts started by the test send from a sender process, then from a sender thread."""
    kind = str(request.param)
    monkeypatch.setenv("RUNSTREAM_SENDER", kind)
    return kind
