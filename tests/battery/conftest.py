"""What the battery's tests share: the parts of the pipeline as real processes, a paced
producer, fault proxies, and the checks and figures every test prints.

Each part runs as it does in production: collectors are ``python -m runstream.collector``
processes, the server is ``runstream serve``, training scripts are Python processes; the
producer under test may also be a thread of the test process (its logger is the real
one).  Every process is killed and reaped by the fixture that started it, every wait is
bounded, and every figure a test asserts on is printed first (``pytest -s`` shows them).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, cast
from urllib.parse import urlsplit, urlunsplit

import pytest
import redis

from runstream import Experiment, Run, Workspace
from runstream.collector.records import Series
from runstream.connection import connect
from runstream.consumer.reader import RecordReader
from runstream.keys import INGEST_GROUP
from tests.battery.proxy import FaultProxy

#: The training-script header: starts a run from the settings in argv[1], prints its id.
SCRIPT_HEAD: Final = """
import json, sys
from pathlib import Path
from runstream import Experiment, Settings, Workspace
config = json.loads(sys.argv[1])
config["data_dir"] = Path(config["data_dir"])
run = Experiment(Workspace.from_settings(Settings(**config)), "battery").start_logging()
print(run.id, flush=True)
"""


#: A synchronous client of one server or of a cluster, for a test's own looks at the record.
SyncRedis = redis.Redis | redis.RedisCluster


def report(title: str, **figures: object) -> None:
    """Print a test's figures as one block (what was logged, what arrived, duplicates, recovery)."""
    width = max(map(len, figures))
    lines = [f"[battery] {title}", *(f"    {name:<{width}}  {value}" for name, value in figures.items())]
    print("\n" + "\n".join(lines), flush=True)  # the battery's figures are its output


def duplicates(values: Sequence[object]) -> int:
    """How many values occur more than once (each extra copy counted)."""
    return sum(n - 1 for n in Counter(values).values() if n > 1)


def missing(values: Sequence[object], expected: range) -> int:
    """How many of ``expected`` are not among ``values``."""
    return len(set(expected).difference(values))


def read_record_series(workspace: Workspace, run_id: str, name: str = "loss") -> Series:
    """The metric's packed series in the run's record, read as the server reads it (RecordReader)."""

    async def read() -> Series:
        async with connect(workspace.settings.redis_url) as client:
            return await RecordReader(client, workspace.keys).series(run_id, name)

    return asyncio.run(read())


def environment(workspace: Workspace, redis_url: str | None = None) -> dict[str, str]:
    """The environment of a runstream process serving ``workspace`` (through ``redis_url`` if given)."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("RUNSTREAM_")}
    return env | {
        "RUNSTREAM_REDIS_URL": redis_url or workspace.settings.redis_url,
        "RUNSTREAM_WORKSPACE": workspace.name,
        "RUNSTREAM_DATA_DIR": str(workspace.settings.data_dir),
        "RUNSTREAM_SHARDS": str(workspace.settings.shards),
    }


class Process:
    """A child process whose output goes to a log file; killed and reaped by its fixture."""

    def __init__(self, command: list[str], env: dict[str, str], log: Path, name: str) -> None:
        self.name = name
        self.log = log
        with log.open("ab") as out:
            out.write(f"--- starting {name}\n".encode())
            out.flush()
            self.process = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=log.parent)

    @property
    def pid(self) -> int:
        return self.process.pid

    def tail(self, lines: int = 30) -> str:
        """The end of the log, for assertion messages."""
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def check_alive(self) -> bool:
        """True while it runs; a process that exits on its own fails the test with its log."""
        code = self.process.poll()
        assert code is None, f"{self.name} exited with {code}:\n{self.tail(300)}"
        return True

    def kill(self) -> None:
        """SIGKILL, as a crash or an OOM kill would, then reap it."""
        self.check_alive()
        self.process.send_signal(signal.SIGKILL)
        assert -signal.SIGKILL == self.process.wait(10)

    def terminate(self, timeout: float) -> int:
        """SIGTERM, then the exit code once the process has exited (within ``timeout``)."""
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout)

    def end(self) -> None:
        """Kill it if it still runs, and reap it (fixture teardown)."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(10)


class CollectorProcess(Process):
    """``python -m runstream.collector`` for a workspace, logging JSON lines."""

    def __init__(
        self,
        workspace: Workspace,
        reader: str,
        log: Path,
        *,
        redis_url: str | None = None,
        lease_ttl: float = 1.0,
        heartbeat_timeout: float = 30.0,
        heartbeat_lost_after: float | None = None,
    ) -> None:
        command = [sys.executable, "-m", "runstream.collector", "--reader", reader, "--lease-ttl", str(lease_ttl)]
        command += ["--heartbeat-timeout", str(heartbeat_timeout), "--json"]
        if heartbeat_lost_after is not None:
            command += ["--heartbeat-lost-after", str(heartbeat_lost_after)]
        super().__init__(command, environment(workspace, redis_url), log, f"collector {reader}")
        self.reader = reader

    def events(self) -> list[str]:
        """The events this reader logged (any of its processes, in order)."""
        lines = [json.loads(line) for line in self.log.read_text().splitlines() if line.startswith("{")]
        return [line["event"] for line in lines if line.get("reader") == self.reader]


class ServerProcess(Process):
    """``runstream serve`` for a workspace on ``port``."""

    def __init__(self, workspace: Workspace, port: int, log: Path) -> None:
        runstream = str(Path(sys.executable).with_name("runstream"))
        command = [runstream, "serve", "--port", str(port), "--json"]
        super().__init__(command, environment(workspace), log, f"server :{port}")
        self.port = port

    def listening(self) -> bool:
        """Whether it accepts connections (it listens once its app has started)."""
        self.check_alive()
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                return True
        except OSError:
            return False


class ScriptProcess:
    """A training script (``run`` is its run) in a Python process; its stdout lines are collected as they come."""

    def __init__(self, workspace: Workspace, body: str, folder: Path, **settings: Any) -> None:
        config = {
            "redis_url": workspace.settings.redis_url,
            "workspace": workspace.name,
            "data_dir": str(workspace.settings.data_dir),
            **settings,
        }
        script = folder / f"train_{uuid.uuid4().hex[:6]}.py"
        script.write_text(SCRIPT_HEAD + textwrap.dedent(body))
        self.stderr_path = script.with_suffix(".stderr")
        with self.stderr_path.open("wb") as err:
            self.process = subprocess.Popen(
                [sys.executable, str(script), json.dumps(config)],
                stdout=subprocess.PIPE,
                stderr=err,
                text=True,
                cwd=folder,
            )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, name="script-stdout", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None  # PIPE
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def run_id(self, timeout: float = 30.0) -> str:
        """The run's id (the script's first line)."""
        wait_until(lambda: bool(self.lines) or self.process.poll() is not None, timeout, "the script's run id")
        assert self.lines, self.stderr
        return self.lines[0]

    def wait(self, timeout: float) -> int:
        code = self.process.wait(timeout)
        self._reader.join(10)
        return code

    def end(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.wait(10)
        assert self.process.stdout is not None  # PIPE
        self.process.stdout.close()


@dataclass
class Started:
    """What a test started; ended in reverse order after it."""

    processes: list[Process | ScriptProcess] = field(default_factory=list)
    proxies: list[FaultProxy] = field(default_factory=list)

    def end(self) -> None:
        for process in reversed(self.processes):
            process.end()
        for proxy in self.proxies:
            proxy.close()


@pytest.fixture
def started() -> Iterator[Started]:
    """Processes and proxies a test starts (through the factories below); all ended after it."""
    things = Started()
    yield things
    things.end()


StartCollector = Callable[..., CollectorProcess]


@pytest.fixture
def start_collector_process(started: Started, tmp_path: Path) -> StartCollector:
    """``start(workspace, reader, **options)``: a collector process (see :class:`CollectorProcess`)."""

    def start(workspace: Workspace, reader: str = "c1", **options: Any) -> CollectorProcess:
        # A log file per reader: two processes writing one file could interleave their lines.
        collector = CollectorProcess(workspace, reader, tmp_path / f"collector-{reader}.log", **options)
        started.processes.append(collector)
        return collector

    return start


@pytest.fixture
def start_server_process(started: Started, tmp_path: Path) -> Callable[[Workspace, int], ServerProcess]:
    """``start(workspace, port)``: a ``runstream serve`` process."""

    def start(workspace: Workspace, port: int) -> ServerProcess:
        server = ServerProcess(workspace, port, tmp_path / "server.log")
        started.processes.append(server)
        return server

    return start


@pytest.fixture
def start_script(started: Started, tmp_path: Path) -> Callable[..., ScriptProcess]:
    """``start(workspace, body, **settings)``: a training script process (see :class:`ScriptProcess`)."""

    def start(workspace: Workspace, body: str, **settings: Any) -> ScriptProcess:
        script = ScriptProcess(workspace, body, tmp_path, **settings)
        started.processes.append(script)
        return script

    return start


@pytest.fixture
def fault_proxy(started: Started) -> Callable[[str], FaultProxy]:
    """``proxy(redis_url)``: a started :class:`FaultProxy` to that Redis."""

    def start(redis_url: str) -> FaultProxy:
        parts = urlsplit(redis_url)
        proxy = FaultProxy((parts.hostname or "127.0.0.1", parts.port or 6379)).start()
        started.proxies.append(proxy)
        return proxy

    return start


@pytest.fixture
def client(workspace: Workspace) -> Iterator[redis.Redis]:
    """A client of the workspace's Redis, for reading the record."""
    client = redis.Redis.from_url(workspace.settings.redis_url)
    yield client
    client.close()


def through(workspace: Workspace, proxy: FaultProxy) -> Workspace:
    """The same workspace (name, data folder, settings) reached through ``proxy``."""
    url = urlunsplit(urlsplit(workspace.settings.redis_url)._replace(netloc=f"{proxy.host}:{proxy.port}"))
    return Workspace.from_settings(workspace.settings.with_changes(redis_url=url))


def collector_counters(client: SyncRedis, workspace: Workspace, reader: str) -> dict[str, Any]:
    """The counters a collector process last published (applied, deduped, dead_lettered, ...)."""
    raw = cast("bytes | None", client.hget(workspace.keys.collectors(), reader))
    return dict(json.loads(raw)) if raw else {}


def wait_until(
    condition: Callable[[], bool], timeout: float = 30.0, what: str | Callable[[], str] = "condition"
) -> float:
    """Poll ``condition`` (a read of state) until it holds, or fail after ``timeout``; the seconds it took.

    ``what`` names the condition in the failure; a callable is called then (a log's tail as it is at the end).
    """
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"timed out after {timeout} s waiting for {what() if callable(what) else what}")
        time.sleep(0.02)
    return time.monotonic() - start


def shard_pending(client: SyncRedis, workspace: Workspace, run_id: str) -> str:
    """The run's ingest shard: entries pending per reader, and the oldest (for failure messages)."""
    stream = workspace.keys.ingest_for(run_id)
    summary = client.xpending(stream, INGEST_GROUP)
    return f"{stream}: {summary['pending']} pending, per reader {summary['consumers']}, from {summary['min']}"


def applied_points(client: SyncRedis, workspace: Workspace, run_id: str, name: str = "loss") -> int:
    """Points of ``name`` in the run's record so far."""
    return int(cast("bytes | None", client.hget(workspace.keys.metric_counts(run_id), name)) or 0)


def record_status(client: SyncRedis, workspace: Workspace, run_id: str) -> tuple[str | None, str | None]:
    """The record's (status, error)."""
    status, error = cast("list[bytes | None]", client.hmget(workspace.keys.meta(run_id), ["status", "error"]))
    return (status.decode() if status else None, error.decode() if error else None)


class PacedProducer:
    """Logs value i at step i of "loss" for i in 0..points-1 from a thread, at about ``rate``
    points a second (in chunks of ``chunk``), then completes the run.

    ``flush_every``: flush after that many points (many small entries); None: never (the
    logger batches as it likes, and nothing here waits on Redis).  The longest ``log``
    call is measured: the logger's promise is that it never waits for Redis.

    ``hold_at``: having logged that many points, wait for :meth:`resume` (then go on at
    ``rate``), so that a test acting on what its readers saw (which may lag seconds on a
    loaded machine) still has points left to log after it acted.
    """

    def __init__(
        self,
        run: Run,
        points: int,
        rate: float,
        *,
        chunk: int = 100,
        flush_every: int | None = None,
        complete_timeout: float = 60.0,
        hold_at: int | None = None,
    ) -> None:
        self.run = run
        self.points = points
        self.rate = rate
        self.chunk = chunk
        self.flush_every = flush_every
        self.complete_timeout = complete_timeout
        self.logged = 0  # points logged so far (read by the test's thread)
        self.longest_log = 0.0  # seconds, the longest single log() call
        self.completed_at: float | None = None  # monotonic time complete() returned
        self.error: BaseException | None = None
        self.hold_at = hold_at
        self._resumed = threading.Event()
        self._thread = threading.Thread(target=self._main, name="paced-producer", daemon=True)
        self._thread.start()

    def _main(self) -> None:
        run, clock, longest = self.run, time.perf_counter, 0.0
        try:
            start = time.monotonic()
            for first in range(0, self.points, self.chunk):
                if self.hold_at is not None and first >= self.hold_at and not self._resumed.is_set():
                    self._resumed.wait(120)  # the test's signal (it acts, then resumes us)
                    start = time.monotonic() - first / self.rate  # on at the rate from here, no burst
                # Pacing (a training loop's rhythm), not synchronisation: nothing waits on state here.
                ahead = start + first / self.rate - time.monotonic()
                if ahead > 0:
                    time.sleep(ahead)
                for i in range(first, min(first + self.chunk, self.points)):
                    began = clock()
                    run.log("loss", i)
                    longest = max(longest, clock() - began)
                self.logged, self.longest_log = min(first + self.chunk, self.points), longest
                if self.flush_every and self.logged % self.flush_every == 0:
                    run.flush(timeout=60)
            run.complete(timeout=self.complete_timeout)
            self.completed_at = time.monotonic()
        except BaseException as exc:  # noqa: BLE001  # raised by join() in the test's thread
            self.error = exc

    def resume(self) -> None:
        """Let a producer held at ``hold_at`` go on (and one not there yet never stop)."""
        self._resumed.set()

    @property
    def logging(self) -> bool:
        return self._thread.is_alive()

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)
        assert not self._thread.is_alive(), f"the producer did not finish within {timeout} s"
        if self.error is not None:
            raise self.error


def start_run(workspace: Workspace) -> Run:
    """A new run of the battery's experiment, logged from this process."""
    return Experiment(workspace, "battery").start_logging()
