"""Experiments: named groups of runs in a workspace."""

from __future__ import annotations

import io
import json

from runstream.connection import connect
from runstream.keys import check_identifier
from runstream.logger import get_logger
from runstream.run import Run
from runstream.submit import Executor, LocalExecutor, ScriptRunConfig, snapshot
from runstream.workspace import Workspace

__all__ = ["Experiment"]


class Experiment:
    """A named group of runs.

    Args:
        workspace: the workspace the experiment belongs to.
        name: 1-255 letters, digits, ``_``, ``.`` or ``-`` (it is part of run ids and URLs).
    """

    def __init__(self, workspace: Workspace, name: str) -> None:
        self.workspace = workspace
        self.name = check_identifier("experiment", name)

    def __repr__(self) -> str:
        return f"Experiment(name={self.name!r}, workspace={self.workspace.name!r})"

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, Experiment)
            and other.name == self.name
            and other.workspace.settings == self.workspace.settings
        )

    def __hash__(self) -> int:
        return hash((self.name, self.workspace.name))

    def start_logging(self, *, display_name: str | None = None) -> Run:
        """Start an interactive run (status Running) that this process logs to.

        Use it as a context manager to complete it on normal exit and fail it, with
        the error, on an exception.  A run left running when the process exits is
        completed then (or failed, if the process died of an uncaught exception).
        """
        return Run._start(self, display_name=display_name, parent_id=None)

    def submit(self, config: ScriptRunConfig, executor: Executor | None = None) -> Run:
        """Run a script as a run of this experiment; returns at once (status Queued).

        The source folder is snapshotted (``snapshot.zip`` among the run's files) and
        the script runs under a supervisor process that captures its output, uploads
        ``./outputs`` and sets the final status.  ``run.wait_for_completion()`` waits.

        Raises:
            SnapshotTooLargeError: the source folder is over the snapshot limit.
        """
        archive = snapshot(config.source_directory)
        run = Run._start(self, display_name=config.script, parent_id=None, status="Queued")
        run.upload_file("snapshot.zip", io.BytesIO(archive))
        run.add_properties({"script": config.script, "arguments": json.dumps(config.arguments)})
        run.flush()
        (executor or LocalExecutor()).launch(run, config)
        return run

    def get_runs(self) -> list[Run]:
        """The experiment's runs, newest first (as the collector has indexed them)."""
        from runstream.consumer.reader import RecordReader  # the SDK reads lazily (DESIGN §1)

        workspace = self.workspace

        async def newest_first() -> list[str]:
            async with connect(workspace.settings.redis_url) as client:
                return await RecordReader(client, workspace.keys).runs(self.name)

        return [Run(self, run_id) for run_id in get_logger().call(newest_first, timeout=30)]
