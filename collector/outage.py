"""Outages: a Redis that is full, refuses writes or is out of reach, told apart from a bad entry.

A batch Redis would not take for want of memory (``maxmemory`` reached under
``noeviction``) or of a disk (``MISCONF``) is not the batch's fault: it is never
dead-lettered, never acked, and is applied once Redis has room again.  Redis refuses
such a write before it writes anything: a plain command is refused whole, and a script
without flags (``apply.lua``) is refused its first write that needs memory, so it wrote
nothing (Redis 6.2 and 7.x alike; a script's later writes are let through, to keep it
atomic).  :func:`outage_cause` tells these replies from the others, whatever shape
redis-py gives them (``OutOfMemoryError`` on 7.x, a script error quoting ``-OOM`` on 6.2:
:func:`runstream.connection.write_refused`).

Every loop of the collector rides an outage out (:data:`UNREACHABLE` lists what it
catches) and tells an :class:`Outage`, which logs it (once when it starts, then at a
bounded rate, then ``redis_recovered``), paces the retries (redis-py's jittered
exponential backoff) and describes it for the collector's published report, where the
health endpoint shows it.
"""

from __future__ import annotations

import time
from typing import Final

from redis.backoff import EqualJitterBackoff
from redis.exceptions import (
    AskError,
    ClusterError,
    OutOfMemoryError,
    ReadOnlyError,
    RedisClusterException,
    RedisError,
    SlotNotCoveredError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from structlog.typing import FilteringBoundLogger as BoundLogger

from runstream.connection import REDIS_CANNOT_PERSIST, REDIS_FULL, write_refused

__all__ = [
    "REDIS_FULL",
    "REDIS_UNREACHABLE",
    "UNREACHABLE",
    "Outage",
    "WritesRefusedError",
    "outage_cause",
    "raise_first_outage",
    "raise_if_outage",
]

#: The causes an outage is named by, in logs and in the collector's report.
REDIS_UNREACHABLE: Final = "redis_unreachable"

#: Seconds between two log lines of one outage (the first is logged at once).
LOG_EVERY: Final = 10.0


class WritesRefusedError(RedisError):
    """Redis refused a write for want of memory (OOM) or of a disk it can save to (MISCONF).

    Raised in place of the reply's own error (which is its ``__cause__``), so that every
    loop catches one type for both Redis versions' shapes of it.

    Attributes:
        cause: :data:`REDIS_FULL` or ``redis_cannot_persist``.
    """

    def __init__(self, cause: str, error: str) -> None:
        super().__init__(error)
        self.cause = cause


#: What a Redis that is restarting (LOADING is a ConnectionError too), out of reach, full, or
#: (in a cluster) failing over or moving a slot raises: every loop rides it out and tries again,
#: so neither a Redis restart, nor a fail-over, nor a full Redis ends the collector.
UNREACHABLE: Final = (
    RedisConnectionError,
    RedisTimeoutError,
    ClusterError,  # CLUSTERDOWN, MASTERDOWN, and redirections that never settled
    TryAgainError,  # a multi-key command while its slot is half migrated
    AskError,  # MOVED and ASK that the client could not follow
    ReadOnlyError,  # a write to a node demoted to replica, before the client saw it
    SlotNotCoveredError,
    RedisClusterException,  # no node of the cluster answers
    OutOfMemoryError,  # maxmemory reached (noeviction): a plain command refused
    WritesRefusedError,  # the same, or a failing disk, as the applier names it
)


def outage_cause(exc: BaseException) -> str | None:
    """The outage ``exc`` is a sign of (:data:`REDIS_FULL`, ...), or None if it is no outage."""
    if isinstance(exc, WritesRefusedError):
        return exc.cause
    refused = write_refused(exc)
    if refused is not None:
        return refused
    return REDIS_UNREACHABLE if isinstance(exc, UNREACHABLE) else None


def raise_first_outage(replies: list[object]) -> None:
    """Raise the first of a pipeline's ``replies`` that is Redis being away or refusing writes.

    Raises:
        WritesRefusedError: a reply refused a write (OOM, MISCONF), in whatever shape.
        redis.exceptions.RedisError: a reply is one of :data:`UNREACHABLE`.
    """
    for reply in replies:
        if isinstance(reply, BaseException):
            raise_if_outage(reply)


def raise_if_outage(exc: BaseException) -> None:
    """Raise ``exc`` as an outage if it is one (a refused write as :class:`WritesRefusedError`); else return."""
    cause = outage_cause(exc)
    if cause in (REDIS_FULL, REDIS_CANNOT_PERSIST):
        raise WritesRefusedError(cause, str(exc)) from exc
    if cause is not None:
        raise exc


class Outage:
    """The collector's view of an outage: which of its loops fail, since when, and why.

    One per collector, shared by its tasks (all on one event loop, so no lock).  A loop
    that meets an outage calls :meth:`failed` (and waits the delay it returns before it
    tries again); once its retry succeeds it calls :meth:`recovered`.  The outage lasts
    while any loop is failing.

    Args:
        log: the collector's bound logger.
        cap: the longest wait between two retries, in seconds.
    """

    def __init__(self, log: BoundLogger, cap: float = 2.0) -> None:
        self._log = log
        self._backoff = EqualJitterBackoff(cap=cap, base=0.05)
        self._failures: dict[str, int] = {}  # by failing loop: its failures in a row
        self._cause: str | None = None
        self._error = ""
        self._since = 0.0  # wall clock, for the report
        self._began = 0.0  # monotonic, for durations
        self._logged_at = 0.0
        self.count = 0  # outages since start

    @property
    def cause(self) -> str | None:
        """The cause of the outage under way, or None."""
        return self._cause

    def failed(self, source: str, exc: BaseException) -> float:
        """Note that ``source`` (a loop: "shard 3", "start") met ``exc``; the seconds to wait before it retries."""
        cause = outage_cause(exc) or REDIS_UNREACHABLE
        now = time.monotonic()
        failures = self._failures[source] = self._failures.get(source, 0) + 1
        error = f"{type(exc).__name__}: {exc}"[:500]
        if self._cause is None:
            self._cause, self._since, self._began, self.count = cause, time.time(), now, self.count + 1
        if cause != self._cause or now - self._logged_at >= LOG_EVERY:
            self._cause, self._logged_at = cause, now
            self._log.warning(
                cause,
                error=error,
                source=source,
                failing=sorted(self._failures),
                for_seconds=round(now - self._began, 3),
                **({"hint": _HINTS[cause]} if cause in _HINTS else {}),
            )
        self._error = error
        return float(self._backoff.compute(failures))

    def recovered(self, source: str) -> None:
        """Note that ``source`` succeeded again; the outage ends when no loop is failing."""
        if self._failures.pop(source, None) is None or self._failures or self._cause is None:
            return
        self._log.info("redis_recovered", cause=self._cause, after_seconds=round(time.monotonic() - self._began, 3))
        self._cause, self._logged_at = None, 0.0

    def report(self) -> dict[str, object] | None:
        """The outage under way as the collector's report shows it, or None."""
        if self._cause is None:
            return None
        return {"cause": self._cause, "since": self._since, "error": self._error, "failing": sorted(self._failures)}


_HINTS: Final = {
    REDIS_FULL: "Redis reached maxmemory: nothing is lost, batches wait unacked until it has room "
    "(raise maxmemory, e.g. CONFIG SET maxmemory 4gb, or archive or delete old runs)",
    REDIS_CANNOT_PERSIST: "Redis refuses writes because it cannot save to disk (MISCONF): see its log",
}
