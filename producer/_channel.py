"""A channel: one Redis destination of the logger, with its client and outbox.

Lives in the logger thread: the asyncio client is created there on first use and
only ever awaited there.  ``send`` sends the oldest queued batches as XADDs, each
stream's in one MULTI; on failure the channel backs off (doubling up to
:data:`MAX_BACKOFF`) and keeps its batches, which the outbox spills to disk if the
outage lasts.  A retried send may write an entry twice; each carries its seq, so the
collector applies it once.

A full Redis (``maxmemory`` reached under ``noeviction``) is such an outage: its OOM
refusal is retried like a lost connection, never taken for a bad batch, and the
warning names it (``redis_full``, not ``redis_unreachable``).  The MULTI is what keeps
that safe: a full Redis refuses a MULTI whole, where in a plain pipeline it may refuse
one XADD and take the next (memory freed by another client in between), putting a
run's later batch in the stream before the earlier one, whose resent copy the
collector's seq check would then skip as applied.  Redis holds a MULTI's commands
until EXEC, so a MULTI needs room for all of it: one that a full Redis refuses is sent
again at half the size, down to one batch, and back up as sends succeed.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from functools import partial
from pathlib import Path
from typing import Final, cast

from redis.exceptions import AuthenticationError, NoPermissionError, RedisClusterException, RedisError
from redis.typing import EncodableT, FieldT

from runstream._log import sdk_logger
from runstream._outbox import Outbox
from runstream._spool import OutgoingBatch, Spool
from runstream.connection import REDIS_FULL, RedisClient, connect, is_cluster, mask_url, write_refused
from runstream.keys import Keys
from runstream.shard_count import raise_shard_count

__all__ = ["MAX_BACKOFF", "Channel"]

#: Longest pause between two attempts to reach an unreachable Redis, in seconds.
MAX_BACKOFF: Final = 2.0
_FIRST_BACKOFF: Final = 0.05
#: One pipeline carries at most this many entries / about this many bytes.
_PIPELINE_BATCHES: Final = 256
_PIPELINE_BYTES: Final = 8 * 1024 * 1024

_log = partial(sdk_logger, "runstream.logger")


class Channel:
    """Batches bound for one Redis URL.

    Attributes:
        outbox: the FIFO of batches not yet in Redis.
        retry_at: monotonic time before which no send is tried (after a failure).
        sending: a send is in flight (only the logger thread reads or writes it).
    """

    def __init__(self, url: str, spool_root: Path, producer: str, max_memory_bytes: int) -> None:
        self.url = url
        # One spool folder per destination, so a spool is only replayed where it was bound.
        self._spool_folder = spool_root / hashlib.sha256((mask_url(url) or "").encode()).hexdigest()[:16]
        self._max_memory_bytes = max_memory_bytes
        self.outbox = Outbox(Spool(self._spool_folder, producer), max_memory_bytes)
        self.retry_at = 0.0
        self.sending = False
        self._failures = 0
        self._cause: str | None = None  # of the outage under way (see _cause)
        self._most = _PIPELINE_BATCHES  # batches per send: halved while Redis has no room for them
        self._atomic = True  # sends in MULTI; False once this Redis user is refused MULTI (see send)
        self._client: RedisClient | None = None
        #: Workspaces whose shard count this channel has yet to raise (see claim_shards).
        self._unclaimed: dict[str, Keys] = {}
        self.batches_sent = 0
        self.bytes_sent = 0
        self.events_sent = 0
        self.retries = 0
        self.last_error: str | None = None

    def __repr__(self) -> str:
        return f"Channel({mask_url(self.url)!r}, pending={self.outbox.pending})"

    async def connected(self) -> RedisClient:
        """The channel's client, made on first use (asking the node whether it is a cluster's)."""
        if self._client is None:
            self._client = await connect(self.url, retries=1)
        return self._client

    def ready(self, now: float) -> bool:
        return not self.sending and now >= self.retry_at and self.outbox.pending > 0

    def claim_shards(self, keys: Keys) -> None:
        """Raise the workspace's recorded shard count to ``keys.shards`` before the next send."""
        self._unclaimed.setdefault(keys.shard_count(), keys)

    async def send(self) -> None:
        """XADD the oldest batches in one pipeline; on failure, back off and keep them."""
        batches = self.outbox.head(self._most, _PIPELINE_BYTES)
        if not batches:
            return
        try:
            client = await self.connected()
            for name, keys in list(self._unclaimed.items()):
                await raise_shard_count(client, keys)
                del self._unclaimed[name]
            await _xadd(client, batches, atomic=self._atomic)
        except (RedisError, RedisClusterException, OSError) as exc:  # (a cluster none of whose nodes answer)
            if self._atomic and _multi_refused(exc):
                self._without_multi(exc)
                return
            self._failed(exc, len(batches))
            return
        self.outbox.ack(len(batches))
        self._most = min(_PIPELINE_BATCHES, 2 * self._most)
        if self._failures:
            _log().info(
                "redis_reachable_again" if self._cause == _UNREACHABLE else "redis_recovered",
                redis=mask_url(self.url),
                cause=self._cause,
                after_attempts=self._failures,
            )
        self._failures, self._cause = 0, None
        self.batches_sent += len(batches)
        self.events_sent += sum(b.events for b in batches)
        self.bytes_sent += sum(b.size for b in batches)

    def _failed(self, exc: BaseException, sent: int) -> None:
        self._failures += 1
        self.retries += 1
        self.last_error = f"{type(exc).__name__}: {exc}"
        cause = _cause(exc)
        if cause == REDIS_FULL and sent > 1:  # maybe no room for all of them: half as many, soon
            self._most = max(1, sent // 2)
            backoff = _FIRST_BACKOFF
        else:
            backoff = min(MAX_BACKOFF, _FIRST_BACKOFF * 2 ** (self._failures - 1))
        self.retry_at = time.monotonic() + backoff
        if cause != self._cause:  # said once per outage (and again if its cause changes)
            self._cause = cause
            _log().warning(
                cause,
                redis=mask_url(self.url),
                error=self.last_error,
                pending_batches=self.outbox.pending,
                spool=str(self.outbox.spool.path),
                **({"hint": _HINTS[cause]} if cause in _HINTS else {}),
            )

    def _without_multi(self, exc: BaseException) -> None:
        """A user allowed XADD but not MULTI (an ACL written for plain XADDs) still logs:
        its sends become plain pipelines, at once, and the log says what that gives up."""
        self._atomic = False
        self.retry_at = 0.0
        _log().warning(
            "redis_multi_refused",
            redis=mask_url(self.url),
            error=f"{type(exc).__name__}: {exc}",
            hint="grant this Redis user +multi and +exec: without them a full Redis may take a run's later "
            "batch and refuse the one before it",
        )

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def reset_for(self, producer: str) -> None:
        """Start afresh in a forked child: the parent keeps sending what it queued, and
        the client's socket and the spool's lock are the parent's."""
        self._client = None
        self.sending = False
        self.retry_at = 0.0
        self._failures = 0
        self._cause = None
        self.outbox = Outbox(Spool(self._spool_folder, producer), self._max_memory_bytes)


_UNREACHABLE: Final = "redis_unreachable"
_REFUSED: Final = "redis_refused"
_HINTS: Final = {
    _REFUSED: "check the user and password of the Redis URL",
    REDIS_FULL: "Redis reached its maxmemory: the batches are kept (on disk past the logger's memory bound) "
    "and sent once it has room (raise maxmemory, or archive or delete old runs)",
}


def _cause(exc: BaseException) -> str:
    """What a failed send says of Redis: full (or unable to persist), refusing this user, or out of reach.

    Refused (a wrong password, a user without the right) is no outage, but the ACL may
    be mended while this process runs, so it is retried all the same.
    """
    if isinstance(exc, AuthenticationError | NoPermissionError):
        return _REFUSED
    return write_refused(exc) or _UNREACHABLE


def _multi_refused(exc: BaseException) -> bool:
    """Whether ``exc`` is this user's ACL refusing MULTI or EXEC (not XADD, nor a login)."""
    text = str(exc).lower()
    return isinstance(exc, NoPermissionError) and ("'multi'" in text or "'exec'" in text)


async def _xadd(client: RedisClient, batches: list[OutgoingBatch], *, atomic: bool = True) -> None:
    """XADD ``batches``, each stream's in one MULTI (``atomic``), which Redis takes whole or not at all.

    On one Redis every stream's batches go in one MULTI; on a cluster, where a MULTI is
    one slot's, each stream's in one of its own, all sent at once.  (A run's batches all
    go to one stream, so each run's batches are taken whole or not at all.)
    """
    if not is_cluster(client):
        await _transaction(client, batches, atomic)
        return
    by_stream: dict[str, list[OutgoingBatch]] = {}
    for batch in batches:
        by_stream.setdefault(batch.stream, []).append(batch)
    sent = await asyncio.gather(
        *(_transaction(client, group, atomic) for group in by_stream.values()), return_exceptions=True
    )
    for result in sent:
        if isinstance(result, BaseException):
            raise result


async def _transaction(client: RedisClient, batches: list[OutgoingBatch], atomic: bool) -> None:
    async with client.pipeline(transaction=atomic) as pipe:
        for batch in batches:
            # A pipeline queues the command and returns itself; nothing to await here.
            _ = pipe.xadd(batch.stream, cast("dict[FieldT, EncodableT]", batch.fields))
        await pipe.execute()
