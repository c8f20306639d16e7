"""Ended runs give back their live stream: after a while, it keeps only its newest entry.

A live stream holds copies of a run's recent updates (up to about
:data:`~runstream.collector.aggregate.LIVE_BYTES`) for subscribers that follow or resume
the run.  Once the run has ended, nobody follows it from there: the page and the widget
read its record, and a client that resumes later from an older id is told to resync
(the stream was trimmed past its point) and reads the record too.  Left alone, each
ended run would keep up to a megabyte of duplicated points in Redis for good.

When a run ends, ``apply.lua``'s follow-ups put it in the workspace's ended-run index
(``keys.ended_runs()``, scored by the collector's time of the end).  An
:class:`EndedStreams` in each collector trims, ``keep`` seconds after the end, the live
streams of the ended runs of the shards it holds to their newest entry (the final
status, as a resuming client's last message and the record's ``live_id``), then takes the
run out of the index (and, where the collector archives, puts it in the archive-due
index: :mod:`runstream.archive.due`).  The grace lets clients that were a few seconds behind (a server
restart, a slow tab) catch up on the end as it happened.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Set
from typing import Any, Protocol, cast

from structlog.typing import FilteringBoundLogger as BoundLogger

from runstream.codec import decode_payload, encode_payload
from runstream.collector.applier import UNREACHABLE
from runstream.connection import RedisClient
from runstream.events import Event, StatusChanged
from runstream.keys import Keys

__all__ = ["EndedStreams", "HasKeys"]

#: Runs read from the index per request.
_PAGE = 500

#: Rewrites a key from its own serialization, allocated to fit (DUMP and RESTORE keep a
#: stream's ids, entries-added and groups).
_SHRINK = "redis.call('RESTORE', KEYS[1], 0, redis.call('DUMP', KEYS[1]), 'REPLACE') return 1"


class HasKeys(Protocol):
    """What names the keys: the collector's applier (whose keys follow the shard count as
    it grows), or a workspace."""

    @property
    def keys(self) -> Keys: ...


class EndedStreams:
    """Trims the live streams of runs ended ``keep`` seconds ago to their newest entry.

    Args:
        client: the collector's client.
        names: the keys' namer, read at each pass (the collector's applier).
        owned: the collector's owned shards that it has caught up with (read, never changed).
        log: the collector's bound logger.
        keep: seconds an ended run's live stream stays whole.
    """

    def __init__(self, client: RedisClient, names: HasKeys, owned: Set[int], log: BoundLogger, *, keep: float) -> None:
        self._client = client
        self._names = names
        self._owned = owned
        self._log = log
        self._keep = keep
        #: Whether a run trimmed is then due to be archived (the collector archives).
        self.archive_due = False

    async def run(self, stop: asyncio.Event) -> None:
        """Trim every quarter of ``keep`` (at least every second, at most every 5 s) until ``stop`` is set."""
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), min(max(self._keep / 4, 1.0), 5.0))
            with contextlib.suppress(*UNREACHABLE):  # Redis away: trimmed next time (the shard loops log it)
                await self.trim(time.time())

    async def _keep_the_end(self, live: str) -> None:
        """Leave ``live`` its newest entry alone, under the same id, holding only the run's
        final status if it carried the last batch's points too (up to LIVE_POINTS a metric:
        tens of kilobytes).  The stream is made anew with that one entry: a trimmed stream
        keeps the room its entries took.  A fresh one is not small either (Redis 7 gives a
        new stream node 4 KB ahead), so it is dumped and restored in place, which keeps its
        ids and counts and sizes the node to its one entry (about 1 KB in all: this is most
        of an archived run's stub).  A client resuming from that id reads nothing new, one
        from an older id is told to resync, as after any trim."""
        newest = cast("list[tuple[bytes, dict[bytes, bytes]]]", await self._client.xrevrange(live, count=1))
        if not newest:
            return
        entry_id, fields = newest[0]
        events = decode_payload(fields[b"b"])
        final: list[Event] = [event for event in events if isinstance(event, StatusChanged)]
        kept = {**fields, b"b": encode_payload(final)} if final and len(final) < len(events) else fields
        info = cast("dict[bytes | str, Any]", await self._client.xinfo_stream(live))
        added = info.get("entries-added", info.get(b"entries-added"))  # Redis 7
        async with self._client.pipeline(transaction=True) as pipe:
            _ = pipe.delete(live)
            _ = pipe.xadd(live, kept, id=entry_id)  # type: ignore[arg-type]
            if added is not None:  # what was added before it, as subscribers from the start tell a trim
                _ = pipe.execute_command("XSETID", live, entry_id, "ENTRIESADDED", int(added), "MAXDELETEDID", entry_id)
            _ = pipe.eval(_SHRINK, 1, live)
            await pipe.execute()

    async def trim(self, now: float) -> int:
        """Trim the streams of the owned shards' runs that ended ``keep`` before ``now``; how many."""
        keys = self._names.keys
        index, trimmed, offset = keys.ended_runs(), 0, 0
        while True:
            page = cast(
                "list[tuple[bytes, float]]",
                await self._client.zrangebyscore(
                    index, "-inf", now - self._keep, start=offset, num=_PAGE, withscores=True
                ),
            )
            mine = [(raw.decode(), end) for raw, end in page if keys.shard_of(raw.decode()) in self._owned]
            for run_id, end in mine:
                await self._keep_the_end(keys.live(run_id))
                if self.archive_due:  # next, the archive (runstream.archive.due)
                    await self._client.zadd(keys.archive_due(), {run_id: end})
                await self._client.zrem(index, run_id)
            trimmed += len(mine)
            offset += len(page) - len(mine)  # the runs left in the index are other collectors'
            if len(page) < _PAGE:
                break
        if trimmed:
            self._log.debug("live_streams_trimmed", runs=trimmed)
        return trimmed
