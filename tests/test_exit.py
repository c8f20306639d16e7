"""A process that ends without ``complete()`` still delivers all it logged (atexit flush)."""

from __future__ import annotations

import pytest

from runstream import Workspace
from runstream.events import HeartbeatSent, MetricsLogged, StatusChanged
from tests.conftest import RunScript, read_batches

#: Each test runs with the sender in a process of its own, then in a thread.
pytestmark = pytest.mark.usefixtures("each_sender")


class TestExitFlush:
    """At exit the logger flushes, finishes the runs left open and says so on stderr."""

    def test_exit_without_complete_delivers_everything(self, workspace: Workspace, run_script: RunScript) -> None:
        result = run_script(workspace, "for i in range(100_000):\n    run.log('loss', i * 0.5)\n")

        events = [e for b in read_batches(workspace, result.run_id) for e in b.events]
        values = [v for e in events if isinstance(e, MetricsLogged) for v in e.values]
        last = [e for e in events if not isinstance(e, HeartbeatSent)][-1]

        assert result.returncode == 0, result.stderr
        assert [i * 0.5 for i in range(100_000)] == values
        assert isinstance(last, StatusChanged)
        assert (last.status, last.error) == ("Completed", None)
        assert "logger_flushed" in result.stderr
        assert "logger_flushed" not in result.stdout, "the SDK's messages stay off the script's stdout"

    def test_uncaught_exception_fails_the_run(self, workspace: Workspace, run_script: RunScript) -> None:
        result = run_script(workspace, "run.log('loss', 1.0)\nraise RuntimeError('diverged')\n")

        events = [e for b in read_batches(workspace, result.run_id) for e in b.events]
        last = [e for e in events if not isinstance(e, HeartbeatSent)][-1]

        assert result.returncode != 0
        assert isinstance(last, StatusChanged)
        assert (last.status, last.error) == ("Failed", "RuntimeError: diverged")

    def test_explicit_complete_is_kept(self, workspace: Workspace, run_script: RunScript) -> None:
        result = run_script(workspace, "run.log('loss', 1.0)\nrun.cancel()\n")

        statuses = [
            e.status for b in read_batches(workspace, result.run_id) for e in b.events if isinstance(e, StatusChanged)
        ]

        assert statuses == ["Canceled"]
