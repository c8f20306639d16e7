"""Where a run's record lives, on request: archive it now, restore it, delete it (DESIGN §7).

Part of :class:`runstream.Run` (a base class of it), and the helper
:class:`runstream.Experiment`'s like methods use.  The archive's code is imported
lazily, as the consumer's is for reads: a script that only logs never loads it, and
one without the archive extra is told what to install when it asks for these.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, TypeVar

from runstream._log import sdk_logger
from runstream.connection import connect
from runstream.errors import RunstreamError
from runstream.logger import get_logger

if TYPE_CHECKING:
    from runstream.archive.lifecycle import Lifecycle
    from runstream.consumer.reader import RecordReader
    from runstream.experiment import Experiment
    from runstream.workspace import Workspace

T = TypeVar("T")

__all__ = ["RunStorage", "with_lifecycle"]

#: Seconds an archive, restore or delete may take (a large run's file set goes through the store).
_BOUND = 600.0


def with_lifecycle(workspace: Workspace, action: Callable[[Lifecycle], Awaitable[T]]) -> T:
    """Run ``action`` with the workspace's lifecycle (its Redis, archive store and files).

    Raises:
        RunstreamError: the archive extra is not installed.
    """
    try:
        from runstream.archive.lifecycle import Lifecycle
        from runstream.archive.store import open_store
    except ImportError as exc:
        raise RunstreamError(f"archiving, restoring and deleting runs need the archive extra: {exc}") from None
    settings = workspace.settings

    async def act() -> T:
        async with connect(settings.redis_url) as client:
            store = open_store(settings.archive_url, settings.data_dir)
            return await action(
                Lifecycle(client, workspace.keys, store, workspace.artifacts, sdk_logger("runstream.run"))
            )

    return get_logger().call(act, timeout=_BOUND)


class RunStorage:
    """``archive``, ``restore`` and ``delete`` of a run."""

    id: str
    experiment: Experiment | None

    if TYPE_CHECKING:

        def _read(self, query: Callable[[RecordReader], Awaitable[T]], bound: float = ...) -> T: ...

    def _workspace(self) -> Workspace:
        """The run's workspace, once its record holds what this process logged (so a run
        just ended here is deleted whole, not before its last batches arrive)."""
        if self.experiment is None:
            raise RunstreamError("an offline run has no record to archive, restore or delete")
        self._read(lambda reader: reader.status(self.id))
        return self.experiment.workspace

    def archive(self) -> bool:
        """Move the run's record (and its children's) out of Redis into the archive now, rather
        than when its retention says; reads go on as before.  False if it was archived already.

        Raises:
            NotEndedError: the run has not ended.
        """
        from runstream.archive.archiver import Archived

        return isinstance(with_lifecycle(self._workspace(), lambda life: life.archive_run(self.id)), Archived)

    def restore(self) -> bool:
        """Put the archived run's record back into Redis (it is archived again when its retention
        says); False if it was not archived."""
        return with_lifecycle(self._workspace(), lambda life: life.restore_run(self.id))

    def delete(self) -> list[str]:
        """Delete the run for good: its record, its archive, its files and its children; the ids
        deleted (children first).  A batch still on its way for it is dropped.

        Raises:
            NotEndedError: the run or a child has not ended (cancel it first); nothing was deleted.
        """
        return with_lifecycle(self._workspace(), lambda life: life.delete_run(self.id))
