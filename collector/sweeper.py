"""The heartbeat sweeper: runs whose heartbeats stopped become NotResponding, then Failed.

The collector runs one :class:`Sweeper` in its task group.  Every producer heartbeat
(and run start) puts its run in the workspace's live-run index (``keys.live_runs()``, a
sorted set scored by the collector's time of the run's last heartbeat).  A run silent
for ``silent_after`` seconds (the heartbeat timeout) becomes ``NotResponding``, Azure
ML's status for it: not final, since a process paused by SIGSTOP, a debugger or a long
checkpoint comes back, and its next batch brings the run back to Running
(``apply.lua``'s ``W`` op).  A run silent for ``lost_after`` seconds is Failed
("heartbeat lost") and leaves the index, for good.

Only runs of the shards this collector holds and has caught up with are swept: a
backlog may still hold their heartbeats, and another collector's shards are that
collector's to sweep.  A run that ended meanwhile only leaves the index.

A run is Failed only once it has been NotResponding *in the record* for the rest of the
second bound (``lost_after - silent_after``), not merely silent for ``lost_after``: a
Redis that was full (it refused the producers' heartbeats, which wait in their spools,
and the sweeper's own writes too) or a collector that was down for longer than
``lost_after`` first marks the run NotResponding once writes are taken again, and the
heartbeats that were held back have that long to land.
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

#: Runs read from the index per request.
_PAGE = 100
#: Most silent runs looked at per sweep (the rest wait for the next one).
_MOST = 10_000


class Counts(Protocol):
    """The counters a :class:`Sweeper` adds to (the collector's stats)."""

    heartbeats_lost: int
    not_responding: int


class Sweeper:
    """Makes the silent runs of caught-up shards NotResponding, then Failed.

    Args:
        client: the collector's client.
        applier: the collector's applier (its ``keys`` follow the shard count as it grows).
        caught_up: the collector's owned shards whose last read found no backlog (read, never changed).
        stats: the collector's counters (``not_responding`` and ``heartbeats_lost`` are added to).
        log: the collector's bound logger.
        silent_after: seconds without a heartbeat before a run is NotResponding.
        lost_after: seconds without a heartbeat before a run is Failed ("heartbeat lost").
    """

    def __init__(
        self,
        client: RedisClient,
        applier: Applier,
        caught_up: Set[int],
        stats: Counts,
        log: BoundLogger,
        *,
        silent_after: float,
        lost_after: float,
    ) -> None:
        self._client = client
        self._applier = applier
        self._caught_up = caught_up
        self._stats = stats
        self._log = log
        self._silent_after = silent_after
        self._lost_after = max(lost_after, silent_after)

    async def run(self, stop: asyncio.Event) -> None:
        """Sweep every quarter of the heartbeat timeout (at most every 5 s) until ``stop`` is set."""
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), min(self._silent_after / 4, 5.0))
            with contextlib.suppress(*UNREACHABLE):  # Redis away: swept next time (the shard loops log it)
                await self.sweep(time.time())

    async def sweep(self, now: float) -> None:
        """Look at the runs of caught-up shards whose last heartbeat is ``silent_after`` before ``now``."""
        keys = self._applier.keys
        for run_id, beat in await self._silent(now - self._silent_after):
            if keys.shard_of(run_id) in self._caught_up:  # else another collector's, or in our backlog
                await self._look_at(run_id, beat, now)

    async def _silent(self, cutoff: float) -> list[tuple[str, float]]:
        """The runs whose last heartbeat is at or before ``cutoff``, and its time, oldest first."""
        found: list[tuple[str, float]] = []
        while len(found) < _MOST:
            page = await self._client.zrangebyscore(
                self._applier.keys.live_runs(), "-inf", cutoff, start=len(found), num=_PAGE, withscores=True
            )
            found.extend((raw.decode(), float(score)) for raw, score in cast("list[tuple[bytes, float]]", page))
            if len(page) < _PAGE:
                break
        return found

    async def _look_at(self, run_id: str, beat: float, now: float) -> None:
        keys = self._applier.keys
        fields = ["status", "resumed_at", "not_responding_at"]
        raw = cast("list[bytes | None]", await self._client.hmget(keys.meta(run_id), fields))
        status, resumed_at, marked_at = (value.decode() if value is not None else None for value in raw)
        if status in TERMINAL_STATUSES:  # ended meanwhile (or replayed)
            await self._client.zrem(keys.live_runs(), run_id)
        elif resumed_at is not None and float(resumed_at) > now - self._silent_after:
            return  # heard from since (a batch before its next heartbeat)
        elif self._lost(beat, status, marked_at, now):
            await self._set(run_id, StatusChanged("Failed", "heartbeat lost", now))
            await self._client.zrem(keys.live_runs(), run_id)
            self._stats.heartbeats_lost += 1
            self._log.warning("heartbeat_lost", run_id=run_id, silent_for=round(now - beat, 3))
        elif status != "NotResponding":
            await self._set(run_id, StatusChanged("NotResponding", None, now))
            self._stats.not_responding += 1
            self._log.warning("run_not_responding", run_id=run_id, silent_for=round(now - beat, 3))

    def _lost(self, beat: float, status: str | None, marked_at: str | None, now: float) -> bool:
        """Silent for ``lost_after``, and recorded NotResponding for the rest of that bound."""
        if beat > now - self._lost_after or status != "NotResponding" or marked_at is None:
            return False
        return float(marked_at) <= now - (self._lost_after - self._silent_after)

    async def _set(self, run_id: str, change: StatusChanged) -> None:
        batch = Batch(run_id, "", 0, [change])
        await self._applier.apply_one(plan(batch, self._applier.keys, producer="", now=change.timestamp))
