"""Whether and how this collector archives ended runs (DESIGN §7, :mod:`runstream.archive`).

The archive needs its extra (pyarrow, pcodec, obstore); a collector without it
archives nothing and says so once.  With it, the collector restores an archived run
that a late batch arrives for, and archives and deletes its shards' ended runs as
their retention says (:mod:`runstream.archive.due`).
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
from runstream.retention import Retention
from runstream.workspace import Workspace

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
        from runstream.archive.due import DueRuns
        from runstream.archive.lifecycle import Lifecycle
        from runstream.archive.store import open_store
    except ImportError as exc:
        log.warning("archive_unavailable", reason=f"{exc}: pip install 'runstream[archive]' to archive ended runs")
        return None
    workspace = settings.workspace
    store = open_store(workspace.archive_url, workspace.data_dir)
    artifacts = Workspace.from_settings(workspace).artifacts
    lifecycle = Lifecycle(client, applier.keys, store, artifacts, log)
    applier.restore = lifecycle.restore_run
    ended.archive_due = True
    defaults = Retention(settings.archive_after, settings.delete_after)
    log.info("retention", store=store.url, archive_after=defaults.archive_after, delete_after=defaults.delete_after)
    return DueRuns(lifecycle, applier, owned, log, defaults=defaults, unreachable=UNREACHABLE)
