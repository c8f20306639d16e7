"""What a collector is made of: its settings, its counters, and the client it needs.

:class:`CollectorSettings` says how a collector runs (the workspace's
:class:`~runstream.config.Settings` say where); :class:`CollectorStats` holds the counters
it publishes (:mod:`.reporter`); :func:`collector_client` makes the one kind of client it
may use.  :mod:`.service` re-exports all three.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field

from runstream.config import Settings
from runstream.connection import Connecting, connect

__all__ = ["CollectorSettings", "CollectorStats", "collector_client"]


@dataclass(frozen=True, slots=True)
class CollectorSettings:
    """How a collector runs (the workspace's settings say where).

    Attributes:
        workspace: the workspace settings (Redis URL, name, key prefix, shards).
        reader: this collector's name in the consumer groups and leases.
        lease_ttl: seconds a shard lease lasts without renewal (the takeover delay).
        block: seconds one XREADGROUP waits (shorter than the socket timeout).
        count: entries read per call.
        heartbeat_timeout: seconds without a heartbeat before a run is marked NotResponding
            (not final: its next heartbeat or batch brings it back to Running).
        heartbeat_lost_after: seconds without a heartbeat before a run is marked Failed
            ("heartbeat lost"), for good; None (the default): ten times ``heartbeat_timeout``
            (5 minutes with the default timeout), long enough for a paused process (a debugger,
            a long checkpoint, SIGSTOP) to come back, short enough that a dead one is called so.
        gap_timeout: seconds a batch ahead of a gap in its producer's seqs waits for the
            missing ones (see :mod:`.gaps`) before the gap is dead-lettered, counted and
            the batch applied.  A partly failed send is resent within the producer's
            backoff (2 s at most), so a minute is thirty times that, and short enough that
            a run's later batches are not held up for long by a batch that is truly lost.
        live_kept_after_end: seconds an ended run's live stream stays whole before it is
            trimmed to its final entry (see :mod:`.ended`): a client that was that far behind
            still sees the end as it happened; one further behind reads the record.
        archive_after: seconds after its end that a run is archived (its record moved out
            of Redis into the workspace's object store: :mod:`runstream.archive`); None:
            never.  Ten minutes: a run just ended is looked at (and often read) for a while,
            and a run read once archived costs a file set's read, some tens of ms.
        delete_after: seconds after its end that a run is deleted, record, archive and
            files (None: never, the default).  An experiment may have its own figures
            for both (:meth:`runstream.Experiment.set_retention`).
        stats_interval: seconds between two logged counter reports (Redis gets them every
            ``lease_ttl / 3``: they also tell the other collectors this one is alive).
        trim_interval: seconds between two trims of a shard.
    """

    workspace: Settings
    reader: str = field(default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}")
    lease_ttl: float = 5.0
    block: float = 1.0
    count: int = 64
    heartbeat_timeout: float = 30.0
    heartbeat_lost_after: float | None = None
    gap_timeout: float = 60.0
    live_kept_after_end: float = 60.0
    archive_after: float | None = 600.0
    delete_after: float | None = None
    stats_interval: float = 10.0
    trim_interval: float = 5.0

    @property
    def lost_after(self) -> float:
        """Seconds without a heartbeat before a run is Failed (``heartbeat_lost_after``, or its default)."""
        if self.heartbeat_lost_after is None:
            return 10 * self.heartbeat_timeout
        return max(self.heartbeat_lost_after, self.heartbeat_timeout)


@dataclass(slots=True)
class CollectorStats:
    """Counters since start; ``lag`` is per owned shard, entries not yet read.

    ``waiting``: batches held now, ahead of a gap in their producer's seqs (pending, not
    acked); ``lost_batches``: batches given up on, the seqs of gaps that never filled
    (each gap also a dead letter, counted in ``dead_lettered``).
    """

    reader: str
    applied: int = 0
    deduped: int = 0
    dead_lettered: int = 0
    points: int = 0
    heartbeats_lost: int = 0
    not_responding: int = 0
    waiting: int = 0
    lost_batches: int = 0
    shards: list[int] = field(default_factory=list)
    lag: dict[int, int] = field(default_factory=dict)
    updated_at: float = 0.0


def collector_client(url: str) -> Connecting:
    """The client a collector needs: one that never resends a command on its own.

    A read that times out or loses its connection may still run on the server (its
    request was in flight): resent on a new connection, the first XREADGROUP delivers
    entries to this reader that it never sees, the second the ones after them, which
    then wait behind the gap until it is given up (the seq check once skipped the first
    ones when they were claimed: points lost without a word, after a network stall longer
    than the socket timeout).  So the error reaches the shard loop instead, which takes
    the shard over again: claims and applies, in order, what was delivered to it before
    it reads anything new.
    """
    return connect(url, retries=0)
