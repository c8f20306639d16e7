"""A run whose object the script dropped is still finished at exit, as a referenced one is."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from runstream import Experiment, Run, Workspace
from runstream.events import HeartbeatSent, StatusChanged
from tests.conftest import CollectorThread, RunScript, read_batches, wait_until

#: Each test runs with the sender in a process of its own, then in a thread.
pytestmark = pytest.mark.usefixtures("each_sender")


class TestUnreferencedRun:
    """``exp.start_logging()`` with its object dropped before exit ends Completed, its points kept."""

    def test_dropped_run_is_completed_at_exit(
        self, workspace: Workspace, run_script: RunScript, start_collector: Callable[..., CollectorThread]
    ) -> None:
        start_collector(workspace)
        body = """
            import gc
            for i in range(1_000):
                run.log("loss", float(i))
            del run  # the script's only reference to its run
            gc.collect()
        """

        result = run_script(workspace, body)
        # Sent before the process ended: the stream says at once whether the exit finished the run.
        events = [e for b in read_batches(workspace, result.run_id) for e in b.events]
        last = [e for e in events if not isinstance(e, HeartbeatSent)][-1]
        run = Run(Experiment(workspace, "scripts"), result.run_id)
        wait_until(lambda: run.get_status() == "Completed", 60, "the record to show Completed")

        assert result.returncode == 0, result.stderr
        assert isinstance(last, StatusChanged)
        assert ("Completed", None) == (last.status, last.error)
        assert [float(i) for i in range(1_000)] == run.get_metrics("loss")["loss"]

    def test_run_finished_by_another_object_is_not_finished_again(
        self, workspace: Workspace, run_script: RunScript
    ) -> None:
        body = """
            from runstream import Run
            Run(run.experiment, run.id).fail("failed through another object")
            del run
        """

        result = run_script(workspace, body)
        statuses = [
            (e.status, e.error)
            for b in read_batches(workspace, result.run_id)
            for e in b.events
            if isinstance(e, StatusChanged)
        ]

        assert result.returncode == 0, result.stderr
        assert [("Failed", "failed through another object")] == statuses
