"""The non-blocking logger: the in-process buffer and the thread that drains it.

One :class:`EventLogger` per process.  ``run.log`` appends a tuple to
:attr:`EventLogger.queue` (a ``deque``: appends and pops are atomic) and returns; it
takes no lock and does no I/O.  A daemon thread, the sender (:mod:`runstream._sender`),
wakes every linger (a few milliseconds), drains the buffer into per-run batches
(:mod:`runstream._batcher`), queues them in each destination's outbox
(:mod:`runstream._outbox`, memory then disk) and sends them (:mod:`runstream._channel`).
The hot path never wakes it while a run logs; after a quiet spell it raises
:attr:`EventLogger.attention`, and the next ``log`` wakes it.

Reads and waits that this process makes of Redis (``get_metrics``,
``wait_for_completion``) run on an asyncio loop in a second thread, started on first use.

The one flag the hot path reads, ``attention``, also asks callers for help when the
buffer outgrows ``max_queue_events`` (the caller drains it into the outbox itself,
which spills to disk, rather than letting memory grow) and makes ``log`` raise once
the spool cannot be written.  Failures in the thread surface through ``flush``,
``stats`` and that flag, never as a dead thread.
"""

from __future__ import annotations

import asyncio
import atexit
import operator
import os
import secrets
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from itertools import repeat
from pathlib import Path
from typing import Any, Final, TypeVar, cast

from runstream._batcher import Item, RunHandle, build_batches
from runstream._channel import Channel
from runstream._log import sdk_logger
from runstream._sender import Sender
from runstream._spool import OutgoingBatch
from runstream.config import Settings
from runstream.errors import ConfigError, FlushTimeoutError, LoggerError, RunstreamError, SpoolError
from runstream.events import HeartbeatSent
from runstream.keys import Keys

__all__ = ["EventLogger", "LoggerStats", "get_logger", "sender_kind"]

T = TypeVar("T")

#: Items a drain takes from the buffer in one go (a burst is sent in pieces, not held whole).
_DRAIN_MAX: Final = 262_144


@dataclass(frozen=True, slots=True)
class LoggerStats:
    """Counters of the process's logger (all since the process started).

    ``events_lost``: events neither Redis nor the spool took (the disk full while Redis was
    unreachable); ``log`` raises SpoolError from the first, and the exit says how many.
    """

    events_logged: int
    events_sent: int
    batches_sent: int
    bytes_sent: int
    batches_spooled: int
    retries: int
    queue_depth: int
    pending_batches: int
    pending_events: int
    last_error: str | None
    events_lost: int = 0


class _FlushMarker:
    """Put in the buffer by ``flush``; done once every batch queued before it is acked."""

    __slots__ = ("done", "targets")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.targets: list[tuple[Channel, int]] | None = None


class EventLogger:
    """The process's buffer, pump thread and destinations.

    Attributes:
        queue: the buffer; the hot path appends, the sender (or a helping caller,
            under ``_drain_lock``) pops.
        attention: read by every ``log``; True when the sender is idle (wake it),
            the buffer is overfull (help drain it) or the spool failed (raise).
        producer: this process's producer id (new after a fork).
    """

    def __init__(self) -> None:
        self.queue: deque[Item | _FlushMarker] = deque()
        #: The byte behind ``attention``, which ``log`` reads as ``flag[0]`` (an index, where
        #: a property would cost a Python call on every ``log``).
        self.flag: bytearray | memoryview = bytearray(1)
        self.attention = True
        self.producer = _new_producer_id()
        self.max_queue_events = 1_000_000
        self.heartbeat_interval = 5.0
        self.exit_flush_timeout = 10.0
        self.linger = 0.01
        self.events_logged = 0
        # Markers asked for (bumped before one enters the buffer) and found by drains:
        # while they differ, a drain looks for markers among what it popped.
        self._flush_requests = 0
        self._markers_found = 0
        self._drain_lock = threading.Lock()  # guards draining and the handles' seqs
        self._start_lock = threading.Lock()
        self._channels: dict[tuple[str, Path], Channel] = {}
        #: Every run this process logged to; items in the buffer point here by index.
        self._handles: list[RunHandle] = []
        self._by_run: dict[tuple[str, Channel], RunHandle] = {}
        self._live: set[RunHandle] = set()  # runs that send heartbeats
        self._markers: list[_FlushMarker] = []  # drained, waiting for acks (sender only)
        self._error: RunstreamError | None = None
        self._sender: Sender | None = None
        self._thread: threading.Thread | None = None  # the asyncio loop's, for reads (see loop)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False  # after the exit flush: nothing more can be sent
        self._exit_hooks: list[Callable[[], None]] = []
        self._atexit_registered = False

    # -------------------------------------------------------------- runs and channels

    def register(self, run_id: str, settings: Settings, keys: Keys, *, live: bool) -> RunHandle:
        """A handle for logging to ``run_id`` through the workspace of ``settings``.

        ``live``: this process runs the run, so it sends heartbeats for it.
        """
        channel = self._channel(settings)
        channel.claim_shards(keys)
        with self._drain_lock:
            handle = self._by_run.get((run_id, channel))
            if handle is None:  # one handle (so one seq counter) per run and destination
                handle = RunHandle(len(self._handles), run_id, keys.ingest_for(run_id), channel)
                self._handles.append(handle)
                self._by_run[(run_id, channel)] = handle
        return self._opened(handle, settings, live=live)

    def _opened(self, handle: RunHandle, settings: Settings, *, live: bool) -> RunHandle:
        """A run registered: the settings of the latest workspace apply; the sender runs."""
        self.max_queue_events = settings.max_queue_events
        self.heartbeat_interval = settings.heartbeat_interval
        self.exit_flush_timeout = settings.exit_flush_timeout
        self.linger = settings.linger_ms / 1000
        if live:
            handle.live = True
            self._live.add(handle)
        self._ensure_started()
        return handle

    def retire(self, handle: RunHandle) -> None:
        """The run reached a final status here: no more heartbeats for it."""
        handle.live = False
        self._live.discard(handle)

    def add_exit_hook(self, hook: Callable[[], None]) -> None:
        """Call ``hook`` at exit before the final flush (runs finish themselves there)."""
        self._exit_hooks.append(hook)

    def _channel(self, settings: Settings) -> Channel:
        key = (settings.redis_url, settings.data_dir)
        channel = self._channels.get(key)
        if channel is None:
            channel = Channel(settings.redis_url, settings.data_dir / "spool", self.producer, settings.max_memory_bytes)
            adopted = channel.outbox.adopt_orphans()
            if adopted:
                sdk_logger("runstream.logger").info(
                    "spool_adopted", batches=adopted, spool=str(channel.outbox.spool.path)
                )
            self._channels[key] = channel
        return channel

    # ------------------------------------------------------------------- hot path help

    @property
    def attention(self) -> bool:
        return self.flag[0] != 0

    @attention.setter
    def attention(self, value: bool) -> None:
        self.flag[0] = int(value)

    def attend(self) -> None:
        """Called by ``log`` when :attr:`attention` is up: wake, help, or raise."""
        self._check_open()
        self.attention = False
        if len(self.queue) > self.max_queue_events:
            self.drain()  # the sender cannot keep up: drain here rather than grow
        self._wake_sender()

    def _check_open(self) -> None:
        """Raise what stops logging (the sender failed, or the exit closed the logger); else start it."""
        if self._error is not None:
            raise self._error
        if self._closed:
            raise LoggerError("the runstream logger was closed at exit: nothing logged now can be sent")
        self._ensure_started()

    def _wake_sender(self) -> None:
        sender = self._sender
        if sender is not None:
            sender.wake()

    # ------------------------------------------------------------------------- flush

    def flush(self, timeout: float | None = 10.0) -> None:
        """Block until everything logged before the call is in Redis.

        Raises:
            FlushTimeoutError: not done within ``timeout`` seconds (nothing is lost:
                the events stay queued and spooled, and go out when Redis answers).
            SpoolError: the spool could not be written while Redis was unreachable.
        """
        if self._error is not None:
            raise self._error
        if self._sender is None:
            return
        marker = _FlushMarker()
        self._flush_requests += 1
        self.queue.append(marker)
        self._wake_sender()
        if not marker.done.wait(timeout):
            raise FlushTimeoutError(self._undelivered_message(f"flush did not finish in {timeout} s"))
        if self._error is not None:
            raise self._error

    async def aflush(self, timeout: float | None = 10.0) -> None:  # noqa: ASYNC109  # mirrors flush()
        """:meth:`flush` for asyncio callers (waits in a worker thread)."""
        await asyncio.to_thread(self.flush, timeout)

    def _undelivered_message(self, what: str) -> str:
        stats = self.stats
        spools = ", ".join(str(ch.outbox.spool.path) for ch in self._channels.values())
        return (
            f"{what}: {stats.pending_events} events in {stats.pending_batches} batches are not in Redis yet"
            f" (last error: {stats.last_error}); they stay queued, spilling to {spools}, and are sent when"
            " Redis answers"
        )

    # ------------------------------------------------------------------------- stats

    @property
    def stats(self) -> LoggerStats:
        channels = list(self._channels.values())
        errors = [ch.last_error for ch in channels if ch.last_error]
        return LoggerStats(
            events_logged=self.events_logged,
            events_sent=sum(ch.events_sent for ch in channels),
            batches_sent=sum(ch.batches_sent for ch in channels),
            bytes_sent=sum(ch.bytes_sent for ch in channels),
            batches_spooled=sum(ch.outbox.spooled_total for ch in channels),
            retries=sum(ch.retries for ch in channels),
            queue_depth=len(self.queue),
            pending_batches=sum(ch.outbox.pending for ch in channels),
            pending_events=sum(ch.outbox.pending_events for ch in channels),
            last_error=str(self._error) if self._error else (errors[-1] if errors else None),
            events_lost=sum(ch.outbox.lost_events for ch in channels),
        )

    # ----------------------------------------------------------------------- threads

    def _ensure_started(self) -> None:
        sender = self._sender
        if sender is not None and sender.alive():
            return
        with self._start_lock:
            if self._sender is not None and self._sender.alive():
                return
            self._sender = Sender(self, self.linger)
            self._sender.start()
            if not self._atexit_registered:
                atexit.register(self.close)
                self._atexit_registered = True

    def loop(self) -> asyncio.AbstractEventLoop:
        """The asyncio loop of this process's reads (started if need be), for work run from other threads."""
        with self._start_lock:
            if self._loop is None or self._thread is None or not self._thread.is_alive():
                loop = asyncio.new_event_loop()
                thread = threading.Thread(target=_run_loop, args=(loop,), name="runstream-reads", daemon=True)
                thread.start()
                self._loop, self._thread = loop, thread
            return self._loop

    def call(self, factory: Callable[[], Coroutine[Any, Any, T]], timeout: float | None = None) -> T:
        """Run a coroutine on the reads' loop from another thread and return its result."""
        return asyncio.run_coroutine_threadsafe(factory(), self.loop()).result(timeout)

    def _stop_loop(self) -> None:
        thread, loop = self._thread, self._loop
        self._thread = self._loop = None
        if thread is not None and loop is not None and thread.is_alive():
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=5.0)

    # ------------------------------------------------------------- the sender's work

    def channels(self) -> list[Channel]:
        return list(self._channels.values())

    def flushing(self) -> bool:
        """Whether a ``flush`` waits (its marker in the buffer, or drained and waiting for acks)."""
        return self._flush_requests != self._markers_found or bool(self._markers)

    def fail(self, error: RunstreamError) -> None:
        """The sender failed: every later ``log`` and ``flush`` raises ``error``."""
        self._error = error
        self.attention = True

    def drain(self) -> int:
        """Move what the buffer holds into the outboxes (sender or helping caller); how many items."""
        with self._drain_lock:
            queue = self.queue
            count = min(len(queue), _DRAIN_MAX)
            if not count:
                return 0
            taken = list(map(operator.call, repeat(queue.popleft, count)))  # no Python code per item
            # Markers are rare: look for them only while some asked for are not found yet.
            markers: list[_FlushMarker] = []
            items = cast("list[Item]", taken)
            if self._flush_requests != self._markers_found:
                markers = [i for i in taken if isinstance(i, _FlushMarker)]
                items = [i for i in taken if not isinstance(i, _FlushMarker)]
                self._markers_found += len(markers)
            by_channel: dict[Channel, list[OutgoingBatch]] = {}
            for channel, batch in build_batches(items, self.producer, self._handles):
                by_channel.setdefault(channel, []).append(batch)
                self.events_logged += batch.events
            try:
                for channel, batches in by_channel.items():
                    channel.outbox.push(batches)
            except SpoolError as exc:
                self._error = exc
                self.attention = True
                sdk_logger("runstream.logger").error("spool_failed", error=str(exc))
            for marker in markers:
                marker.targets = [(ch, ch.outbox.pushed_total) for ch in self._channels.values()]
                self._markers.append(marker)
            if len(queue) > self.max_queue_events:
                self.attention = True
            return count

    def resolve_markers(self) -> None:
        still: list[_FlushMarker] = []
        for marker in self._markers:
            if marker.targets is not None and all(ch.outbox.acked_total >= n for ch, n in marker.targets):
                marker.done.set()
            else:
                still.append(marker)
        self._markers = still

    def beat(self) -> None:
        now = time.time()
        for handle in list(self._live):
            if handle.live:
                self.queue.append((handle.index, HeartbeatSent(now)))

    # ------------------------------------------------------------------------- close

    def close(self, timeout: float | None = None) -> None:
        """Finish runs, flush, stop the thread; spool and report what could not be sent.

        Registered with ``atexit``; safe to call more than once.
        """
        log = sdk_logger("runstream.logger")
        self._run_exit_hooks()
        sender = self._sender
        if sender is None or not sender.alive():
            return
        self._closed = True
        if timeout is None:
            timeout = self.exit_flush_timeout
        try:
            self.flush(timeout)
        except RunstreamError as exc:
            log.debug("exit_flush_incomplete", error=str(exc))
        sender.stop(timeout=5.0)
        self._sender = None
        self._stop_loop()
        # What the buffer still holds goes to the outboxes, so the spill below spools it: a
        # sender stuck on a frozen Redis (connecting, say) took none of it since.
        self.drain()
        for channel in self._channels.values():
            channel.close()
            try:
                channel.outbox.spill_all()
            except SpoolError:
                log.exception("spool_failed")
            channel.outbox.spool.close()
        stats = self.stats  # after the spill: what the spools hold, and what none could keep (lost)
        if stats.pending_events or stats.events_lost:
            log.warning(
                "events_not_delivered",
                events=stats.pending_events,
                batches=stats.pending_batches,
                lost=stats.events_lost,
                spool=[str(ch.outbox.spool.path) for ch in self._channels.values() if ch.outbox.pending],
                reason=stats.last_error,
                hint="they are sent by the next runstream process that logs from this data folder",
            )
        else:
            log.info("logger_flushed", events_sent=stats.events_sent, batches_sent=stats.batches_sent)

    def _run_exit_hooks(self) -> None:
        """The runs this process left open finish themselves (their statuses enter the buffer)."""
        hooks, self._exit_hooks = self._exit_hooks, []
        for hook in hooks:
            try:
                hook()
            except RunstreamError:
                sdk_logger("runstream.logger").exception("exit_hook_failed")

    # -------------------------------------------------------------------------- fork

    def _after_fork_in_child(self) -> None:
        """A forked child starts afresh: its own producer id, thread, clients and spool."""
        self.queue.clear()
        self.producer = _new_producer_id()
        self._drain_lock = threading.Lock()
        self._start_lock = threading.Lock()
        if self._sender is not None:
            self._sender.forget()  # the parent's thread: not in this process
        self._sender = None
        self._thread = self._loop = None
        self._markers = []
        self._flush_requests = self._markers_found = 0
        for channel in self._channels.values():
            channel.reset_for(self.producer)
        for handle in self._handles:
            handle.seq = 0
        self.attention = True


def _run_loop(loop: asyncio.AbstractEventLoop) -> None:
    asyncio.set_event_loop(loop)
    try:
        loop.run_forever()
    finally:
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()


def _new_producer_id() -> str:
    return secrets.token_hex(8)


_LOGGER: EventLogger | None = None
_LOGGER_LOCK = threading.Lock()


def sender_kind() -> str:
    """Where this process's logger sends from: ``RUNSTREAM_SENDER``, "process" (the default) or "thread".

    "process" sends from a process of its own (:mod:`runstream._feeding`): the training
    process's threads never wake to send.  Windows has no descriptor passing: the thread there.

    Raises:
        ConfigError: another value.
    """
    kind = os.environ.get("RUNSTREAM_SENDER", "process")
    if kind not in ("process", "thread"):
        raise ConfigError(f"RUNSTREAM_SENDER must be 'process' or 'thread', not {kind!r}")
    return "thread" if sys.platform == "win32" else kind


def get_logger() -> EventLogger:
    """The process's logger (created on first use)."""
    global _LOGGER  # one logger per process is the design (DESIGN §3)
    if _LOGGER is None:
        with _LOGGER_LOCK:
            if _LOGGER is None:
                if sender_kind() == "process":
                    from runstream._feeding import FeedingLogger  # (it builds on this module)

                    _LOGGER = FeedingLogger()
                else:
                    _LOGGER = EventLogger()
    return _LOGGER


def _after_fork() -> None:
    if _LOGGER is not None:
        _LOGGER._after_fork_in_child()  # the module owns its singleton


os.register_at_fork(after_in_child=_after_fork)
