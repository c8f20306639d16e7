"""What the ``runstream`` commands say when they cannot do their work: one line on stderr, a non-zero exit.

Each test runs the real command (the venv's ``runstream``) as a subprocess, in an
empty folder, with no ``RUNSTREAM_*`` variable but those the test sets, and ``HOME``
an empty folder: no configuration at all unless the test gives one.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import cast

import pytest
import redis
from redis.typing import EncodableT, FieldT

from runstream import Workspace
from runstream.codec import Batch, encode_batch
from runstream.events import RunStarted
from tests.conftest import CollectorThread, wait_until

RUNSTREAM = str(Path(sys.executable).with_name("runstream"))
#: Commands and arguments each of which needs a workspace (``submit`` also a script, made in the folder).
COMMANDS = [
    ["runs"],
    ["show", "tests_1700000000_0123abcd"],
    ["tail", "tests_1700000000_0123abcd"],
    ["wait", "tests_1700000000_0123abcd"],
    ["cancel", "tests_1700000000_0123abcd"],
    ["submit", "train.py", "--experiment", "tests"],
]
RUN_COMMANDS = ["show", "tail", "wait", "cancel"]


class Command:
    """The ``runstream`` command in an empty folder with an empty ``HOME``; ``env`` is added to a bare environment."""

    def __init__(self, folder: Path, **env: str) -> None:
        self.folder = folder
        (folder / "home").mkdir(parents=True, exist_ok=True)
        (folder / "train.py").write_text("print('hello')\n")
        bare = {k: v for k, v in os.environ.items() if not k.startswith("RUNSTREAM_")}
        self.env = bare | {"HOME": str(folder / "home")} | env

    def start(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [RUNSTREAM, *args],
            cwd=self.folder,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [RUNSTREAM, *args], cwd=self.folder, env=self.env, capture_output=True, text=True, timeout=60, check=False
        )


@pytest.fixture
def bare(tmp_path: Path) -> Command:
    """The command with no configuration at all."""
    return Command(tmp_path / "empty")


@pytest.fixture
def unreachable(tmp_path: Path) -> Command:
    """The command pointed at a loopback port where nothing listens."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return Command(tmp_path / "unreachable", RUNSTREAM_REDIS_URL=f"redis://127.0.0.1:{port}/0")


def configured(workspace: Workspace, folder: Path, client_name: str | None = None) -> Command:
    """The command pointed at ``workspace`` (its Redis connections named ``client_name``)."""
    url = workspace.settings.redis_url + (f"?client_name={client_name}" if client_name else "")
    return Command(
        folder,
        RUNSTREAM_REDIS_URL=url,
        RUNSTREAM_WORKSPACE=workspace.name,
        RUNSTREAM_DATA_DIR=str(workspace.settings.data_dir),
    )


def one_line(done: subprocess.CompletedProcess[str]) -> str:
    """The command's stderr, which must be one line."""
    lines = done.stderr.splitlines()
    assert 1 == len(lines), done.stderr
    return lines[0]


class TestNoWorkspace:
    """With nothing configured, every command says how to configure a workspace, in one line."""

    @pytest.mark.parametrize("args", COMMANDS, ids=lambda args: args[0])
    def test_says_how(self, bare: Command, args: list[str]) -> None:
        done = bare.run(*args)

        line = one_line(done)
        assert 1 == done.returncode
        assert "Traceback" not in done.stdout + done.stderr
        assert line.startswith("Error: no Redis to log to: run `runstream up`")
        assert "RUNSTREAM_REDIS_URL" in line

    def test_serve(self, bare: Command) -> None:
        done = bare.run("serve", "--port", "0")

        assert 1 == done.returncode
        assert one_line(done).startswith("Error: no Redis to log to: run `runstream up`")


class TestUnreachableRedis:
    """A Redis nothing answers at: every command names the URL and the cause, in one line."""

    @pytest.mark.parametrize("args", COMMANDS, ids=lambda args: args[0])
    def test_names_the_cause(self, unreachable: Command, args: list[str]) -> None:
        url = unreachable.env["RUNSTREAM_REDIS_URL"]

        done = unreachable.run(*args)

        line = one_line(done)
        assert 1 == done.returncode
        assert "Traceback" not in done.stdout + done.stderr
        assert line.startswith(f"Error: cannot reach Redis at {url} (connection refused): is it running")
        assert [] == list((unreachable.folder / ".runstream").glob("spool/**/*.spool")), "submit spooled nothing"


class TestBadRunId:
    """A malformed run id is a usage error (exit 2), found before anything is read or connected."""

    @pytest.mark.parametrize("command", RUN_COMMANDS)
    def test_usage_error(self, bare: Command, command: str) -> None:
        done = bare.run(command, "../x")

        assert 2 == done.returncode
        assert "Error: run id '../x' is invalid: use 1-" in one_line(done)
        assert "Traceback" not in done.stdout + done.stderr

    def test_no_such_script(self, bare: Command) -> None:
        done = bare.run("submit", "nope.py", "--experiment", "tests")

        assert 2 == done.returncode
        assert "Error: no script 'nope.py' in" in one_line(done)


def forge_run(client: redis.Redis, workspace: Workspace, run_id: str) -> None:
    """Make ``run_id``'s record appear: its run_started batch on its ingest shard, for the collector."""
    batch = Batch(run_id, uuid.uuid4().hex, 1, [RunStarted("tests", run_id, None, "Running", time.time())])
    fields = cast("dict[FieldT, EncodableT]", dict(encode_batch(batch)))
    client.xadd(workspace.keys.ingest_for(run_id), fields)


def waited_for_record(client: redis.Redis, name: str) -> bool:
    """Whether the client named ``name`` has blocked on a stream (XREAD): the wait for a record."""
    return any(c.get("name") == name and c.get("cmd") == "xread" for c in client.client_list())


@pytest.fixture
def client(workspace: Workspace) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(workspace.settings.redis_url, decode_responses=True)
    yield client
    client.close()


class TestUnknownRun:
    """An unknown run whose id names a time long past: exit 4 at once, without the grace a new run gets."""

    @pytest.mark.parametrize("command", RUN_COMMANDS)
    def test_answers_at_once(
        self,
        command: str,
        workspace: Workspace,
        client: redis.Redis,
        tmp_path: Path,
        start_collector: Callable[..., CollectorThread],
    ) -> None:
        start_collector(workspace)  # alive: the grace would be waited through for a new id
        wait_until(lambda: bool(client.hgetall(workspace.keys.collectors())), what="the collector's report")
        name = f"cli-{uuid.uuid4().hex[:8]}"
        run_id = f"tests_{int(time.time()) - 3600}_0123abcd"
        process = configured(workspace, tmp_path / "cli", client_name=name).start(command, run_id)
        waited: list[bool] = []

        def ended() -> bool:
            # While the command runs: had it waited for the record (the grace), the record now
            # appears, and it would show the run rather than call it unknown.
            if not waited and waited_for_record(client, name):
                waited.append(True)
                forge_run(client, workspace, run_id)
            return process.poll() is not None

        try:
            wait_until(ended, 60, "the command's end")
        finally:
            process.kill()
        stdout, stderr = process.communicate(timeout=10)
        done = subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)

        assert 4 == done.returncode, done.stdout + done.stderr
        assert f"Error: no run '{run_id}' in workspace '{workspace.name}'" in one_line(done)
        assert [] == waited, "it waited for a record"
