"""The logger's sender thread: every linger it takes what the buffer holds and sends it.

DESIGN §3: the hot path never wakes the sender.  While a run logs, the thread sleeps a
*linger* (``Settings.linger_ms``, 10 ms by default), drains the buffer into per-run
batches (:mod:`runstream._batcher`), queues them in each destination's outbox and sends
them (:mod:`runstream._channel`), then sleeps again: one wake-up and one write per
linger, however many points came, where waking on the first point after a send made a
training loop pay a whole send every step.  A backlog bigger than one send (a burst, or
Redis back after an outage) is sent without sleeping in between.

After a quiet spell (:data:`QUIET_TICKS` lingers with nothing to do) the thread stops
ticking: it raises the logger's ``attention`` flag, which the next ``log`` reads and
answers by waking it, and sleeps until then or the next heartbeat.  So an idle process
costs nothing, and a lone point still leaves within about a linger.

A send blocks this thread only (the socket's timeout bounds it); the buffer keeps
filling meanwhile, and ``log`` helps drain it into the outbox, which spills to disk,
once it outgrows ``max_queue_events``.
"""

from __future__ import annotations

import contextlib
import os
import select
import threading
import time
from typing import TYPE_CHECKING, Final

from runstream._batcher import MAX_BATCH_WEIGHT
from runstream._log import sdk_logger
from runstream.errors import LoggerError

if TYPE_CHECKING:
    from runstream.logger import EventLogger

__all__ = ["QUIET_TICKS", "STRETCH", "STRETCH_FROM", "STRETCH_RATE", "Sender"]

#: Lingers in a row with nothing logged, after which the thread waits to be woken.
QUIET_TICKS: Final = 10
#: The linger is stretched by a linger per STRETCH_RATE points/s above STRETCH_FROM (so
#: from 2,000 points/s on), and by STRETCH times at most (see Sender._linger).
STRETCH_FROM: Final = 1_000.0
STRETCH_RATE: Final = 1_000.0
STRETCH: Final = 10.0


class Sender:
    """The thread that drains and sends for ``logger``; :meth:`stop` ends it."""

    def __init__(self, logger: EventLogger, linger: float) -> None:
        self.logger = logger
        self.linger = linger
        # Woken through a pipe: the sleep is one select() (threading.Event's wait is a few
        # Python frames, dear in a thread that wakes with cold caches), cut short by a byte.
        self._wake_read, self._wake_write = os.pipe()
        os.set_blocking(self._wake_read, False)
        os.set_blocking(self._wake_write, False)
        self._rate = 0.0  # points/s lately, smoothed (see _linger)
        self._drained_at = time.monotonic()
        self._stopping = False
        self.thread = threading.Thread(target=self._run, name="runstream-sender", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def wake(self) -> None:
        """Called by ``log`` (through ``attention``) and by ``flush``: send soon."""
        with contextlib.suppress(BlockingIOError, OSError):  # full: a wake-up is on its way already
            os.write(self._wake_write, b"\0")

    def _sleep(self, timeout: float) -> None:
        """Sleep ``timeout`` seconds or until woken."""
        if select.select([self._wake_read], [], [], timeout)[0]:
            with contextlib.suppress(BlockingIOError, OSError):
                os.read(self._wake_read, 4096)

    def alive(self) -> bool:
        return self.thread.is_alive()

    def stop(self, timeout: float) -> None:
        """End the thread after its current send; one waiting on a frozen Redis is cut short."""
        self._stopping = True
        self.wake()
        self.thread.join(timeout=min(timeout, 1.0))
        if self.thread.is_alive():
            for channel in self.logger.channels():
                channel.link.interrupt()
            self.thread.join(timeout=max(0.0, timeout - 1.0))
        if not self.thread.is_alive():
            self.forget()

    def forget(self) -> None:
        """Close the wake-up pipe (the thread is gone: ended, or left behind in the parent by a fork)."""
        for fd in (self._wake_read, self._wake_write):
            with contextlib.suppress(OSError):
                os.close(fd)

    def _run(self) -> None:
        logger = self.logger
        next_beat = time.monotonic() + logger.heartbeat_interval
        quiet = 0
        busy = False
        while not self._stopping:
            linger = self.linger
            started = time.monotonic()
            try:
                linger = self._linger(logger.drain(), started)
                now = time.monotonic()
                hurry = busy or logger.flushing()
                for channel in logger.channels():
                    # The replies of the last send came during the linger: read without waiting,
                    # unless a backlog or a flush is being sent, which goes as fast as Redis answers.
                    channel.land(self.linger if hurry else 0.0)
                    if channel.ready(now):
                        channel.send()
                        if hurry:
                            channel.land(self.linger)
                logger.resolve_markers()
                busy = len(logger.queue) >= MAX_BATCH_WEIGHT or any(ch.backlog(now) for ch in logger.channels())
            except Exception as exc:  # noqa: BLE001  # a bug here must not kill the thread silently
                logger.fail(LoggerError(f"the logger thread failed: {type(exc).__name__}: {exc}"))
                sdk_logger("runstream.logger").exception("logger_failed")
                busy = False
            now = time.monotonic()
            if now >= next_beat:
                logger.beat()
                next_beat = now + logger.heartbeat_interval
                continue
            if busy or (logger.flushing() and any(ch.moving(now) for ch in logger.channels())):
                continue  # (a flush waiting on an outage's backoff sleeps, as any send does)
            pending = any(channel.outbox.pending for channel in logger.channels())
            quiet = 0 if logger.queue or pending else quiet + 1
            if quiet >= QUIET_TICKS:
                self._sleep_until_woken(next_beat)
                quiet = 0
            # A tick every linger, its work included: a big drain (a burst) is not followed
            # by a whole linger more of sleep, which would cap the rate at a drain a linger.
            self._sleep(max(0.0, started + linger - time.monotonic()))  # a flush cuts it short

    def _linger(self, drained: int, now: float) -> float:
        """The next linger: the base one while under 2,000 points/s flow, longer above.

        A tick's fixed cost (a wake-up, a write and its reply: some 500 µs of CPU on a VM,
        where timers and system calls are dear) is small beside the work of a point a
        millisecond, and large per point beside many: at 10,000 points/s a 10 ms linger
        would spend 5 µs per point on waking alone.  So above 2,000 points/s the linger
        stretches with the rate (a linger more per 1,000 points/s), up to :data:`STRETCH`
        times the base (100 ms), keeping each send at a thousand points or so; charts lag
        by that much more at most.  A point a millisecond keeps the base linger, and a
        live subscriber sees it within two.
        """
        elapsed = now - self._drained_at
        self._drained_at = now
        if elapsed > 0:
            self._rate = 0.5 * self._rate + 0.5 * drained / elapsed
        return self.linger * min(STRETCH, max(1.0, (self._rate - STRETCH_FROM) / STRETCH_RATE))

    def _sleep_until_woken(self, next_beat: float) -> None:
        logger = self.logger
        logger.attention = True  # the next log wakes us (set before the last look at the buffer)
        if logger.queue or self._stopping:
            return
        self._sleep(max(0.0, next_beat - time.monotonic()))
