"""The outbox: encoded batches waiting for Redis, bounded in memory, spilling to disk.

A single FIFO in two tiers: batches stay in memory while they fit in
``max_memory_bytes``; past that (Redis down or slow) they go to the :class:`Spool`,
and once anything is on disk every newer batch goes there too, so order is kept.
When memory empties it is refilled from the spool.  The batches being sent are
always the first ones in memory; ``ack`` drops them once Redis has them.

Guarded by ``_lock``: the sender thread sends and acks, and a caller thread may push
when it helps drain an overfull buffer.
"""

from __future__ import annotations

import threading
from collections import deque

from runstream._spool import OutgoingBatch, Spool
from runstream.errors import SpoolError

__all__ = ["Outbox"]


class Outbox:
    def __init__(self, spool: Spool, max_memory_bytes: int) -> None:
        self.spool = spool
        self.max_memory_bytes = max_memory_bytes
        self._memory: deque[OutgoingBatch] = deque()
        self._memory_bytes = 0
        self._memory_events = 0
        self._lock = threading.Lock()
        #: Batches ever pushed / acked: flush waits until acked reaches a pushed mark.
        self.pushed_total = 0
        self.acked_total = 0
        #: Batches that went to disk (a counter for ``stats``).
        self.spooled_total = 0
        #: Events dropped because neither Redis nor the disk took them (said at exit, in ``stats``).
        self.lost_events = 0

    @property
    def pending(self) -> int:
        return self.pushed_total - self.acked_total

    @property
    def pending_events(self) -> int:
        return self._memory_events + self.spool.pending_events

    def push(self, batches: list[OutgoingBatch]) -> None:
        """Queue ``batches`` behind everything queued before.

        Raises:
            SpoolError: they did not fit in memory and the spool could not be written.
        """
        with self._lock:
            for i, batch in enumerate(batches):
                if self.spool.pending or self._memory_bytes + batch.size > self.max_memory_bytes:
                    self._spill(batches[i:])
                    break
                self._memory.append(batch)
                self._memory_bytes += batch.size
                self._memory_events += batch.events
                self.pushed_total += 1

    def _spill(self, batches: list[OutgoingBatch]) -> None:
        try:
            self.spool.append(batches)
        except OSError as exc:
            self.lost_events += sum(b.events for b in batches)  # dropped: counted, so it can be said
            raise SpoolError(f"Redis is unreachable and the spool {self.spool.path} cannot be written: {exc}") from exc
        self.pushed_total += len(batches)
        self.spooled_total += len(batches)

    def adopt_orphans(self) -> int:
        """Queue the batches that dead producers left in spools beside ours; return how many."""
        with self._lock:
            adopted = self.spool.adopt_orphans()
            self.pushed_total += adopted
            return adopted

    def head(self, max_batches: int, max_bytes: int) -> list[OutgoingBatch]:
        """The oldest batches (at most ``max_batches``, about ``max_bytes``), not removed."""
        with self._lock:
            if not self._memory and self.spool.pending:
                for batch in self.spool.read(max_batches, min(max_bytes, self.max_memory_bytes)):
                    self._memory.append(batch)
                    self._memory_bytes += batch.size
                    self._memory_events += batch.events
            taken: list[OutgoingBatch] = []
            size = 0
            for batch in self._memory:
                if len(taken) >= max_batches or (taken and size + batch.size > max_bytes):
                    break
                taken.append(batch)
                size += batch.size
            return taken

    def ack(self, count: int) -> None:
        """Drop the ``count`` oldest batches: Redis has them."""
        with self._lock:
            for _ in range(count):
                batch = self._memory.popleft()
                self._memory_bytes -= batch.size
                self._memory_events -= batch.events
            self.acked_total += count

    def spill_all(self) -> None:
        """Move what memory holds to the front of the spool (at exit, when Redis is gone)."""
        with self._lock:
            if not self._memory:
                return
            front = list(self._memory)
            self._memory.clear()
            self._memory_bytes = self._memory_events = 0
            try:
                self.spool.rewrite_with_front(front)
            except OSError as exc:
                # No room for a rewritten spool (a full disk): it stays as it was, and what
                # memory held goes after it, as much as fits (adoption replays in seq order).
                kept = self.spool.append_while_it_fits(front)
                self.spooled_total += kept
                self.pushed_total -= len(front) - kept  # held nowhere any more: not pending
                self.lost_events += sum(b.events for b in front[kept:])
                if kept < len(front):
                    raise SpoolError(f"cannot write the spool {self.spool.path}: {exc}") from exc
            else:
                self.spooled_total += len(front)
            try:
                self.spool.sync()
            except OSError as exc:
                raise SpoolError(f"cannot write the spool {self.spool.path}: {exc}") from exc
