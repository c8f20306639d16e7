"""The collector's archiving: ended runs of its shards archived once they are due.

When a run's live stream is trimmed (:mod:`runstream.collector.ended`, a minute after
the end), the run goes into the workspace's archive-due index (``keys.archive_due()``,
scored by its end).  :class:`DueRuns`, run by each collector that can archive, archives
the runs of the shards it holds once they ended ``after`` seconds ago, and takes them
out of the index.  The shards' leases are what keep two collectors from archiving one
run; were two ever to try, the swap script lets one of them swap and the other finds it
archived already.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Set
from typing import Protocol, cast

from structlog.typing import FilteringBoundLogger as BoundLogger

from runstream.archive.archiver import Archived, Archiver
from runstream.archive.fileset import ArchiveError
from runstream.archive.store import StoreError
from runstream.connection import RedisClient
from runstream.keys import Keys

__all__ = ["DueRuns"]

#: Runs read from the index per request.
_PAGE = 100
#: Seconds between two passes, at most.
_EVERY = 5.0


class HasKeys(Protocol):
    @property
    def keys(self) -> Keys: ...


class DueRuns:
    """Archives the owned shards' runs ``after`` seconds after they ended.

    Args:
        client: the collector's client.
        archiver: what archives (in the collector's workspace and store).
        names: the keys' namer, read at each pass (the collector's applier).
        owned: the collector's owned shards that it has caught up with (read, never changed).
        log: the collector's bound logger.
        after: seconds after the end that a run is archived.
        unreachable: the errors that mean Redis is out of reach (passed by again next time).
    """

    def __init__(
        self,
        client: RedisClient,
        archiver: Archiver,
        names: HasKeys,
        owned: Set[int],
        log: BoundLogger,
        *,
        after: float,
        unreachable: tuple[type[BaseException], ...],
    ) -> None:
        self._client = client
        self.archiver = archiver
        self._names = names
        self._owned = owned
        self._log = log
        self.after = after
        self._unreachable = unreachable

    async def run(self, stop: asyncio.Event) -> None:
        """Archive what is due every few seconds until ``stop`` is set."""
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), min(max(self.after / 4, 0.5), _EVERY))
            if stop.is_set():
                break
            with contextlib.suppress(*self._unreachable):  # Redis away: archived next time
                await self.archive_due(time.time())

    async def archive_due(self, now: float) -> list[Archived]:
        """Archive the owned shards' runs that ended ``after`` before ``now``; those archived."""
        keys = self._names.keys
        index, done, offset = keys.archive_due(), [], 0
        while True:
            page = cast(
                "list[bytes]",
                await self._client.zrangebyscore(index, "-inf", now - self.after, start=offset, num=_PAGE),
            )
            mine = [run_id for run_id in (raw.decode() for raw in page) if keys.shard_of(run_id) in self._owned]
            removed = 0
            for run_id in mine:
                try:
                    result = await self.archiver.archive(run_id)
                except (ArchiveError, StoreError, OSError) as exc:  # the store failed: the run stays in Redis
                    self._log.error("archive_failed", run_id=run_id, error=f"{type(exc).__name__}: {exc}")
                    continue
                if isinstance(result, Archived):
                    done.append(result)
                    self._log.info(
                        "run_archived", run_id=run_id, points=result.points, archive_bytes=result.archive_bytes
                    )
                elif result == "changed":  # a batch came in meanwhile: the next pass archives it all
                    continue
                await self._client.zrem(index, run_id)
                removed += 1
            offset += len(page) - removed  # those left: other collectors' runs, and runs that changed
            if len(page) < _PAGE:
                break
        return done
