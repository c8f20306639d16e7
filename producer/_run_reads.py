"""Reading a run back: its record (metrics, status, tags, details), its completion, its updates.

Part of :class:`runstream.Run` (a base class of it).  Every read first flushes what this
process logged and waits until the record holds it (read-your-writes); the consumer
side is imported lazily (DESIGN §1), so a script that only logs never loads it.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, TypeVar

from runstream._batcher import RunHandle
from runstream._readback import READ_BOUND, await_applied, read_back
from runstream.connection import connect
from runstream.errors import RunstreamError
from runstream.events import TERMINAL_STATUSES, Status
from runstream.logger import get_logger

if TYPE_CHECKING:
    import pandas as pd

    from runstream.consumer.reader import MetricValue as RecordMetricValue
    from runstream.consumer.reader import RecordReader
    from runstream.consumer.subscribe import Resynced, Update
    from runstream.experiment import Experiment
    from runstream.run import Run

T = TypeVar("T")
#: Run types (:attr:`RunReads.type`), and the property that makes a run a submitted one.
SCRIPT_RUN: Final = "azureml.scriptrun"
INTERACTIVE_RUN: Final = "runstream.interactive"
SCRIPT_PROPERTY: Final = "script"

__all__ = ["RunReads"]


class RunReads:
    """The reading methods of a run (``get_metrics``, ``wait_for_completion``, ``subscribe``, ...)."""

    id: str
    experiment: Experiment | None
    status: Status
    _handle: RunHandle | None

    if TYPE_CHECKING:

        def flush(self, timeout: float | None = 10) -> None: ...

    def get_metrics(self, name: str | None = None) -> dict[str, RecordMetricValue]:
        """Every metric of the run (or the one named), shaped as DESIGN §2's table says.

        Reflects everything this process logged before the call (read-your-writes).
        """
        return self._read(lambda reader: reader.metrics(self.id, name))

    def get_metrics_frame(self, name: str | None = None) -> pd.DataFrame:
        """The run's scalar and list metrics (or the one named) as a pandas DataFrame, a row a
        point: metric, step, value, time (UTC).

        Raises:
            RunstreamError: pandas is not installed (the ``frames`` extra).
        """
        from runstream._frames import metrics_frame

        async def points(reader: RecordReader) -> dict[str, tuple[list[int], list[Any], list[float]]]:
            index = await reader.metric_index(self.id)
            names = [n for n, info in index.items() if info["kind"] in ("series", "list") and name in (None, n)]
            found = {}
            for metric in names:
                series = await reader.series(self.id, metric)
                found[metric] = (series.steps, series.values, series.timestamps)
            return found

        return metrics_frame(self._read(points))

    def export(self, path: str | os.PathLike[str]) -> Path:
        """Write the run's metrics (a row a point, as :meth:`get_metrics_frame`) to ``path``:
        Parquet for ``.parquet``, CSV for ``.csv``; the path written."""
        from runstream._frames import export_frame

        return export_frame(self.get_metrics_frame(), os.fspath(path))

    def get_status(self) -> str:
        """The run's status in its record."""
        status = self._read(lambda reader: reader.status(self.id))
        return status or "NotStarted"

    def get_tags(self) -> dict[str, str]:
        return self._read(lambda reader: reader.tags(self.id))

    def get_properties(self) -> dict[str, str]:
        return self._read(lambda reader: reader.properties(self.id))

    @property
    def tags(self) -> dict[str, str]:
        """The run's tags, as its record has them (Azure's ``run.tags``)."""
        return self.get_tags()

    @property
    def properties(self) -> dict[str, str]:
        """The run's properties, as its record has them (Azure's ``run.properties``)."""
        return self.get_properties()

    @property
    def type(self) -> str:
        """The run's type: ``azureml.scriptrun`` for a run ``exp.submit`` started (its
        properties name its script), ``runstream.interactive`` for ``start_logging``'s."""
        return SCRIPT_RUN if SCRIPT_PROPERTY in self.get_properties() else INTERACTIVE_RUN

    def get_details(self) -> dict[str, Any]:
        """id, experiment, status, start/end times, properties, tags, error and files."""
        return self._read(lambda reader: reader.details(self.id))

    def get_children(self) -> list[Run]:
        """The run's child runs, as ``Run`` objects."""
        from runstream.run import Run  # run builds on this module: a cycle

        experiment = self._require_experiment()
        return list(Run._recorded(experiment, self._read(lambda reader: reader.children(self.id))))

    def wait_for_completion(self, show_output: bool = False, timeout: float | None = None) -> dict[str, Any]:
        """Block until the run is Completed, Failed or Canceled, and return its details.

        Follows the run's live stream (no polling); with ``show_output`` prints the
        run's captured output as it arrives.

        Raises:
            RunFailedError: the run failed (its error is in the message).
            TimeoutError: not finished within ``timeout`` seconds.
        """
        return get_logger().call(lambda: self.await_completion(show_output=show_output, timeout=timeout))

    async def await_completion(self, show_output: bool = False, timeout: float | None = None) -> dict[str, Any]:  # noqa: ASYNC109  # mirrors wait_for_completion
        """:meth:`wait_for_completion` for asyncio callers."""
        from runstream.consumer.wait import wait_for_completion  # lazy: DESIGN §1

        workspace = self._require_experiment().workspace
        async with asyncio.timeout(timeout), connect(workspace.settings.redis_url) as client:
            details = await wait_for_completion(client, workspace.keys, self.id, show_output=show_output)
        self.status = details["status"]
        return details

    def subscribe(self, start: str = "beginning", until_final: bool = True) -> Iterator[Update | Resynced]:
        """The run's updates as the collector applies them (a blocking iterator).

        Args:
            start: "beginning", "now", or the id of the last update seen (to resume).
            until_final: stop after the update that ends the run.
        """
        from runstream.consumer.subscribe import follow_sync, subscribe  # lazy: DESIGN §1

        workspace = self._require_experiment().workspace
        logger = get_logger()

        async def updates() -> AsyncGenerator[Update | Resynced, None]:
            async with connect(workspace.settings.redis_url) as client:
                async for item in subscribe(client, workspace.keys, self.id, start=start, until_final=until_final):
                    yield item

        return follow_sync(updates, logger.loop())

    def _require_experiment(self) -> Experiment:
        if self.experiment is None:
            raise RunstreamError("an offline run has no record to read")
        return self.experiment

    def _read(self, query: Callable[[RecordReader], Awaitable[T]], bound: float = READ_BOUND) -> T:
        """Run ``query`` on the record once it holds everything this process logged."""
        workspace = self._require_experiment().workspace
        self.flush(bound)
        return read_back(workspace, self.id, self._handle.seq if self._handle is not None else 0, query, bound)

    def _read_now(self, query: Callable[[RecordReader], Awaitable[T]]) -> T:
        """Run ``query`` on the record as it is (nothing waited for)."""
        return read_back(self._require_experiment().workspace, self.id, 0, query, READ_BOUND)

    def _await_record(self, bound: float) -> Status | None:
        """After a final status: wait until the record shows it, if a collector runs; its status then."""
        workspace = self._require_experiment().workspace
        recorded = await_applied(workspace, self.id, self._handle.seq if self._handle else 0, bound)
        return next((s for s in TERMINAL_STATUSES if s == recorded), None)
