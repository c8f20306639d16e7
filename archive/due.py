"""The collector's retention: ended runs of its shards archived, then deleted, when due.

When a run's live stream is trimmed (:mod:`runstream.collector.ended`, a minute after
the end), the run goes into the workspace's archive-due index (``keys.archive_due()``,
scored by its end).  :class:`DueRuns`, run by each collector that can archive, goes
through the runs of the shards it holds: each is archived once its retention's
``archive_after`` has passed since its end, or deleted once ``delete_after`` has (a run
archived, or kept in Redis, moves to the delete-due index if a delete is to come).
The retention is the collector's defaults with the run's experiment's own figures
(:mod:`runstream.retention`), read at each pass, so a change applies to every run not
archived or deleted yet.

The shards' leases are what keep two collectors from archiving one run; were two ever
to try, the swap script lets one of them swap and the other finds it archived already.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Set
from typing import Protocol, cast

from structlog.typing import FilteringBoundLogger as BoundLogger

from runstream.archive.archiver import Archived
from runstream.archive.fileset import ArchiveError
from runstream.archive.lifecycle import Lifecycle, NotEndedError
from runstream.archive.store import StoreError
from runstream.connection import RedisClient
from runstream.keys import Keys
from runstream.retention import Retention, decode_retention

__all__ = ["DueRuns"]

#: Runs read from an index per request.
_PAGE = 100
#: Seconds between two passes, at most.
_EVERY = 5.0
#: What a store or an archive may fail with: the run stays as it is, tried again next pass.
_STORE_FAULTS = (ArchiveError, StoreError, OSError)


class HasKeys(Protocol):
    @property
    def keys(self) -> Keys: ...


class DueRuns:
    """Archives and deletes the owned shards' ended runs as their retention says.

    Args:
        lifecycle: what archives and deletes (in the collector's workspace and store).
        names: the keys' namer, read at each pass (the collector's applier).
        owned: the collector's owned shards that it has caught up with (read, never changed).
        log: the collector's bound logger.
        defaults: the workspace's retention (the collector's settings).
        unreachable: the errors that mean Redis is out of reach (passed by again next time).
    """

    def __init__(
        self,
        lifecycle: Lifecycle,
        names: HasKeys,
        owned: Set[int],
        log: BoundLogger,
        *,
        defaults: Retention,
        unreachable: tuple[type[BaseException], ...],
    ) -> None:
        self.lifecycle = lifecycle
        self._client: RedisClient = lifecycle.client
        self._names = names
        self._owned = owned
        self._log = log
        self.defaults = defaults
        self._unreachable = unreachable

    async def run(self, stop: asyncio.Event) -> None:
        """Archive and delete what is due every few seconds until ``stop`` is set."""
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), _EVERY)
            if stop.is_set():
                break
            with contextlib.suppress(*self._unreachable):  # Redis away: next time
                now = time.time()
                await self.archive_due(now)
                await self.delete_due(now)

    async def _retentions(self) -> tuple[dict[str, dict[str, float | None]], list[float | None]]:
        """The experiments' own figures, and every figure in force (the defaults' included)."""
        raw = cast("dict[bytes, bytes]", await self._client.hgetall(self._names.keys.retention()))
        own = {name.decode(): decode_retention(value) for name, value in raw.items()}
        figures = [self.defaults.archive_after, self.defaults.delete_after]
        figures.extend(seconds for figures_of in own.values() for seconds in figures_of.values())
        return own, figures

    async def _retention_of(self, run_id: str, own: dict[str, dict[str, float | None]]) -> Retention:
        experiment = cast("bytes | None", await self._client.hget(self._names.keys.meta(run_id), "experiment"))
        return self.defaults.with_own(own.get(experiment.decode(), {}) if experiment else {})

    async def archive_due(self, now: float) -> list[Archived]:
        """Archive (or delete, or hand over to the delete-due index) the owned shards' runs that are due."""
        own, figures = await self._retentions()
        done: list[Archived] = []

        async def settle(run_id: str, end: float) -> bool:
            retention = await self._retention_of(run_id, own)
            if retention.delete_after is not None and end + retention.delete_after <= now:
                await self.lifecycle.delete_run(run_id)
                return True
            if retention.archive_after is not None:
                if end + retention.archive_after > now:
                    return False  # not yet
                result = await self.lifecycle.archiver.archive(run_id)
                if isinstance(result, Archived):
                    done.append(result)
                    self._log.info(
                        "run_archived", run_id=run_id, points=result.points, archive_bytes=result.archive_bytes
                    )
                elif result == "changed":  # a batch came in meanwhile: the next pass archives it all
                    return False
            if retention.delete_after is not None:
                await self._client.zadd(self._names.keys.delete_due(), {run_id: end})
            return True

        await self._each_due(self._names.keys.archive_due(), now, figures, settle)
        return done

    async def delete_due(self, now: float) -> list[str]:
        """Delete the owned shards' runs whose retention's ``delete_after`` has passed; their ids."""
        own, figures = await self._retentions()
        deleted: list[str] = []

        async def settle(run_id: str, end: float) -> bool:
            retention = await self._retention_of(run_id, own)
            if retention.delete_after is None:
                return True  # kept now (the retention changed)
            if end + retention.delete_after > now:
                return False
            deleted.extend(await self.lifecycle.delete_run(run_id))
            return True

        await self._each_due(self._names.keys.delete_due(), now, figures, settle)
        return deleted

    async def _each_due(
        self,
        index: str,
        now: float,
        figures: list[float | None],
        settle: Callable[[str, float], Awaitable[bool]],
    ) -> None:
        """``settle`` each owned run of ``index`` that any retention in force may have made due
        (it says whether the run is done with: then it leaves the index)."""
        soonest = min((f for f in figures if f is not None), default=0.0)
        keys, offset = self._names.keys, 0
        while True:
            page = cast(
                "list[tuple[bytes, float]]",
                await self._client.zrangebyscore(
                    index, "-inf", now - soonest, start=offset, num=_PAGE, withscores=True
                ),
            )
            removed = 0
            for raw, end in page:
                run_id = raw.decode()
                if keys.shard_of(run_id) not in self._owned:
                    continue
                try:
                    finished = await settle(run_id, end)
                except _STORE_FAULTS as exc:  # the store failed: the run stays as it is
                    self._log.error("retention_failed", run_id=run_id, error=f"{type(exc).__name__}: {exc}")
                    continue
                except NotEndedError as exc:  # a child still runs: its parent waits for it
                    self._log.info("retention_waits", run_id=run_id, reason=str(exc))
                    continue
                if finished:
                    await self._client.zrem(index, run_id)
                    removed += 1
            offset += len(page) - removed  # those left: other collectors' runs, and runs not done with
            if len(page) < _PAGE:
                break
