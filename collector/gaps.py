"""Gaps in a producer's seqs: batches that wait for the ones before them, and gaps given up.

DESIGN §3: a producer's seqs for a run are contiguous, and the collector applies seq N
only after N-1.  A pipeline (or MULTI) of XADDs is not all-or-nothing: one XADD that
Redis refuses leaves the later ones in the stream, and the producer sends the whole
send again.  Were "seq <= last applied" the only check, the later batches would be
applied first and the resent one skipped as seen: lost without a word.

So ``apply.lua`` writes nothing for a batch ahead of a gap, and :class:`Gaps` holds it:
it stays pending in the consumer group (unacked), and is known here by its entry id,
run, producer and seq (not its fields, up to 64 MB each: those are read again, XRANGE,
when its turn comes).  When a batch of that producer is applied, the held ones that now
follow on are applied at once, in seq order, and copies of seqs applied meanwhile (the
resent send) are acked as seen.  Batches of other runs, and of other producers, are
never held up behind a held one.

A gap that never fills is given up, never skipped in silence.  Its letter goes to the
dead-letter stream first (the stream, the entry that waited, the run, the producer, the
seqs missing, the reason); then the batch is applied over the gap, and ``apply.lua``
counts the missing seqs in the run's ``lost_batches`` (only if the gap is still the one
the letter names).  A held batch is given up on once

- the shard has been read up to entries added ``timeout`` seconds after it (by Redis's
  clock, in the entry ids): the producer had that long to resend and did not.  This holds
  under a backlog, when the shard is never caught up, and never gives up a gap whose fill
  is further on in a backlog not read yet; or
- the shard is caught up (its last read found no backlog) and the batch has waited here
  ``timeout`` seconds (an idle stream, whose ids do not move on).

Kills and take-overs: nothing held lives only here.  A collector killed while batches
wait leaves them pending; the next owner of the shard claims them (XAUTOCLAIM), reads
them as its own pending entries, and they wait there anew.  A gap's letter is written
before the batch is applied over it, so a kill in between writes the letter again
later rather than losing it (a gap may then have two letters; ``lost_batches``, written
with the apply, counts it once).

Memory: a shard holds at most :data:`MAX_HELD` batches; past that, the oldest gaps are
given up at once (their letters say so), so a flood of batches behind a gap that never
fills (a forger who knows a producer id) cannot grow a collector without bound.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Final, Protocol, cast

from redis.typing import EncodableT, FieldT
from structlog.typing import FilteringBoundLogger as BoundLogger

from runstream.collector.applier import Applier, Entry, Held, Outcome, Source
from runstream.collector.deadletters import DEADLETTER_MAXLEN, REASON_CHARS
from runstream.connection import RedisClient

__all__ = ["MAX_HELD", "Counts", "Gaps"]

#: Batches a shard holds at most, ahead of gaps (a few hundred bytes each here).
MAX_HELD: Final = 100_000
#: Seconds between two tries of a producer's first held batch against the record: the gap may
#: have been filled by another collector (one whose lease lapsed while it applied the batch
#: before, or one of the same reader name), which this one would otherwise not hear of.
RECHECK: Final = 0.5


class Counts(Protocol):
    """The counters :class:`Gaps` sets and adds to (the collector's stats)."""

    waiting: int
    lost_batches: int
    dead_lettered: int


@dataclass(slots=True)
class _Waiter:
    """A held batch, and since when (here, and by its entry id) it waits."""

    held: Held
    since: float  # time.monotonic() when first held by this collector
    added_ms: int  # the entry id's time: when Redis took it
    tried: float = 0.0  # time.monotonic() when last tried again against the record (see Gaps.expire)

    @property
    def order(self) -> tuple[int, bytes]:
        return self.held.seq, self.held.entry_id


class Gaps:
    """Holds a collector's batches that are ahead of a gap, applies them when it fills, gives up on it in time.

    Args:
        client: the collector's client.
        applier: the collector's applier (applies, acks, dead-letters; its ``keys`` follow the shards).
        stats: the collector's counters (``waiting`` is set, ``lost_batches`` and ``dead_lettered`` added to).
        log: the collector's bound logger.
        timeout: seconds a gap may stay unfilled (see the module's doc).

    State is per shard stream, touched only by that shard's loop (one task), so no lock.
    """

    def __init__(self, client: RedisClient, applier: Applier, stats: Counts, log: BoundLogger, *, timeout: float):
        self._client = client
        self._applier = applier
        self._stats = stats
        self._log = log
        self._timeout = timeout
        #: stream -> producer of a run -> entry id -> the held batch.
        self._held: dict[str, dict[Source, dict[bytes, _Waiter]]] = {}
        #: stream -> the time (ms, of its id) of the newest entry read from it.
        self._read_ms: dict[str, int] = {}

    async def process(self, stream: str, entries: list[Entry]) -> None:
        """Apply what was read (see :meth:`Applier.process`): hold what is ahead of a gap, and
        apply at once the held batches that follow on from what was applied.

        Raises:
            As :meth:`Applier.process`; what was not applied stays pending, and a take-over
            (or the replay after an outage) reads it, and holds it, again.
        """
        if entries:
            newest = max(_ms(entry_id) for entry_id, _ in entries)
            self._read_ms[stream] = max(newest, self._read_ms.get(stream, 0))
        outcome = await self._applier.process(stream, entries)
        self._hold(stream, outcome.held, [])
        await self._follow_on(stream, outcome.applied)

    async def expire(self, stream: str, *, caught_up: bool) -> None:
        """Give up the gaps of ``stream`` that waited long enough (see the module's doc), in seq order.

        ``caught_up``: the shard's last read found no backlog.
        """
        room = self._held.get(stream)
        if not room:
            return
        now, read_ms, bound_ms = time.monotonic(), self._read_ms.get(stream, 0), self._timeout * 1000

        def due(waiter: _Waiter) -> bool:
            return read_ms - waiter.added_ms >= bound_ms or (caught_up and now - waiter.since >= self._timeout)

        for source in list(room):
            held = room.get(source)
            first = min(held.values(), key=lambda w: w.order) if held else None
            if first is not None and now - first.tried >= RECHECK:
                first.tried = now
                await self._follow_on(stream, (await self._retry(stream, [first])).applied)
            while waiters := room.get(source):
                first = min(waiters.values(), key=lambda w: w.order)
                crowded = sum(map(len, room.values())) > MAX_HELD
                if not (due(first) or crowded):
                    break
                await self._give_up(stream, first, now, crowded=crowded and not due(first))

    def forget(self, stream: str) -> None:
        """Drop what is held of ``stream`` (the shard is not ours, or is being taken over:
        whoever owns it next reads its pending entries, and holds them, again)."""
        self._held.pop(stream, None)
        self._read_ms.pop(stream, None)
        self._count()

    # ------------------------------------------------------------------ internals

    def _hold(self, stream: str, held: list[Held], tried: list[_Waiter]) -> None:
        """Note the batches held by a call; those of ``tried`` (held before) not among them are done."""
        room = self._held.setdefault(stream, {})
        still = {h.entry_id for h in held}
        for waiter in tried:
            if waiter.held.entry_id not in still:
                waiters = room.get((waiter.held.run_id, waiter.held.producer), {})
                waiters.pop(waiter.held.entry_id, None)
                if not waiters:
                    room.pop((waiter.held.run_id, waiter.held.producer), None)
        now, new = time.monotonic(), 0
        for h in held:
            waiters = room.setdefault((h.run_id, h.producer), {})
            known = waiters.get(h.entry_id)
            if known is None:
                waiters[h.entry_id] = _Waiter(h, now, _ms(h.entry_id), now)
                new += 1
            else:
                known.held = h  # (its wait goes on from when it began)
        if new:
            first = min(held, key=lambda h: (h.seq, h.entry_id))
            self._log.info(
                "batches_held",
                stream=stream,
                held=new,
                run_id=first.run_id,
                producer=first.producer,
                seq=first.seq,
                last_applied=first.last,
            )
        self._count()

    async def _follow_on(self, stream: str, applied: dict[Source, int]) -> None:
        """Apply the held batches that follow on from the seqs just applied, and so on."""
        while applied:
            room = self._held.get(stream, {})
            ready = [w for source, seq in applied.items() for w in _following(room.get(source, {}), seq)]
            if not ready:
                return
            applied = (await self._retry(stream, ready)).applied

    async def _retry(self, stream: str, waiters: list[_Waiter], over: dict[bytes, int] | None = None) -> Outcome:
        """Read the held batches again and apply them, in the order given."""
        pipe = self._client.pipeline(transaction=False)
        for waiter in waiters:
            _ = pipe.xrange(stream, min=waiter.held.entry_id, max=waiter.held.entry_id, count=1)
        replies = cast("list[list[tuple[bytes, dict[bytes, bytes]]]]", await pipe.execute())
        # (an entry gone from the stream, none left to apply, is acked as done)
        entries: list[Entry] = [
            (w.held.entry_id, reply[0][1] if reply else None) for w, reply in zip(waiters, replies, strict=True)
        ]
        outcome = await self._applier.process(stream, entries, over)
        self._hold(stream, outcome.held, waiters)
        return outcome

    async def _give_up(self, stream: str, waiter: _Waiter, now: float, *, crowded: bool) -> None:
        """Dead-letter the gap before a held batch, then apply the batch over it (``crowded``:
        before its time, as the shard holds more than :data:`MAX_HELD`)."""
        held = waiter.held
        raw = await self._client.hget(self._applier.keys.applied(held.run_id), held.producer)
        last = int(cast("bytes | None", raw) or 0)
        if held.seq > last + 1:
            await self._letter(stream, held, last, now - waiter.since, crowded=crowded)
        outcome = await self._retry(stream, [waiter], {held.entry_id: last})
        if outcome.applied.get((held.run_id, held.producer), 0) >= held.seq and held.seq > last + 1:
            self._stats.lost_batches += held.seq - last - 1
        await self._follow_on(stream, outcome.applied)

    async def _letter(self, stream: str, held: Held, last: int, waited: float, *, crowded: bool) -> None:
        """The dead letter of a gap: which producer of which run, the seqs missing, the batch after it."""
        missing = f"{last + 1}" if held.seq == last + 2 else f"{last + 1}-{held.seq - 1}"
        why = f"more than {MAX_HELD} batches held on the shard" if crowded else f"gap timeout {self._timeout:g} s"
        reason = (
            f"gap in the seqs of producer {held.producer} of run {held.run_id}: seq {missing} never arrived"
            f" (waited {waited:.1f} s, {why}); seq {held.seq} applied after the gap,"
            f" {held.seq - last - 1} batch(es) counted in the run's lost_batches"
        )
        letter: dict[str, Any] = {
            "stream": stream,
            "entry": held.entry_id,
            "reason": reason[:REASON_CHARS],
            "run": held.run_id,
            "producer": held.producer,
            "missing": missing,
        }
        await self._client.xadd(
            self._applier.keys.deadletter(),
            cast("dict[FieldT, EncodableT]", letter),
            maxlen=DEADLETTER_MAXLEN,
            approximate=True,
        )
        self._stats.dead_lettered += 1
        self._log.warning(
            "gap_dead_lettered",
            stream=stream,
            entry=held.entry_id.decode(),
            run_id=held.run_id,
            producer=held.producer,
            missing=missing,
            waited=round(waited, 3),
        )

    def _count(self) -> None:
        self._stats.waiting = sum(len(w) for room in self._held.values() for w in room.values())


def _following(waiters: dict[bytes, _Waiter], applied: int) -> list[_Waiter]:
    """The held batches, in seq order, that follow on from seq ``applied``: copies of seqs up
    to it (acked as seen when tried), then the run of seqs after it with no gap."""
    ready: list[_Waiter] = []
    after = applied + 1
    for waiter in sorted(waiters.values(), key=lambda w: w.order):
        if waiter.held.seq > after:
            break
        ready.append(waiter)
        after = max(after, waiter.held.seq + 1)
    return ready


def _ms(entry_id: bytes) -> int:
    """The time part of a stream entry id (milliseconds, by the clock of the Redis that took it)."""
    return int(entry_id.partition(b"-")[0])
