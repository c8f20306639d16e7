"""The collector's reporter: publishes its counters, and works out its fair share of the shards.

Every ``lease_ttl / 3`` the :class:`Reporter` refreshes the lag of the owned shards and
publishes the counters, owned shards and the outage under way included, as JSON in
``keys.collectors()`` under the reader's name: what ``runstream`` and the health endpoint
show, and what tells the other collectors this one is alive.  From the others' reports
it works out this collector's fair share (shards divided by the collectors that
published within two lease TTLs) and whether another holds fewer than that, which the
shard loops read to yield or take shards.  It also grows the collector to a shard count
a producer raised.

Publishing needs no room in Redis.  A full Redis refuses an HSET, and a collector whose
report went stale would look dead just when the health endpoint should say why it is
stuck; so the report replaces the previous one through a script whose first write, an
HDEL, needs no memory, which lets its HSET through (see ``leases._ACQUIRE``): the
report, a few hundred bytes, may pass ``maxmemory`` by what it grew.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import Field, asdict
from typing import Any, ClassVar, Final, Protocol, cast

from redis.exceptions import ResponseError
from structlog.typing import FilteringBoundLogger as BoundLogger

from runstream.collector.outage import UNREACHABLE, Outage
from runstream.connection import RedisClient
from runstream.keys import INGEST_GROUP, Keys

__all__ = ["Reporter", "Stats"]

#: Replace the reader's report (KEYS[1] the collectors hash, ARGV[1] the reader, ARGV[2] its JSON).
_PUBLISH: Final = """
redis.call('HDEL', KEYS[1], ARGV[1])
return redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
"""


class Stats(Protocol):
    """What a :class:`Reporter` reads and sets of the collector's counters (a dataclass)."""

    __dataclass_fields__: ClassVar[dict[str, Field[Any]]]
    shards: list[int]
    lag: dict[int, int]
    updated_at: float


class Reporter:
    """Publishes one collector's counters and reads the others' (see the module's doc).

    Args:
        client: the collector's client.
        keys: the workspace's key names (replaced by the collector as its shards grow).
        stats: the collector's counters (a dataclass; ``lag`` and ``updated_at`` are set here).
        outage: the collector's outage, shown in the report.
        log: the collector's bound logger.
        reader: this collector's name.
        lease_ttl: seconds a shard lease lasts (the report period is a third of it).
        stats_interval: seconds between two logged reports.

    Attributes:
        share: the shards this collector may keep while another holds fewer.
        wanted: whether a live collector holds fewer than its share.
        look: set (and replaced) when this collector may hold more shards than it does.
    """

    def __init__(
        self,
        client: RedisClient,
        keys: Keys,
        stats: Stats,
        outage: Outage,
        log: BoundLogger,
        *,
        reader: str,
        lease_ttl: float,
        stats_interval: float,
    ) -> None:
        self.client = client
        self.keys = keys
        self._stats = stats
        self._outage = outage
        self._log = log
        self._reader = reader
        self._lease_ttl = lease_ttl
        self._stats_interval = stats_interval
        self._publish = client.register_script(_PUBLISH)
        self.share = keys.shards
        self.wanted = False
        self.look = asyncio.Event()

    def counters(self) -> dict[str, Any]:
        """The counters as published (and logged); the lease TTL tells readers (the server's
        health) how long a silent collector may still be alive."""
        return {**asdict(self._stats), "outage": self._outage.report(), "lease_ttl": self._lease_ttl}

    async def run(self, stop: asyncio.Event, grow: Callable[[int], Awaitable[None]]) -> None:
        """Report every third of the lease TTL until ``stop``; then withdraw the report.

        ``grow(count)`` is called when a producer recorded more shards than ``keys`` has.
        """
        period, log_at = self._lease_ttl / 3, 0.0
        while not stop.is_set():
            now = time.monotonic()
            try:
                await self.report(log=now >= log_at)
                log_at = log_at if now < log_at else now + self._stats_interval
                recorded = cast("bytes | None", await self.client.get(self.keys.shard_count()))
                if recorded is not None and int(recorded) > self.keys.shards:  # a producer has more shards
                    await grow(int(recorded))
                await self.balance()
            except UNREACHABLE:
                pass  # Redis away: published next period (the shard loops say so)
            except Exception:  # noqa: BLE001  # counters are advisory: a client fault here must not end the collector
                self._log.exception("report_failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), period)
        await self.client.hdel(self.keys.collectors(), self._reader)

    async def balance(self) -> None:
        """Our fair share of the shards, from the counters the live collectors published.

        A collector is live if it published within two lease TTLs (by its clock:
        collectors' clocks are assumed to agree within a fraction of that).
        """
        reports = cast("dict[bytes, bytes]", await self.client.hgetall(self.keys.collectors()))
        fresh = time.time() - 2 * self._lease_ttl
        others: list[int] = []
        for reader, raw in reports.items():
            with contextlib.suppress(ValueError, TypeError, KeyError):  # not a collector's report
                report = json.loads(raw)
                if reader.decode() != self._reader and float(report["updated_at"]) >= fresh:
                    others.append(len(report["shards"]))
        self.share = -(-self.keys.shards // (1 + len(others)))
        self.wanted = any(held < self.share for held in others)
        if not self.wanted and len(self._stats.shards) < self.share:
            self.look.set()  # wakes the loops of the shards we do not hold
            self.look = asyncio.Event()

    async def report(self, *, log: bool = True) -> None:
        """Refresh the lag per owned shard, publish the counters to Redis (and the log)."""
        lag: dict[int, int] = {}
        for shard in self._stats.shards:
            try:
                groups = await self.client.xinfo_groups(self.keys.ingest(shard))
            except ResponseError as exc:
                if isinstance(exc, UNREACHABLE):
                    raise
                continue  # the stream went with a failed-over node: its loop makes it again
            for group in groups:
                if group["name"] in (INGEST_GROUP, INGEST_GROUP.encode()):
                    lag[shard] = int(group.get("lag") or 0) + int(group.get("pending") or 0)
        self._stats.lag = lag
        counters = {**self.counters(), "updated_at": time.time()}
        await self._publish(keys=[self.keys.collectors()], args=[self._reader, json.dumps(counters)])
        self._stats.updated_at = counters["updated_at"]  # once it is published: "reported" means others see it
        if log:
            self._log.info("collector_stats", **counters)
