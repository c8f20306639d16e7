"""The heartbeat sweeper: marks Failed ("heartbeat lost") the runs whose heartbeats stopped.

The collector runs one :class:`Sweeper` in its task group.  Every producer heartbeat
(and run start) puts its run in the workspace's live-run index (``keys.live_runs()``, a
sorted set scored by the time of the run's last heartbeat).  The sweeper looks at the
runs whose last heartbeat is older than the heartbeat timeout, and fails those of the
shards this collector holds and has caught up with: a backlog may still hold their
heartbeats, and another collector's shards are that collector's to sweep.  A run that
ended meanwhile only leaves the index.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Set
from typing import Protocol, cast

from structlog.typing import FilteringBoundLogger as BoundLogger

from runstream.codec import Batch
from runstream.collector.aggregate import plan
from runstream.collector.applier import UNREACHABLE, Applier
from runstream.connection import RedisClient
from runstream.events import TERMINAL_STATUSES, StatusChanged

__all__ = ["Counts", "Sweeper"]

#: Runs looked at per sweep (the rest wait for the next one).
_BATCH = 100


class Counts(Protocol):
    """The counter a :class:`Sweeper` adds to (the collector's stats)."""

    heartbeats_lost: int


class Sweeper:
    """Fails the runs of caught-up shards whose heartbeats stopped, ``timeout`` seconds on.

    Args:
        client: the collector's client.
        applier: the collector's applier (its ``keys`` follow the shard count as it grows).
        caught_up: the collector's owned shards whose last read found no backlog (read, never changed).
        stats: the collector's counters (``heartbeats_lost`` is added to).
        log: the collector's bound logger.
        timeout: seconds without a heartbeat before a run is marked Failed.
    """

    def __init__(
        self,
        client: RedisClient,
        applier: Applier,
        caught_up: Set[int],
        stats: Counts,
        log: BoundLogger,
        timeout: float,
    ) -> None:
        self._client = client
        self._applier = applier
        self._caught_up = caught_up
        self._stats = stats
        self._log = log
        self._timeout = timeout

    async def run(self, stop: asyncio.Event) -> None:
        """Sweep every quarter of the timeout (at most every 5 s) until ``stop`` is set."""
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), min(self._timeout / 4, 5.0))
            with contextlib.suppress(*UNREACHABLE):  # Redis away: swept next time (the shard loops log it)
                await self.sweep(time.time() - self._timeout)

    async def sweep(self, cutoff: float) -> None:
        """Fail the runs of caught-up shards whose last heartbeat is at or before ``cutoff``."""
        keys = self._applier.keys
        stale = await self._client.zrangebyscore(keys.live_runs(), "-inf", cutoff, start=0, num=_BATCH)
        for raw in cast("list[bytes]", stale):
            run_id = raw.decode()
            if keys.shard_of(run_id) not in self._caught_up:
                continue  # another collector's, or our backlog may hold its heartbeats
            await self._lose(run_id)

    async def _lose(self, run_id: str) -> None:
        keys, now = self._applier.keys, time.time()
        status = cast("bytes | None", await self._client.hget(keys.meta(run_id), "status"))
        if status is not None and status.decode() in TERMINAL_STATUSES:  # ended meanwhile (or replayed)
            await self._client.zrem(keys.live_runs(), run_id)
            return
        batch = Batch(run_id, "", 0, [StatusChanged("Failed", "heartbeat lost", now)])
        await self._applier.apply_one(plan(batch, keys, producer="", now=now))
        await self._client.zrem(keys.live_runs(), run_id)
        self._stats.heartbeats_lost += 1
        self._log.warning("heartbeat_lost", run_id=run_id)
