"""Cancelling a run that has ended: ``runstream cancel`` and ``Run.cancel()`` say so, and the run stays as it ended.

A final status is never left (``apply.lua``), so a cancel that comes after one changes
nothing: neither the command (exit 1, one line) nor the SDK (``RunstreamError``, its
``status`` the recorded one) may claim it canceled the run.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from runstream import Experiment, Run
from runstream.errors import RunstreamError
from tests.conftest import CollectorThread
from tests.test_cli_errors import configured, one_line

ENDS = ["complete", "fail", "cancel"]


def ended_run(experiment: Experiment, end: str) -> tuple[Run, str]:
    """A run of ``experiment`` ended by ``end``, and its status in the record."""
    run = experiment.start_logging()
    getattr(run, end)()
    return run, run.get_status()


class TestCancelCommand:
    """``runstream cancel`` of a run that has ended says so and exits 1; the run stays as it ended."""

    @pytest.mark.parametrize("end", ENDS)
    def test_says_so(
        self, end: str, experiment: Experiment, tmp_path: Path, start_collector: Callable[..., CollectorThread]
    ) -> None:
        start_collector(experiment.workspace)
        run, ended = ended_run(experiment, end)

        done = configured(experiment.workspace, tmp_path / "cli").run("cancel", run.id)

        assert 1 == done.returncode
        assert f"Error: run {run.id} has ended {ended}: there is nothing to cancel" == one_line(done)
        assert ended == run.get_status()

    def test_unknown_run(self, experiment: Experiment, tmp_path: Path) -> None:
        done = configured(experiment.workspace, tmp_path / "cli").run("cancel", "tests_1700000000_0123abcd")

        assert 4 == done.returncode
        assert "Error: no run 'tests_1700000000_0123abcd' in workspace" in one_line(done)


class TestRunCancel:
    """``Run(experiment, run_id).cancel()`` of a run that has ended raises, and its ``status`` is the recorded one."""

    @pytest.mark.parametrize("end", ["complete", "fail"])
    def test_raises(self, end: str, experiment: Experiment, start_collector: Callable[..., CollectorThread]) -> None:
        start_collector(experiment.workspace)
        run, ended = ended_run(experiment, end)
        again = Run(experiment, run.id)

        with pytest.raises(RunstreamError, match=f"had ended {ended}: it stays so"):
            again.cancel()

        assert ended == again.status
        assert ended == again.get_status()

    def test_running_run_is_canceled(
        self, experiment: Experiment, start_collector: Callable[..., CollectorThread]
    ) -> None:
        start_collector(experiment.workspace)
        run = experiment.start_logging()
        assert "Running" == run.get_status()  # in the record before another process cancels it

        Run(experiment, run.id).cancel()

        assert "Canceled" == run.get_status()
