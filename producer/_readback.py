"""Read-your-writes for a run: wait until the collector has applied what this process logged.

A :class:`~runstream.run.Run`'s reading methods (``get_metrics``, ``get_status``, ...)
read through :func:`read_back`, and its final statuses wait through
:func:`await_applied`: both block (on the run's live stream, bounded) until the
record holds this process's batches of the run up to a sequence number.  They run on
the logger's loop, and import the consumer's reader lazily (DESIGN §1: the SDK imports
``runstream.consumer`` only inside its reading calls).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Final, TypeVar

from redis.exceptions import NoPermissionError

from runstream._log import sdk_logger
from runstream.connection import connect
from runstream.logger import get_logger
from runstream.workspace import Workspace

if TYPE_CHECKING:
    from runstream.consumer.reader import RecordReader

__all__ = ["READ_BOUND", "await_applied", "read_back", "recorded_metas"]

T = TypeVar("T")
#: Seconds a read waits for the collector to apply what this process logged.
READ_BOUND: Final = 10.0


def read_back(
    workspace: Workspace, run_id: str, seq: int, query: Callable[[RecordReader], Awaitable[T]], bound: float
) -> T:
    """``query`` on the run's record once it holds this process's batches up to ``seq`` (0: none to wait for).

    Raises:
        RecordNotReadyError: not applied within ``bound`` seconds (the message names the likely cause).
    """
    from runstream.consumer.reader import RecordReader, wait_applied  # lazy: DESIGN §1

    settings, keys = workspace.settings, workspace.keys
    logger = get_logger()
    producer = logger.producer

    async def read() -> T:
        async with connect(settings.redis_url) as client:
            reader = RecordReader(client, keys)
            if seq:
                await wait_applied(reader, run_id, producer, seq, bound)
            return await query(reader)

    return logger.call(read, timeout=bound + 30)


def await_applied(workspace: Workspace, run_id: str, seq: int, bound: float) -> str | None:
    """After a final status: wait until the record shows it, if a collector runs.

    Returns:
        The record's status once applied (a run that had ended stays as it ended, so
        it may differ from the one sent); None if no collector runs or the record
        cannot be read.
    """
    from runstream.consumer.reader import RecordReader, collectors_alive, wait_applied  # lazy

    settings, keys = workspace.settings, workspace.keys
    logger = get_logger()
    producer = logger.producer

    async def wait() -> tuple[bool, str | None]:
        async with connect(settings.redis_url) as client:
            if not await collectors_alive(client, keys, time.time()):
                return False, None
            reader = RecordReader(client, keys)
            await wait_applied(reader, run_id, producer, seq, bound)
            return True, await reader.status(run_id)

    try:
        waited, status = logger.call(wait, timeout=bound + 30)
    except NoPermissionError:
        # A write-only Redis user (XADD to the ingest streams) may log and finish runs
        # but not read records: the status is delivered, its application unconfirmed.
        sdk_logger("runstream.run").info(
            "record_not_readable", run_id=run_id, hint="this Redis user may log but not read records"
        )
        return None
    if not waited:
        sdk_logger("runstream.run").warning(
            "no_collector_running", run_id=run_id, hint="the run's record is updated when one starts"
        )
    return status


def recorded_metas(workspace: Workspace, run_ids: Sequence[str], *, wait: bool) -> dict[str, dict[str, str]]:
    """The meta hashes of those of ``run_ids`` that have a record; a deleted run's is
    ``{"deleted": "1"}``.  With ``wait``, one missing that was started a moment ago elsewhere (its first batch not
    applied yet) is waited for a few seconds while a collector runs
    (:func:`runstream.consumer.reader.wait_for_record`)."""
    from runstream.consumer.reader import RECORD_GRACE, RecordReader, wait_for_record  # lazy

    bound = RECORD_GRACE if wait else 0.0
    settings, keys = workspace.settings, workspace.keys

    async def read() -> dict[str, dict[str, str]]:
        async with connect(settings.redis_url) as client:
            reader = RecordReader(client, keys)
            metas = dict(zip(run_ids, await reader.metas(run_ids), strict=True))
            for run_id in [run_id for run_id, meta in metas.items() if not meta]:
                if await client.hexists(keys.meta(run_id), "deleted"):  # a tombstone: not waited for
                    metas[run_id] = {"deleted": "1"}
                elif bound > 0:
                    metas[run_id] = await wait_for_record(reader, run_id, bound)
            return {run_id: meta for run_id, meta in metas.items() if meta}

    return get_logger().call(read, timeout=bound * len(run_ids) + 30)
