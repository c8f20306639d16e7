"""Experiments: named groups of runs in a workspace."""

from __future__ import annotations

import contextlib
import io
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from runstream._run_reads import SCRIPT_PROPERTY
from runstream._run_storage import with_lifecycle
from runstream.connection import connect
from runstream.keys import check_identifier
from runstream.logger import get_logger
from runstream.retention import DEFAULT, encode_retention
from runstream.run import Run
from runstream.submit import Executor, LocalExecutor, ScriptRunConfig, snapshot
from runstream.workspace import Workspace

if TYPE_CHECKING:
    import pandas as pd

    from runstream.archive.lifecycle import Lifecycle

__all__ = ["Experiment"]


def _matches(read: Callable[[], dict[str, str]], wanted: str | dict[str, str] | None) -> bool:
    """Whether a run's tags (or properties), read only if asked about, have ``wanted``: a
    name, or names and values."""
    if wanted is None:
        return True
    have = read()
    if isinstance(wanted, str):
        return wanted in have
    return all(have.get(name) == value for name, value in wanted.items())


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
        run.add_properties({SCRIPT_PROPERTY: config.script, "arguments": json.dumps(config.arguments)})
        run.flush()
        (executor or LocalExecutor()).launch(run, config)
        return run

    def archive(self) -> list[str]:
        """Archive every ended run of the experiment now (see :meth:`Run.archive`); the ids archived."""
        from runstream.archive.archiver import Archived
        from runstream.archive.lifecycle import NotEndedError

        async def archive_all(life: Lifecycle) -> list[str]:
            done = []
            for run_id in await life.runs_of(self.name):
                with contextlib.suppress(NotEndedError):  # a run still going is archived when it is due
                    if isinstance(await life.archive_run(run_id), Archived):
                        done.append(run_id)
            return done

        return with_lifecycle(self.workspace, archive_all)

    def delete(self) -> list[str]:
        """Delete the experiment and all its runs (records, archives, files); the run ids deleted.

        Raises:
            NotEndedError: a run has not ended (cancel it first); nothing was deleted.
        """
        return with_lifecycle(self.workspace, lambda life: life.delete_experiment(self.name))

    def set_retention(self, archive_after: object = DEFAULT, delete_after: object = DEFAULT) -> None:
        """Give the experiment's ended runs their own retention: seconds after the end that each is
        archived, and deleted; ``None`` for never (keep forever), ``"default"`` for the workspace's
        (the collectors' ``--archive-after`` and ``--delete-after``).  It applies at once to every
        run not yet archived or deleted, and a delete to every ended run of the experiment.

        Raises:
            ValueError: a figure is neither seconds, None nor "default".
        """
        encoded = encode_retention(archive_after, delete_after)
        keys = self.workspace.keys

        async def store() -> None:
            async with connect(self.workspace.settings.redis_url) as client:
                if encoded is None:
                    await client.hdel(keys.retention(), self.name)
                    return
                await client.hset(keys.retention(), self.name, encoded)
                if delete_after in (DEFAULT, None):
                    return
                # Runs archived already, or ended before: each is due to be deleted from its end.
                for run_id in cast("list[bytes]", await client.zrange(keys.experiment_runs(self.name), 0, -1)):
                    ended = cast("bytes | None", await client.hget(keys.meta(run_id.decode()), "ended_at"))
                    if ended:
                        await client.zadd(keys.delete_due(), {run_id: float(ended)})

        get_logger().call(store, timeout=60)

    def get_runs(
        self,
        type: str | None = None,  # Azure's name
        tags: str | dict[str, str] | None = None,
        properties: str | dict[str, str] | None = None,
        include_children: bool = False,
        *,
        filter: str | None = None,  # the name every tracker's search uses
        order_by: list[str] | str | None = None,
        limit: int | None = None,
    ) -> Iterator[Run]:
        """The experiment's top-level runs (children too with ``include_children``), newest
        first, as a generator (Azure's shape); each as its record has it.

        Args:
            type: only runs of this type (:attr:`Run.type`: ``azureml.scriptrun`` for a
                submitted run, ``runstream.interactive`` for ``start_logging``'s).
            tags: only runs with this tag (a name), or with these tags' values (a dict).
            properties: as ``tags``, of the runs' properties.
            include_children: child runs too.
            filter, order_by, limit: a search (``"metrics.loss < 0.1 and tags.model = 'cnn'"``,
                ``["metrics.loss ASC"]``: see the README's "Search"): its matches, in its order.
        """
        if filter is None and order_by is None and limit is None:
            run_ids = self._run_ids()
        else:
            run_ids = [summary["run_id"] for summary in self.search(filter, order_by, limit)]
        runs = Run._recorded(self, run_ids)
        return (
            run
            for run in runs
            if (include_children or run.parent_id is None)
            and (type is None or run.type == type)
            and _matches(run.get_tags, tags)
            and _matches(run.get_properties, properties)
        )

    def _run_ids(self) -> list[str]:
        from runstream.consumer.reader import RecordReader  # the SDK reads lazily (DESIGN §1)

        workspace = self.workspace

        async def newest_first() -> list[str]:
            async with connect(workspace.settings.redis_url) as client:
                return await RecordReader(client, workspace.keys).runs(self.name)

        return get_logger().call(newest_first, timeout=30)

    def search(
        self,
        filter: str | None = None,  # the name every tracker's search uses
        order_by: list[str] | str | None = None,
        limit: int | None = None,
    ) -> list[dict[str, Any]]:
        """The summaries of the runs that match (run_id, status, name, times, tags, params, and
        each metric's last/min/max), sorted and limited as :meth:`get_runs` says.

        Raises:
            ValueError: the filter or a sort key does not parse (a ``FilterError``).
        """
        from runstream.consumer.reader import RecordReader
        from runstream.consumer.search import search_runs

        workspace = self.workspace

        async def found() -> list[dict[str, Any]]:
            async with connect(workspace.settings.redis_url) as client:
                reader = RecordReader(client, workspace.keys)
                return (await search_runs(reader, self.name, filter, order_by, limit)).runs

        return get_logger().call(found, timeout=120)

    def get_runs_frame(
        self,
        filter: str | None = None,  # the name every tracker's search uses
        order_by: list[str] | str | None = None,
        limit: int | None = None,
    ) -> pd.DataFrame:
        """The matching runs as a pandas DataFrame, a row a run: run_id, status, name, times,
        ``params.<name>``, ``tags.<name>`` and ``metrics.<name>`` (the last value) columns.

        Raises:
            RunstreamError: pandas is not installed (the ``frames`` extra).
        """
        from runstream._frames import runs_frame

        return runs_frame(self.search(filter, order_by, limit))

    def export(
        self,
        path: str | os.PathLike[str],
        filter: str | None = None,  # the name every tracker's search uses
        order_by: list[str] | str | None = None,
    ) -> Path:
        """Write the experiment's runs (a row a run, as :meth:`get_runs_frame`) to ``path``:
        Parquet for ``.parquet``, CSV for ``.csv``; the path written."""
        from runstream._frames import export_frame

        return export_frame(self.get_runs_frame(filter, order_by), os.fspath(path))
