"""Applying what a collector read: decode, fold, one ``apply.lua`` per batch, dead letters, XACK.

:class:`Applier` takes the entries a shard's reader got, in order.  Each entry is
decoded and folded into a :class:`~.aggregate.Plan`; the plans' index follow-ups
(idempotent SADD / ZADD on workspace indexes) run first, then one EVALSHA of
``apply.lua`` per batch on its run's slot, whose seq check makes a batch delivered
twice apply once, and a producer's batches apply in seq order: a batch ahead of a gap
in its producer's seqs is not applied, nor acked, but handed back (:class:`Held`) for
:mod:`.gaps` to hold until the gap fills.  A seq more than :data:`MAX_AHEAD` past the
producer's last is dead-lettered.  Entries that do not decode or fold go to the
dead-letter stream with the reason.  Only then are they acked: those applied (or applied
before), and those whose dead letter was written.  On a Redis Cluster the scripts run in
rounds that keep each run's batches in order (see :meth:`Applier._run_scripts`).

A Redis that is full (or out of reach) is an outage, not a bad batch (:mod:`.outage`):
the scripts it refused wrote nothing, nothing is dead-lettered or acked for them, and the
error goes up to the shard loop, which applies the shard's pending entries again, in
order, once Redis has room.  On one Redis the follow-ups and scripts of a call are one
MULTI, so that Redis takes all of them or none: in a plain pipeline, memory freed by
another client between two scripts could let a run's later batch in after its earlier
one was refused, and the seq check would then skip the earlier one for good.

Dead letters are bounded in count and size (:mod:`.deadletters`).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, Final, NamedTuple, Protocol, cast

from redis.exceptions import NoScriptError, ResponseError
from redis.typing import EncodableT, FieldT
from structlog.typing import FilteringBoundLogger as BoundLogger

from runstream.codec import Batch, decode_entry
from runstream.collector.aggregate import Plan, plan
from runstream.collector.deadletters import DEADLETTER_MAXLEN, REASON_CHARS, letter
from runstream.collector.outage import UNREACHABLE, WritesRefusedError, raise_first_outage, raise_if_outage
from runstream.connection import RedisClient, is_cluster
from runstream.errors import DecodeError
from runstream.keys import INGEST_GROUP, Keys

__all__ = [
    "APPLY_LUA",
    "MAX_AHEAD",
    "UNREACHABLE",
    "Applier",
    "Counts",
    "Entry",
    "Held",
    "Outcome",
    "Source",
]

APPLY_LUA: Final = resources.files("runstream.collector").joinpath("apply.lua").read_text()
#: Seqs past a producer's last applied one that a batch may be (as ``apply.lua``'s AHEAD):
#: further on, it is dead-lettered, never waited for nor applied.  A gap comes from a send
#: that partly failed (at most 256 batches in flight per send) or from batches Redis lost
#: (a restart from an older snapshot: at a few hundred batches a second, a million is most
#: of an hour of one producer's batches), so no real producer is that far ahead; a forged
#: seq (2**63-1) is, and applying it would make every later real batch a "duplicate".
MAX_AHEAD: Final = 1_000_000

# What apply.lua answers, by its first value.
_APPLIED: Final = 1
_AHEAD_OF_GAP: Final = 2
_IMPLAUSIBLE: Final = 3
#: Applied to a run that has ended: its kept search summary may be out of date.
_APPLIED_TO_ENDED: Final = 5
_ARCHIVED: Final = 4

#: One stream entry as read: (id, fields); fields None for one trimmed while pending.
Entry = tuple[bytes, dict[bytes, bytes] | None]
#: An entry to dead-letter: its id, its fields and the reason.
_Dead = tuple[bytes, dict[bytes, bytes], str]
#: A producer of a run: (run id, producer id), whose seqs apply in order.
Source = tuple[str, str]


class Held(NamedTuple):
    """A batch ahead of a gap in its producer's seqs: not applied, not acked (pending still).

    Attributes:
        entry_id: its stream entry.
        run_id: its run.
        producer: its producer.
        seq: its seq.
        last: the producer's last seq applied to the run when it was tried.
    """

    entry_id: bytes
    run_id: str
    producer: str
    seq: int
    last: int


@dataclass(slots=True)
class Outcome:
    """What came of :meth:`Applier.process`: the batches held, and what was applied.

    Attributes:
        held: batches ahead of a gap, in the order given (left pending).
        applied: per producer of a run, the highest seq applied by this call.
        archived: entries refused as their run's record is archived, by run (left
            pending unless the applier could restore the run and apply them).
        ended: runs that had ended when a batch of theirs was applied.
    """

    held: list[Held] = field(default_factory=list)
    applied: dict[Source, int] = field(default_factory=dict)
    archived: dict[str, list[bytes]] = field(default_factory=dict)
    ended: set[str] = field(default_factory=set)


class Counts(Protocol):
    """The counters an :class:`Applier` adds to (the collector's stats)."""

    applied: int
    deduped: int
    dead_lettered: int
    points: int


class Applier:
    """Applies a shard's entries to run records and acks them; counts into ``stats``.

    Args:
        client: the collector's client (one that never resends a command on its own).
        keys: the workspace's key names.
        stats: the collector's counters (applied, deduped, points, dead_lettered are added to).
        log: the collector's bound logger.
    """

    def __init__(self, client: RedisClient, keys: Keys, stats: Counts, log: BoundLogger) -> None:
        self.client = client
        self.keys = keys
        self.stats = stats
        self._log = log
        self._apply = client.register_script(APPLY_LUA)
        #: Puts an archived run's record back into Redis (the collector's archiver), so
        #: that a batch arriving late for it is applied; None: such batches stay pending.
        self.restore: Callable[[str], Awaitable[bool]] | None = None

    async def apply_one(self, p: Plan) -> None:
        """Apply one plan at once (a status the collector decided on itself).

        Raises:
            WritesRefusedError: Redis is full (or cannot persist): nothing was written.
        """
        try:
            await self._apply(keys=p.keys, args=p.args)
        except ResponseError as exc:
            raise_if_outage(exc)
            raise

    async def process(self, stream: str, entries: list[Entry], over: Mapping[bytes, int] | None = None) -> Outcome:
        """Apply entries in order, then follow-ups and dead letters, then XACK those done.

        Args:
            stream: the shard's stream.
            entries: what was read (or read again), in the order to apply.
            over: entries (by id) to apply over the gap after that seq of their producer,
                if it is still the last applied (:mod:`.gaps` gave up waiting for the
                seqs between, whose letter it wrote): ``apply.lua`` counts them lost.

        Returns:
            The batches held (ahead of a gap: neither applied nor acked) and the seqs applied.

        Raises:
            WritesRefusedError: Redis refused a write (full): what it refused is neither
                dead-lettered nor acked, and is applied when the shard's pending entries are
                processed again.
            redis.exceptions.RedisError: Redis is out of reach (one of ``UNREACHABLE``), or a
                dead letter could not be written for another reason.
        """
        plans, dead, done = self._plan(stream, entries, over or {})
        results = await self._run_scripts([p for _, _, p in plans], [c for _, _, p in plans for c in p.after])
        refused = next((r for r in results if isinstance(r, WritesRefusedError)), None)
        fields = dict(entries)
        outcome = self._sort(plans, results, fields, dead, done)
        failed = await self._dead_letter(stream, dead, done)
        if done:
            await self.client.xack(stream, INGEST_GROUP, *done)
        if outcome.ended:  # a search makes their summaries again (a late batch may change one)
            await self.client.hdel(self.keys.summaries(), *sorted(outcome.ended))
        if refused is not None:
            raise refused
        if failed is not None:
            raise_if_outage(failed)
            raise failed
        if outcome.archived:
            await self._apply_to_archived(stream, outcome.archived, fields, over or {}, outcome)
        return outcome

    def _sort(
        self,
        plans: list[tuple[bytes, Batch, Plan]],
        results: list[Any],
        fields: dict[bytes, dict[bytes, bytes] | None],
        dead: list[_Dead],
        done: list[bytes],
    ) -> Outcome:
        """What each script's reply makes of its entry: done, held, refused for an archived run,
        or dead (added to ``done`` and ``dead``)."""
        outcome = Outcome()
        for (entry_id, batch, p), result in zip(plans, results, strict=True):
            if isinstance(result, WritesRefusedError):
                continue  # not applied (nor any after it): pending still, applied when sent again
            if isinstance(result, ResponseError):
                dead.append((entry_id, fields[entry_id] or {}, f"apply failed: {result}"))
                continue
            code, last = (int(result[0]), int(result[1])) if isinstance(result, list) else (int(result), 0)
            if code == _AHEAD_OF_GAP:
                outcome.held.append(Held(entry_id, batch.run_id, batch.producer, batch.seq, last))
            elif code == _ARCHIVED:
                outcome.archived.setdefault(batch.run_id, []).append(entry_id)
            elif code == _IMPLAUSIBLE:
                dead.append((entry_id, fields[entry_id] or {}, _implausible(batch, last)))
            else:
                done.append(entry_id)
                self._count(outcome, batch, p, applied=code in (_APPLIED, _APPLIED_TO_ENDED))
                if code == _APPLIED_TO_ENDED:
                    outcome.ended.add(batch.run_id)
        return outcome

    async def _apply_to_archived(
        self,
        stream: str,
        archived: dict[str, list[bytes]],
        fields: dict[bytes, dict[bytes, bytes] | None],
        over: Mapping[bytes, int],
        outcome: Outcome,
    ) -> None:
        """Restore the runs whose record is archived and apply their entries (once: an entry
        refused again stays pending, as one refused without a restorer does)."""
        if self.restore is None:
            self._log.warning("archived_run_batches_pending", runs=sorted(archived), reason="no archiver here")
            return
        for run_id in archived:
            await self.restore(run_id)
        again = [(entry_id, fields[entry_id]) for ids in archived.values() for entry_id in ids]
        restore, self.restore = self.restore, None
        try:
            more = await self.process(stream, again, over)
        finally:
            self.restore = restore
        outcome.held.extend(more.held)
        outcome.archived = more.archived
        for source, seq in more.applied.items():
            outcome.applied[source] = max(seq, outcome.applied.get(source, 0))

    def _count(self, outcome: Outcome, batch: Batch, p: Plan, *, applied: bool) -> None:
        """Count a batch done: applied (and its seq in ``outcome``), or applied before."""
        if not applied:
            self.stats.deduped += 1
            return
        self.stats.applied += 1
        self.stats.points += p.points
        source = (batch.run_id, batch.producer)
        outcome.applied[source] = max(batch.seq, outcome.applied.get(source, 0))

    async def _dead_letter(self, stream: str, dead: list[_Dead], done: list[bytes]) -> BaseException | None:
        """Write the dead letters; add to ``done`` the entries whose letter was written (and only
        those: one whose letter Redis refused stays pending, to be tried again); the first error."""
        if not dead:
            return None
        pipe = self.client.pipeline(transaction=False)
        for entry_id, fields, reason in dead:
            _ = pipe.xadd(
                self.keys.deadletter(),
                cast("dict[FieldT, EncodableT]", letter(stream, entry_id, reason, fields)),
                maxlen=DEADLETTER_MAXLEN,
                approximate=True,
            )
        failed: BaseException | None = None
        for (entry_id, _, reason), reply in zip(dead, await pipe.execute(raise_on_error=False), strict=True):
            if isinstance(reply, BaseException):
                failed = failed or reply
                continue
            self._log.warning(
                "entry_dead_lettered", stream=stream, entry=entry_id.decode(), reason=reason[:REASON_CHARS]
            )
            self.stats.dead_lettered += 1
            done.append(entry_id)
        return failed

    def _plan(
        self, stream: str, entries: list[Entry], over: Mapping[bytes, int]
    ) -> tuple[list[tuple[bytes, Batch, Plan]], list[_Dead], list[bytes]]:
        """Decode and fold each entry: plans to apply, entries to dead-letter, entries already done.

        A plan of an entry in ``over`` carries "seq/last" for its seq (see :meth:`process`)."""
        plans: list[tuple[bytes, Batch, Plan]] = []
        dead: list[_Dead] = []
        done: list[bytes] = []
        now = time.time()
        for entry_id, fields in entries:
            if fields is None:  # trimmed while pending: nothing left to apply
                done.append(entry_id)
                continue
            try:
                batch = decode_entry(fields)
                p = plan(batch, self.keys, now=now)
                if entry_id in over:
                    p.args[1] = f"{batch.seq}/{over[entry_id]}"
                plans.append((entry_id, batch, p))
            except DecodeError as exc:
                dead.append((entry_id, fields, exc.reason))
            except Exception as exc:  # noqa: BLE001  # one bad entry must not stop the shard: park it, loudly
                self._log.exception("plan_failed", stream=stream, entry=entry_id.decode())
                dead.append((entry_id, fields, f"could not be folded: {type(exc).__name__}: {exc}"))
        return plans, dead, done

    async def _run_scripts(self, plans: list[Plan], follow_ups: list[tuple[Any, ...]]) -> list[Any]:
        """EVALSHA each plan, after the index follow-ups; the scripts' results, in order.

        The follow-ups (SADD, ZADD, ZREM on workspace indexes, idempotent) go first, so a
        reader who sees the record already finds the run in the indexes; a replay that
        re-adds an ended run to the live-run index is undone by the sweeper.

        On one Redis all of it is one pipeline, run in order.  A cluster pipeline sends
        each node its share at once and resends redirected commands one by one, so two
        batches of a run in one pipeline could land out of order while the run's slot
        migrates (the first told TRYAGAIN, the second applied, the first then skipped as
        already seen).  So there the follow-ups go in a round of their own, and the
        scripts in rounds holding at most one batch per run; an error that a retry would
        mend stops everything before the next round, and the shard is taken over again,
        which reapplies the unacked batches in order.
        """
        if not plans:
            return []
        if not is_cluster(self.client):
            return await self._send_whole(follow_ups, plans)
        if follow_ups:
            await self._send(follow_ups, [])
        results: list[Any] = [None] * len(plans)
        for members in _rounds(plans):
            for index, reply in zip(members, await self._send([], [plans[i] for i in members]), strict=True):
                results[index] = reply
        return results

    async def _send_whole(self, commands: list[tuple[Any, ...]], plans: list[Plan]) -> list[Any]:
        """On one Redis: ``commands`` and the plans in one MULTI or, if a full Redis refused
        that, one plan at a time, in order, up to the first it refuses.

        Redis holds a MULTI's commands (the plans' arguments, up to megabytes) until EXEC,
        so one may need more room than Redis has while each of its plans alone would fit:
        applied one by one, those that fit are, and the entries they came from are trimmed,
        which makes room for more.

        Returns:
            The plans' replies; one sent one at a time that Redis refused, and every one
            after it, has the :class:`WritesRefusedError` for its reply (not applied).

        Raises:
            WritesRefusedError: Redis refused the one plan, or the commands.
        """
        try:
            return await self._send(commands, plans)
        except WritesRefusedError:
            if len(plans) < 2:
                raise
        if commands:
            await self._send(commands, [])
        replies: list[Any] = []
        for index, p in enumerate(plans):
            try:
                replies += await self._send([], [p])
            except WritesRefusedError as exc:
                return replies + [exc] * (len(plans) - index)
        return replies

    async def _send(self, commands: list[tuple[Any, ...]], plans: list[Plan]) -> list[Any]:
        """``commands`` then an EVALSHA per plan, in one pipeline; the plans' replies.

        Plans told NOSCRIPT (a Redis restarted empty, a replica promoted) are sent again
        once the script is loaded (the applied seqs skip a batch applied twice).  On one
        Redis it is a MULTI: a full Redis refuses all of it or none (see the module's doc).

        Raises:
            WritesRefusedError: Redis refused a write (full); on one Redis nothing was written.
            redis.exceptions.RedisError: one of ``UNREACHABLE``.
        """
        results: list[Any] = []
        for attempt in range(2):
            pipe = self.client.pipeline(transaction=not is_cluster(self.client))
            for command in commands:
                _ = pipe.execute_command(*command)
            for p in plans:
                # (redis-py blocks a cluster pipeline's evalsha method, not the command, which it routes by key)
                _ = pipe.execute_command("EVALSHA", self._apply.sha, len(p.keys), *p.keys, *p.args)
            try:
                replies = (await pipe.execute(raise_on_error=False))[len(commands) :]
            except ResponseError as exc:  # a MULTI refused whole (EXECABORT: OOM while queuing)
                raise_if_outage(exc)
                raise
            raise_first_outage(replies)
            if attempt == 1:
                again = iter(replies)
                return [next(again) if isinstance(r, NoScriptError) else r for r in results]
            results = replies
            missing = [p for p, r in zip(plans, results, strict=True) if isinstance(r, NoScriptError)]
            if not missing:
                break
            await self.client.script_load(APPLY_LUA)
            commands, plans = [], missing
        return results


def _implausible(batch: Batch, last: int) -> str:
    """Why a batch whose seq is too far past its producer's last applied one is dead-lettered."""
    return (
        f"seq {batch.seq} of producer {batch.producer} is {batch.seq - last} past the last applied ({last}):"
        f" more than {MAX_AHEAD}, so no gap a failed send leaves but a forged or corrupt seq; not applied"
    )


def _rounds(plans: list[Plan]) -> list[list[int]]:
    """The plans' indexes in rounds: the n-th round holds each run's n-th plan, in order."""
    rounds: list[list[int]] = []
    depth: dict[bytes | str, int] = {}
    for index, p in enumerate(plans):
        run = p.keys[0]  # the run's applied-seqs hash: one key per run
        level = depth.get(run, 0)
        depth[run] = level + 1
        if level == len(rounds):
            rounds.append([])
        rounds[level].append(index)
    return rounds
