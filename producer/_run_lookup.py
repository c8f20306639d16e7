"""Finding runs as Azure ML v1 finds them: ``Run.get``, ``Run.list``, ``Run.get_context``.

Part of :class:`runstream.Run` (a base class of it).  Each run found is as its record has
it (status, display name, parent): the record is read when the run is looked up.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Self

from runstream._context import submitted_run
from runstream._readback import recorded_metas
from runstream.errors import RunNotFoundError, RunstreamError
from runstream.keys import check_run_id
from runstream.workspace import Workspace

if TYPE_CHECKING:
    from runstream.experiment import Experiment
    from runstream.run import Run

__all__ = ["RunLookup"]

#: The submitted run of this process, once ``Run.get_context`` made it.
_context: Run | None = None


class RunLookup:
    """The ways to a run that exists already (classmethods of :class:`runstream.Run`)."""

    if TYPE_CHECKING:

        def _attach_recorded(self, experiment: Experiment, run_id: str, meta: dict[str, str]) -> None: ...

    @classmethod
    def get(cls, workspace: Workspace, run_id: str) -> Self:
        """The run ``run_id`` of ``workspace``, whatever its experiment (Azure's ``Run.get``).

        Raises:
            RunNotFoundError: the workspace has no such run.
        """
        from runstream.experiment import Experiment  # experiment imports run: a cycle

        meta = recorded_metas(workspace, [check_run_id(run_id)], wait=True).get(run_id)
        if meta is None or not meta.get("experiment"):
            raise RunNotFoundError(f"workspace {workspace.name!r} has no run {run_id!r}")
        run = cls.__new__(cls)
        run._attach_recorded(Experiment(workspace, meta["experiment"]), run_id, meta)
        return run

    @staticmethod
    def list(
        experiment: Experiment,
        type: str | None = None,  # Azure's name
        tags: str | dict[str, str] | None = None,
        properties: str | dict[str, str] | None = None,
        status: str | None = None,
        include_children: bool = False,
        _rehydrate_runs: bool = True,
    ) -> Iterator[Run]:
        """The experiment's runs, newest first, filtered as :meth:`Experiment.get_runs`
        filters them, and by ``status`` (Azure's ``Run.list``; ``_rehydrate_runs`` is
        accepted: the runs are always whole)."""
        runs = experiment.get_runs(type, tags, properties, include_children)
        return (run for run in runs if status is None or run.status == status)

    @classmethod
    def get_context(cls, allow_offline: bool = True) -> Run:
        """The submitted run this process belongs to, or an offline run.

        Inside a script started by ``exp.submit`` (``RUNSTREAM_RUN_ID`` is set) it
        returns that run.  Elsewhere it returns an offline run that shows what is
        logged and keeps it in memory, unless ``allow_offline`` is False.
        """
        submitted = submitted_run()
        if submitted is None:
            if not allow_offline:
                raise RunstreamError("not inside a submitted run: RUNSTREAM_RUN_ID is not set")
            from runstream.offline_run import OfflineRun  # it builds on Run: a cycle

            return OfflineRun()
        from runstream.experiment import Experiment  # experiment imports run: a cycle
        from runstream.run import _attached

        experiment_name, run_id = submitted
        global _context
        if _context is None or _context.id != run_id:  # the same object on each call, as Azure's
            # Attached without reading its record: its supervisor made the run, and the script
            # logs whether a collector runs yet or not.
            _context = _attached(Experiment(Workspace.from_config(), experiment_name), run_id, run_id, None, "Running")
        return _context
