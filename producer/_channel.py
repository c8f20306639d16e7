"""A channel: one Redis destination of the logger, with its client and outbox.

Lives in the logger's sender thread (:mod:`runstream._sender`), which alone calls
``send``: it sends the oldest queued batches as XADDs over a lean synchronous
connection (:mod:`runstream._link`), each stream's in one MULTI; on failure the channel
backs off (doubling up to :data:`MAX_BACKOFF`) and keeps its batches, which the outbox
spills to disk if the outage lasts.  A retried send may write an entry twice; each carries its seq, so the
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

import contextlib
import hashlib
import time
from functools import partial
from pathlib import Path
from typing import Final

from redis.exceptions import AuthenticationError, NoPermissionError, RedisClusterException, RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from runstream._link import Flight, Link
from runstream._log import sdk_logger
from runstream._outbox import Outbox
from runstream._spool import OutgoingBatch, Spool
from runstream.connection import REDIS_FULL, SOCKET_TIMEOUT, mask_url, write_refused
from runstream.keys import Keys
from runstream.shard_count import RAISE_SHARD_COUNT

__all__ = ["MAX_BACKOFF", "Channel"]

#: Longest pause between two attempts to reach an unreachable Redis, in seconds.
MAX_BACKOFF: Final = 2.0
_FIRST_BACKOFF: Final = 0.05
#: One pipeline carries at most this many entries / about this many bytes.
_PIPELINE_BATCHES: Final = 256
_PIPELINE_BYTES: Final = 8 * 1024 * 1024

_log = partial(sdk_logger, "runstream.logger")
#: What a failed send raises (RedisClusterException: a cluster none of whose nodes answer).
_SEND_ERRORS: Final = (RedisError, RedisClusterException, OSError)


class Channel:
    """Batches bound for one Redis URL.

    Attributes:
        outbox: the FIFO of batches not yet in Redis.
        retry_at: monotonic time before which no send is tried (after a failure).
    """

    def __init__(self, url: str, spool_root: Path, producer: str, max_memory_bytes: int) -> None:
        self.url = url
        # One spool folder per destination, so a spool is only replayed where it was bound.
        self._spool_folder = spool_root / hashlib.sha256((mask_url(url) or "").encode()).hexdigest()[:16]
        self._max_memory_bytes = max_memory_bytes
        self.outbox = Outbox(Spool(self._spool_folder, producer), max_memory_bytes)
        self.retry_at = 0.0
        self._failures = 0
        self._cause: str | None = None  # of the outage under way (see _cause)
        self._most = _PIPELINE_BATCHES  # batches per send: halved while Redis has no room for them
        self._atomic = True  # sends in MULTI; False once this Redis user is refused MULTI (see send)
        self.link = Link(url)
        self._flight: Flight | None = None  # the send whose replies are awaited
        self._flying: list[OutgoingBatch] = []  # its batches (the outbox's first ones)
        #: Workspaces whose shard count this channel has yet to raise (see claim_shards).
        self._unclaimed: dict[str, Keys] = {}
        self.batches_sent = 0
        self.bytes_sent = 0
        self.events_sent = 0
        self.retries = 0
        self.last_error: str | None = None

    def __repr__(self) -> str:
        return f"Channel({mask_url(self.url)!r}, pending={self.outbox.pending})"

    def ready(self, now: float) -> bool:
        """Whether a send may start: batches wait, none is on its way, no backoff holds it."""
        return self._flight is None and now >= self.retry_at and self.outbox.pending > 0

    def moving(self, now: float) -> bool:
        """Whether a send is on its way or may start now (no backoff holds the batches)."""
        return self._flight is not None or self.ready(now)

    def backlog(self, now: float) -> bool:
        """Whether more batches wait than the send on its way carries, and may go now."""
        return now >= self.retry_at and self.outbox.pending > len(self._flying)

    def claim_shards(self, keys: Keys) -> None:
        """Raise the workspace's recorded shard count to ``keys.shards`` before the next send."""
        self._unclaimed.setdefault(keys.shard_count(), keys)

    def send(self) -> None:
        """Write the oldest batches as XADDs, in one write; their replies are read by :meth:`land`.

        On failure, back off and keep them.
        """
        batches = self.outbox.head(self._most, _PIPELINE_BYTES)
        if not batches:
            return
        try:
            for name, keys in list(self._unclaimed.items()):
                self._raise_shard_count(keys)
                del self._unclaimed[name]
            self._flight = self.link.start(batches, atomic=self._atomic)
        except _SEND_ERRORS as exc:
            self._refused(exc, len(batches))
            return
        self._flying = batches

    def land(self, wait: float = 0.0) -> bool:
        """Read the replies of the send on its way if they came (waiting up to ``wait`` s); whether it is over.

        A send whose replies do not come within the socket timeout (a frozen Redis) fails: its
        batches are sent again, which is harmless (each carries its seq).
        """
        flight, batches = self._flight, self._flying
        if flight is None:
            return True
        try:
            if not flight.landed(wait):
                if time.monotonic() - flight.started < SOCKET_TIMEOUT:
                    return False
                raise RedisTimeoutError(f"no reply from Redis within {SOCKET_TIMEOUT:.0f} s")
            flight.finish()
        except _SEND_ERRORS as exc:
            self._flight, self._flying = None, []
            if isinstance(exc, RedisTimeoutError):
                self.link.failed(exc)
            self._refused(exc, len(batches))
            return True
        self._flight, self._flying = None, []
        self._sent(batches)
        return True

    def _refused(self, exc: BaseException, sent: int) -> None:
        if self._atomic and _multi_refused(exc):
            self._without_multi(exc)
        else:
            self._failed(exc, sent)

    def _sent(self, batches: list[OutgoingBatch]) -> None:
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

    def _raise_shard_count(self, keys: Keys) -> None:
        """Raise the workspace's recorded shard count to ``keys.shards`` (see :mod:`runstream.shard_count`).

        A user whose ACL may not run scripts (a write-only producer) leaves it as it is.
        """
        with contextlib.suppress(NoPermissionError):
            # EVAL, not EVALSHA: sent once per process and workspace, and never NOSCRIPT.
            self.link.eval(RAISE_SHARD_COUNT, [keys.shard_count()], [keys.shards])

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

    def close(self) -> None:
        self.link.close()

    def reset_for(self, producer: str) -> None:
        """Start afresh in a forked child: the parent keeps sending what it queued, and
        the client's socket and the spool's lock are the parent's."""
        self.link = Link(self.url)
        self._flight, self._flying = None, []
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
