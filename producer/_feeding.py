"""The training process's side of a logger whose sending runs in a process of its own.

``RUNSTREAM_SENDER=process``: ``run.log`` appends to the buffer as always; nothing in this
process drains, encodes or sends it.  The sender process (:mod:`runstream._sidecar`) asks
for the buffer by raising the ring's ``wanted`` byte, which is this logger's
``attention``, read by every ``log``: the next call then copies what the buffer holds into
the ring (one marshal of the items, one copy) and clears it.  So a training loop's thread
does a few microseconds of work a linger, inline, where a sender thread of its own would
take the GIL from it for a hundred or two (DESIGN §3; the figures are in bench/RESULTS.md).

A timer thread here wakes ten times a second, not every linger: it puts what a loop that
stopped logging left in the buffer, keeps the ring's ``alive`` counter moving (heartbeats
stop while this process is stopped), and notices a sender process that died.

What the runs are, which ended, and where a flush stands go through the ring in order
with the items (:class:`runstream._sidecar.Register`, ``Retire``, ``Flush``); counters,
errors and the runs' sequence numbers come back in the ring's status.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import marshal
import operator
import os
import pickle
import subprocess
import sys
import threading
import time
from dataclasses import replace
from itertools import repeat
from pathlib import Path
from typing import Any, Final, cast

from runstream._batcher import RunHandle
from runstream._channel import Channel
from runstream._log import sdk_logger
from runstream._ring import Ring, RingFull
from runstream._sidecar import FLUSHED, MORE, PICKLED, Flush, Register, Retire
from runstream.config import Settings
from runstream.errors import FlushTimeoutError, LoggerError, RunstreamError, SpoolError
from runstream.keys import Keys
from runstream.logger import EventLogger, LoggerStats

__all__ = ["FeedingLogger"]

#: Items encoded into one frame at most (a burst goes in several).
_FRAME_ITEMS: Final = 65_536
#: The timer's period (s): how long points a loop left in the buffer, when it stopped
#: logging, wait at most; each tick costs some 100 µs of CPU on a VM.
_TIMER_S: Final = 0.1
#: Ticks between two looks at whether the sender process still runs.
_POLL_TICKS: Final = 10
#: How long the exit waits for the sender process to end after the last flush.
_EXIT_WAIT_S: Final = 10.0
_ERRORS: Final[dict[str, type[RunstreamError]]] = {"SpoolError": SpoolError, "LoggerError": LoggerError}


class FeedingLogger(EventLogger):
    """The process's logger when its sender runs in a process of its own."""

    def __init__(self) -> None:
        super().__init__()  # attention up (a byte of its own) until the ring exists
        self._ring: Ring | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._timer: threading.Thread | None = None
        self._relay: threading.Thread | None = None
        self._stop = threading.Event()
        self._held: list[bytes] = []  # frames the ring had no room for yet, oldest first
        self._requests = 0
        self._registered: list[Register] = []
        self._by_key: dict[tuple[str, str, Path], RunHandle] = {}

    # -------------------------------------------------------------- runs

    def register(self, run_id: str, settings: Settings, keys: Keys, *, live: bool) -> RunHandle:
        with self._drain_lock:
            key = (run_id, settings.redis_url, settings.data_dir)
            handle = self._by_key.get(key)
            if handle is None:
                # The sender process makes the channel; here a handle only numbers the run.
                handle = RunHandle(len(self._handles), run_id, keys.ingest_for(run_id), cast("Channel", None))
                self._handles.append(handle)
                self._by_key[key] = handle
            announced = Register(handle.index, run_id, settings, keys, live)
            if handle.index == len(self._registered):
                self._registered.append(announced)
            self.queue.append(cast("Any", announced))
        return self._opened(handle, settings, live=live)

    def retire(self, handle: RunHandle) -> None:
        super().retire(handle)
        self.queue.append(cast("Any", Retire(handle.index)))

    # -------------------------------------------------------------- hot path help

    def attend(self) -> None:
        self._check_open()
        self.drain()

    def drain(self) -> int:
        """Put what the buffer holds into the ring (the caller's thread); how many items."""
        ring = self._ring
        if ring is None:
            return 0
        with self._drain_lock:
            queue = self.queue
            count = len(queue)
            frames = self._held
            self._held = []
            if count:
                items = list(map(operator.call, repeat(queue.popleft, count)))
                piece = ring.capacity // 4
                for start in range(0, count, _FRAME_ITEMS):
                    data, kind = _dumps(items[start : start + _FRAME_ITEMS])
                    # A big call (a list of millions) goes in pieces, each marked "more follows" but the last.
                    for at in range(0, len(data), piece):
                        flags = kind | (MORE if at + piece < len(data) else 0)
                        frames.append(flags.to_bytes(1, "little") + data[at : at + piece])
            for done, frame in enumerate(frames):
                try:
                    ring.put(frame)
                except RingFull:  # the sender process is behind: the rest waits here (the timer retries)
                    self._held = frames[done:]
                    break
            self.attention = False  # answered: until the sender process asks again
        if ring.idle:
            self._wake()
        return count

    def _wake(self) -> None:
        process = self._process
        if process is not None and process.stdin is not None:
            with contextlib.suppress(OSError, ValueError):
                os.write(process.stdin.fileno(), b"\0")

    # -------------------------------------------------------------- flush

    def flush(self, timeout: float | None = 10.0) -> None:
        if self._error is not None:
            raise self._error
        ring = self._ring
        if ring is None:
            return
        with self._drain_lock:
            self._requests += 1
            request = self._requests
            self.queue.append(cast("Any", Flush(request)))
        self.drain()
        self._wake()
        deadline = None if timeout is None else time.monotonic() + timeout
        pause = 0.0002
        while ring.done < request:
            self._check_process()
            if self._error is not None:
                raise self._error
            if deadline is not None and time.monotonic() >= deadline:
                raise FlushTimeoutError(self._undelivered_message(f"flush did not finish in {timeout} s"))
            if self._held:
                self.drain()
            time.sleep(pause)
            pause = min(pause * 2, 0.005)
        status = self._status()
        if status is not None:
            for handle, seq in zip(self._handles, status["seqs"], strict=False):
                handle.seq = seq
        if self._error is not None:
            raise self._error

    def _status(self) -> dict[str, Any] | None:
        ring = self._ring
        blob = ring.status() if ring is not None else None
        if blob is None:
            return None
        status: dict[str, Any] = pickle.loads(blob)  # noqa: S301  # the sender process's own
        if status["error"] is not None and self._error is None:
            kind, message = status["error"]
            self.fail(_ERRORS.get(kind, LoggerError)(message))
        return status

    def _check_process(self) -> None:
        process = self._process
        if process is not None and self._error is None and process.poll() is not None:
            self.fail(LoggerError(f"the runstream sender process exited with code {process.returncode}"))

    # -------------------------------------------------------------- stats

    @property
    def stats(self) -> LoggerStats:
        status = self._status()
        if status is None:
            return LoggerStats(0, 0, 0, 0, 0, 0, len(self.queue), 0, 0, str(self._error) if self._error else None)
        theirs: LoggerStats = status["stats"]
        return replace(
            theirs,
            queue_depth=theirs.queue_depth + len(self.queue),
            last_error=str(self._error) if self._error else theirs.last_error,
        )

    def _undelivered_message(self, what: str) -> str:
        stats = self.stats
        return (
            f"{what}: {stats.pending_events} events in {stats.pending_batches} batches are not in Redis yet"
            f" (last error: {stats.last_error}); the sender process keeps them, spilling to its spool"
            " in the data folder, and sends them when Redis answers"
        )

    # -------------------------------------------------------------- the sender process

    @property
    def sender_pid(self) -> int | None:
        """The sender process's pid (None before the first run)."""
        return self._process.pid if self._process is not None else None

    def _ensure_started(self) -> None:
        process = self._process
        if process is not None:
            if process.poll() is not None:
                self._check_process()
            return
        with self._start_lock:
            if self._process is not None:
                return
            ring = Ring.create()
            command = [sys.executable, "-m", "runstream._sidecar"]
            command += [str(ring.fd), str(ring.capacity), self.producer, str(os.getpid())]
            self._process = subprocess.Popen(  # noqa: S603  # this interpreter, our own module
                command,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,  # its log lines, said here (see _relay)
                pass_fds=(ring.fd,),
                env={**os.environ, "RUNSTREAM_SENDER": "thread"},
            )
            self._ring = ring
            self.flag = ring.wanted  # the one byte the hot path reads: the sender process asks there
            self._stop.clear()
            self._timer = threading.Thread(target=self._tick, name="runstream-feeder", daemon=True)
            self._timer.start()
            self._relay = threading.Thread(target=_relay, args=(self._process,), name="runstream-said", daemon=True)
            self._relay.start()
            if not self._atexit_registered:
                atexit.register(self.close)
                self._atexit_registered = True

    def _tick(self) -> None:
        ring = self._ring
        if ring is None:
            return
        # Twice a heartbeat at least: the sender process beats only if ``alive`` moved since its last.
        period = max(0.01, min(_TIMER_S, self.heartbeat_interval / 2))
        ticks = 0
        # A plain sleep: a wake-up is the dearest part of a tick on a VM (an Event's wait
        # costs several times a sleep's CPU), and close() does not wait for this thread.
        while True:
            time.sleep(period)
            if self._stop.is_set() or self._ring is not ring:
                return
            ticks += 1
            ring.beat()
            if self._held or (self.queue and ring.wanted[0]):  # asked, and no log came to answer
                self.drain()
            if ring.idle and ring.backlog():
                self._wake()
            if ring.failed:
                self._status()
            if ticks % _POLL_TICKS == 0:
                self._check_process()

    # -------------------------------------------------------------- close

    def close(self, timeout: float | None = None) -> None:
        log = sdk_logger("runstream.logger")
        self._run_exit_hooks()
        process = self._process
        if process is None or self._closed:
            return
        self._closed = True
        try:
            self.flush(self.exit_flush_timeout if timeout is None else timeout)
        except RunstreamError as exc:
            log.debug("exit_flush_incomplete", error=str(exc))
        self._stop.set()
        self.drain()
        if process.stdin is not None:
            with contextlib.suppress(OSError, ValueError):
                os.write(process.stdin.fileno(), FLUSHED)
                process.stdin.close()  # the sender process sends or spools what is left, and ends
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(_EXIT_WAIT_S)
        if self._relay is not None:
            self._relay.join(1.0)  # its last lines (events_not_delivered) said before the exit goes on
        self._stop_loop()

    # -------------------------------------------------------------- fork

    def _after_fork_in_child(self) -> None:
        """The child has a ring and a sender process of its own, made on first use."""
        self.flag = bytearray(b"\x01")  # never the parent's ring
        ring, process = self._ring, self._process
        self._ring = self._process = self._timer = self._relay = None
        if process is not None:
            for pipe in (process.stdin, process.stdout):
                if pipe is not None:
                    with contextlib.suppress(OSError):
                        os.close(pipe.fileno())  # the parent's sender process sees the parent's exit
        if ring is not None:
            ring.close()
        self._stop = threading.Event()
        self._held = []
        self._requests = 0
        self._closed = False
        super()._after_fork_in_child()
        # The child's sender process learns the runs anew, in order: their indices are kept.
        for announced in self._registered:
            self.queue.append(cast("Any", replace(announced, live=False)))


def _dumps(items: list[Any]) -> tuple[bytes, int]:
    """``items`` as bytes, and how (a frame's flag): marshal's, twice as fast as pickle's
    for the tuples of ints, strings and floats that points are; pickle's when an event
    (a dataclass) or a value of a subclass (an IntEnum) is among them."""
    try:
        return marshal.dumps(items), 0
    except ValueError:
        return pickle.dumps(items, pickle.HIGHEST_PROTOCOL), PICKLED


def _relay(process: subprocess.Popen[bytes]) -> None:
    """Say here, through this process's structlog, each line the sender process logged."""
    if process.stdout is None:
        return
    for line in process.stdout:
        name, _, payload = line.decode("utf-8", "replace").rstrip("\n").partition("\t")
        try:
            event: dict[str, Any] = json.loads(payload)
        except ValueError:
            event = {"event": "sender_said", "line": line.decode("utf-8", "replace").rstrip()}
        level = str(event.pop("level", "info"))
        message = str(event.pop("event", "sender_said"))
        say = getattr(sdk_logger(name or "runstream.logger"), level, None)
        if callable(say):
            say(message, **event)
