"""Whether and how this collector archives ended runs (DESIGN §7, :mod:`runstream.archive`).

The archive needs its extra (pyarrow, pcodec, obstore); a collector without it
archives nothing and says so once.  With it, the collector restores an archived run
that a late batch arrives for (always), and archives its shards' ended runs once
they are due (unless ``archive_after`` is None).
"""

from __future__ import annotations

import asyncio
from collections.abc import Set
from typing import Protocol

from structlog.typing import FilteringBoundLogger as BoundLogger

from runstream.collector.applier import UNREACHABLE, Applier
from runstream.collector.ended import EndedStreams
from runstream.collector.settings import CollectorSettings
from runstream.connection import RedisClient

__all__ = ["Archiving", "start_archiving"]


class Archiving(Protocol):
    """The archive's loop (:class:`runstream.archive.due.DueRuns`)."""

    async def run(self, stop: asyncio.Event) -> None: ...


def start_archiving(
    settings: CollectorSettings,
    client: RedisClient,
    applier: Applier,
    ended: EndedStreams,
    owned: Set[int],
    log: BoundLogger,
) -> Archiving | None:
    """Give ``applier`` its restorer and ``ended`` its hand-over; the loop to run, if any."""
    try:
        from runstream.archive.archiver import Archiver
        from runstream.archive.due import DueRuns
        from runstream.archive.store import open_store
    except ImportError as exc:
        log.warning("archive_unavailable", reason=f"{exc}: pip install 'runstream[archive]' to archive ended runs")
        return None
    workspace = settings.workspace
    store = open_store(workspace.archive_url, workspace.data_dir)
    archiver = Archiver(client, applier.keys, store, log)
    applier.restore = archiver.restore
    if settings.archive_after is None:
        return None
    ended.archive_due = True
    log.info("archiving", store=store.url, after=settings.archive_after)
    return DueRuns(client, archiver, applier, owned, log, after=settings.archive_after, unreachable=UNREACHABLE)
