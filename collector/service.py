"""The collector service: reads the ingest shards and applies batches to run records.

One task per shard.  A task that holds its shard's lease (:mod:`.leases`) reads the
shard's new entries through a script that checks the lease first (waiting for them
with an XREAD, BLOCK shorter than the socket timeout, which hands nothing out), and
has them applied (:mod:`.applier`: decode, fold, ``apply.lua`` per batch, dead
letters, then XACK), a batch ahead of a gap in its producer's seqs held, pending, until
the gap fills or is given up (:mod:`.gaps`).  On taking a shard (anew, or back after it
lapsed unseen), the task first claims (XAUTOCLAIM) and applies whatever was read but not
acked.  Acked entries are trimmed by MINID below the oldest pending one.  Its settings
and counters live in :mod:`.settings`.

Beside the shard tasks: a sweeper (:mod:`.sweeper`) marks runs NotResponding when
their heartbeats stop, then Failed ("heartbeat lost"); ended runs' live streams are
trimmed a while after the end (:mod:`.ended`); and a reporter publishes the
counters.  ``stop`` ends every loop
after the batch in hand; leases are then released so another collector takes over
at once.

Collectors share the shards fairly: each publishes its counters (owned shards
included) every ``lease_ttl / 3``, and one holding more than its share (shards
divided by the collectors that published within two lease TTLs) while another
holds fewer yields a shard, between two batches, for that one to take
(:mod:`.reporter`).

A full Redis, or one out of reach, is an outage (:mod:`.outage`), which no loop dies
of.  A shard loop that meets a full Redis keeps its lease (renewing needs no memory),
waits (a jittered backoff, at most a third of the lease), and applies the shard's
pending entries again, in order, before it reads anything new; the outage is logged
once (``redis_full``), then at a bounded rate, then ``redis_recovered``, and shown in
the published report.  The collector refuses to start on a Redis that evicts keys
(any ``maxmemory-policy`` but ``noeviction``), and warns about one that persists nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import replace
from typing import cast

import structlog
from redis.exceptions import (
    ResponseError,
)
from structlog.typing import FilteringBoundLogger as BoundLogger

from runstream.collector.applier import UNREACHABLE, Applier, Entry
from runstream.collector.archiving import start_archiving
from runstream.collector.checks import check_redis
from runstream.collector.ended import EndedStreams
from runstream.collector.gaps import Gaps
from runstream.collector.leases import Leases
from runstream.collector.outage import REDIS_UNREACHABLE, Outage, WritesRefusedError, outage_cause
from runstream.collector.reporter import Reporter
from runstream.collector.settings import CollectorSettings, CollectorStats, collector_client
from runstream.collector.streams import Streams
from runstream.collector.sweeper import Sweeper
from runstream.connection import REDIS_CANNOT_PERSIST, REDIS_FULL, RedisClient
from runstream.keys import INGEST_GROUP, Keys
from runstream.shard_count import raise_shard_count

__all__ = ["Collector", "CollectorSettings", "CollectorStats", "collector_client"]

_log = structlog.get_logger("runstream.collector")


class Collector:
    """Reads the workspace's ingest shards it holds leases for, and applies them.

    ``client`` comes from :func:`collector_client` (a client that retries by itself can lose entries).
    """

    def __init__(self, settings: CollectorSettings, client: RedisClient) -> None:
        self.settings = settings
        self.keys = Keys(settings.workspace.workspace, settings.workspace.key_prefix, settings.workspace.shards)
        self.client = client
        self.stats = CollectorStats(reader=settings.reader)
        self._leases = Leases(client, settings.reader, int(settings.lease_ttl * 1000))
        self._caught_up: set[int] = set()  # owned shards whose last read found no backlog
        self._loops = 0  # shards 0.._loops-1 have a loop (see _grow)
        self._replay: set[int] = set()  # owned shards whose pending entries go first (after an outage)
        self._log = _log.bind(reader=settings.reader, workspace=self.keys.workspace)
        self._outage = Outage(self._log, cap=settings.lease_ttl / 3)
        self._streams = Streams(client)
        self._reporter = Reporter(
            client,
            self.keys,
            self.stats,
            self._outage,
            self._log,
            reader=settings.reader,
            lease_ttl=settings.lease_ttl,
            stats_interval=settings.stats_interval,
        )
        self._applier = Applier(client, self.keys, self.stats, self._log)
        self._gaps = Gaps(client, self._applier, self.stats, self._log, timeout=settings.gap_timeout)
        self._sweeper = Sweeper(
            client,
            self._applier,
            self._caught_up,
            self.stats,
            self._log,
            silent_after=settings.heartbeat_timeout,
            lost_after=settings.lost_after,
        )
        self._ended = EndedStreams(client, self._applier, self._caught_up, self._log, keep=settings.live_kept_after_end)
        self._archiving = start_archiving(settings, client, self._applier, self._ended, self._caught_up, self._log)

    async def run(self, stop: asyncio.Event) -> None:
        """Collect until ``stop`` is set; then finish the batch in hand and release the leases.

        Raises:
            ConfigError: Redis evicts keys when full (its ``maxmemory-policy`` is not ``noeviction``).
        """
        await check_redis(self.client, self.settings.workspace.redis_url, self._log)
        async with asyncio.TaskGroup() as tasks:
            await self._start(stop, tasks)
            self._log.info("collector_started", shards=self.keys.shards)
            tasks.create_task(self._sweeper.run(stop))
            tasks.create_task(self._ended.run(stop))
            if self._archiving is not None:
                tasks.create_task(self._archiving.run(stop))
            tasks.create_task(self._reporter.run(stop, lambda count: self._grow(count, stop, tasks)))
        self._log.info("collector_stopped", **self._reporter.counters())

    async def _start(self, stop: asyncio.Event, tasks: asyncio.TaskGroup) -> None:
        """Raise the recorded shard count to ours and start the shard loops; while Redis is
        full (and the shard count or a group must be written), wait for room rather than fail."""
        while not stop.is_set():
            try:
                await self._grow(await raise_shard_count(self.client, self.keys), stop, tasks)
            except (ResponseError, WritesRefusedError) as exc:
                if outage_cause(exc) not in (REDIS_FULL, REDIS_CANNOT_PERSIST):
                    raise
                await _wait(stop, self._outage.failed("start", exc))
                continue
            self._outage.recovered("start")
            return

    async def _grow(self, count: int, stop: asyncio.Event, tasks: asyncio.TaskGroup) -> None:
        """Read shards up to ``count``: a group and a loop for each one not read yet.

        Raises:
            WritesRefusedError: Redis is full and a group to read is not there yet.
        """
        for shard in range(self._loops, count):
            await self._streams.make_group(self.keys.ingest(shard))
        if count > self.keys.shards:
            self._log.warning("shards_grown", configured=self.keys.shards, recorded=count)
            self.keys = self._applier.keys = self._reporter.keys = replace(self.keys, shards=count)
        for shard in range(self._loops, count):
            tasks.create_task(self._shard_loop(shard, stop))
        self._loops = max(self._loops, count)

    # ------------------------------------------------------------------- shards

    async def _shard_loop(self, shard: int, stop: asyncio.Event) -> None:
        stream, lease = self.keys.ingest(shard), self.keys.ingest_lease(shard)
        log = self._log.bind(stream=stream)
        owned, renew_at, trim_at = False, 0.0, 0.0
        try:
            while not stop.is_set():
                try:
                    owned, renew_at, trim_at = await self._shard_turn(shard, (owned, renew_at, trim_at), stop, log)
                    self._outage.recovered(f"shard {shard}")
                except UNREACHABLE as exc:
                    owned, delay = self._met_outage(shard, owned, exc)
                    renew_at = 0.0  # the lease is looked at (renewed) before the next read
                    if owned:  # Redis full: what was applied and acked can go, which makes room
                        with contextlib.suppress(*UNREACHABLE, ResponseError):
                            await self._streams.trim(stream)
                    await _wait(stop, delay)
                except ResponseError as exc:
                    if not _node_changed(exc):
                        raise
                    # The stream's node changed roles or lost the group in a fail-over: read again,
                    # from a group made anew if need be (a replay is skipped by the seq check).
                    log.warning("stream_node_changed", error=str(exc))
                    with contextlib.suppress(*UNREACHABLE):
                        await self._streams.make_group(stream)
                    owned, renew_at = False, 0.0
                    self._set_owned(shard, False)
        finally:
            if owned:
                await self._release(lease, log)

    async def _release(self, lease: str, log: BoundLogger) -> None:
        """Give a shard's lease back as the loop ends; a Redis out of reach then (its node
        just failed over, say) only leaves the lease to lapse by itself within its TTL."""
        try:
            await self._leases.release(lease)
        except UNREACHABLE as exc:
            log.warning("shard_release_failed", error=f"{type(exc).__name__}: {exc}")
            return
        log.info("shard_released")

    def _met_outage(self, shard: int, owned: bool, exc: BaseException) -> tuple[bool, float]:
        """Note an outage that a shard's loop met: whether the shard still counts as ours, and
        the seconds to wait before the next turn (which looks at the lease first).

        Redis restarting, failing over or out of reach: the shard counts as not ours until
        its lease is looked at again (the client's own retries last well under a second);
        taking it then (_take_over) claims and applies, in order, what we had read but not
        acked.  Redis full: the lease stays ours (renewing it needs no memory), and what
        Redis refused, pending still, is applied again, in order, before anything new.
        """
        delay = self._outage.failed(f"shard {shard}", exc)
        if outage_cause(exc) == REDIS_UNREACHABLE:
            self._set_owned(shard, False)
            return False, self.settings.lease_ttl / 3
        if owned or shard in self.stats.shards:  # (held, and being taken over when Redis refused)
            self._replay.add(shard)
            return True, delay
        return False, delay

    async def _shard_turn(
        self, shard: int, state: tuple[bool, float, float], stop: asyncio.Event, log: BoundLogger
    ) -> tuple[bool, float, float]:
        """One turn of a shard's loop: the lease looked at when due, then read, apply, ack (and trim when due).

        ``state`` and the result: whether we own the shard, when to look at its lease, when to trim it.
        """
        (owned, renew_at, trim_at), stream, now = state, self.keys.ingest(shard), time.monotonic()
        if now >= renew_at:
            owned, renew_at = await self._check_lease(shard, owned, now, log)
        if not owned:
            if await _wait(stop, max(0.0, renew_at - time.monotonic()), self._reporter.look):
                renew_at = 0.0  # our share grew: look at the lease now, sat out or not
            return owned, renew_at, trim_at
        entries = await self._read_new(shard)
        if entries is None:  # the lease lapsed (a busy process): the new owner has the shard
            log.warning("shard_lost")
            self._set_owned(shard, False)
            return False, 0.0, trim_at
        (self._caught_up.add if len(entries) < self.settings.count else self._caught_up.discard)(shard)
        if entries:
            await self._gaps.process(stream, entries)
        await self._gaps.expire(stream, caught_up=shard in self._caught_up)
        if now >= trim_at:
            await self._streams.trim(stream)
            trim_at = now + self.settings.trim_interval
        return owned, renew_at, trim_at

    async def _check_lease(self, shard: int, owned: bool, now: float, log: BoundLogger) -> tuple[bool, float]:
        """Renew, take or yield the shard's lease: whether we own it now, and when to look again."""
        lease, period = self.keys.ingest_lease(shard), self.settings.lease_ttl / 3
        if owned and self._reporter.wanted and len(self.stats.shards) > self._reporter.share:
            self._set_owned(shard, False)  # before the await, so that sibling shards do not yield too
            await self._leases.release(lease)
            log.info("shard_yielded", share=self._reporter.share)
            return False, now + 2 * period  # sit out one look: a collector below its share takes it
        attempt = await self._leases.acquire(lease)
        held = attempt.held
        self._set_owned(shard, held)
        # Taken anew, or renewed but not ours a moment ago (a reader of our name before a restart
        # held it): claim what is pending first.  Anew also when we thought it ours: it lapsed unseen.
        # And when Redis refused to apply what we read (full): that goes first, in order.
        taken = held and (attempt.fresh or not owned)
        if taken or (held and shard in self._replay):
            if taken:
                log.info("shard_acquired")
            held = await self._take_over(shard)
            self._replay.discard(shard)
            self._set_owned(shard, held)
            now = time.monotonic()
        elif owned and not held:
            log.warning("shard_lost")
        # Another's lease is looked at again when it would lapse, if that is sooner than the
        # next look: a dead holder's shard is taken at once, within the lease TTL of its death.
        return held, now + (period if held else min(period, attempt.lapses_in + 0.005))

    def _set_owned(self, shard: int, owned: bool) -> None:
        shards = set(self.stats.shards)
        (shards.add if owned else shards.discard)(shard)
        self.stats.shards = sorted(shards)
        if not owned:
            self._caught_up.discard(shard)
            self._replay.discard(shard)
            self._gaps.forget(self.keys.ingest(shard))

    async def _read_new(self, shard: int) -> list[Entry] | None:
        """New entries of an owned shard, waiting up to ``block`` for some; None if the lease lapsed.

        Entries are only ever delivered to us by a script that checks the lease first
        (:meth:`Leases.read_new`); the wait in between is an XREAD, which delivers nothing.
        """
        stream, lease = self.keys.ingest(shard), self.keys.ingest_lease(shard)
        got = await self._leases.read_new(lease, stream, INGEST_GROUP, self.settings.count)
        if not isinstance(got, str):
            return got
        # Bounded by the socket timeout and by a third of the lease, so the lease is renewed in time.
        block = max(1, int(min(self.settings.block, self.settings.lease_ttl / 3) * 1000))
        await self.client.xread({stream: got}, count=1, block=block)
        again = await self._leases.read_new(lease, stream, INGEST_GROUP, self.settings.count)
        return [] if isinstance(again, str) else again

    async def _read(self, stream: str, start: bytes) -> list[Entry]:
        """Entries delivered to us before, after ``start`` (our own pending ones, after a take-over)."""
        reply = await self.client.xreadgroup(
            INGEST_GROUP, self.settings.reader, {stream: start}, count=self.settings.count
        )
        if not reply:
            return []
        # RESP2 (pinned in connect): [[stream, [(id, fields or None), ...]]]
        return cast("list[list[list[Entry]]]", reply)[0][1]

    async def _take_over(self, shard: int) -> bool:
        """Claim every entry another reader read but did not ack, then apply ours in order;
        whether the shard is still ours (its lease is renewed between two rounds of a long
        backlog, and should it have lapsed and been taken anew meanwhile, all is claimed again).

        What was held (ahead of a gap) is forgotten and read again with the rest, so it is
        held again; the read moves on past it, as held entries stay pending."""
        stream, lease = self.keys.ingest(shard), self.keys.ingest_lease(shard)
        period = self.settings.lease_ttl / 3
        claim = True
        while claim:
            self._gaps.forget(stream)
            await self._claim_all(stream)
            renewed, claim, start = time.monotonic(), False, b"0"
            while entries := await self._read(stream, start):
                if time.monotonic() - renewed >= period:
                    attempt = await self._leases.acquire(lease)
                    if not attempt.held:
                        return False  # taken meanwhile: the new owner claims what is left
                    renewed, claim = time.monotonic(), attempt.fresh
                    if claim:
                        break
                await self._gaps.process(stream, entries)
                if len(entries) < self.settings.count:
                    break
                start = entries[-1][0]
        return True

    async def _claim_all(self, stream: str) -> None:
        """Make every entry pending in the group ours (XAUTOCLAIM from the start, idle or not)."""
        cursor: bytes | str = "0-0"
        while True:
            # (redis-py drops the cursor from a JUSTID reply, so the entries come along)
            reply = await self.client.xautoclaim(
                stream, INGEST_GROUP, self.settings.reader, min_idle_time=0, start_id=cursor, count=1000
            )
            cursor = cast("bytes", reply[0])
            if cursor in (b"0-0", "0-0"):
                return

    # ---------------------------------------------------------------- counters

    async def report(self, *, log: bool = True) -> CollectorStats:
        """Refresh the lag per owned shard, publish the counters to Redis (and the log)."""
        await self._reporter.report(log=log)
        return self.stats


def _node_changed(exc: ResponseError) -> bool:
    """Whether ``exc`` says a stream's node failed over under a blocked read (UNBLOCKED) or
    came back without the consumer group (NOGROUP), rather than that a command was wrong."""
    return str(exc).startswith(("UNBLOCKED", "NOGROUP"))


async def _wait(stop: asyncio.Event, seconds: float, look: asyncio.Event | None = None) -> bool:
    """Sleep ``seconds``, or less if ``stop`` (or ``look``) is set meanwhile; whether ``look`` was."""
    events = [stop] if look is None else [stop, look]
    waiters = [asyncio.ensure_future(event.wait()) for event in events]
    try:
        await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
    return look is not None and look.is_set()
