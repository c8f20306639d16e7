"""The sender process: sends what a training process logs, from the ring they share.

Run by the training process's logger (``RUNSTREAM_SENDER=process``, see
:mod:`runstream._feeding`) as ``python -m runstream._sidecar FD CAPACITY PRODUCER PARENT``:
``FD`` is the ring's descriptor, inherited.  Here an ordinary logger (the thread that
drains, batches, spools and sends, :mod:`runstream.logger`) takes its items from the ring
instead of from ``run.log``: each drain first asks the training process for what its
buffer holds (the ring's ``wanted`` byte, which the next ``log`` there answers) and takes
what was put since.  The training process's items arrive as it left them, with three
controls among them: a run to register, a run to retire, a flush to answer.

Its standard input is the training process's wake-up line: a byte wakes the sender (a
flush, or the first point after a quiet spell), and the end of it (the training process
closed it at exit, or died) ends this one, once what the ring holds is sent or spooled.

Heartbeats go out only while the training process's timer moves the ring's ``alive``
counter: a paused training process (SIGSTOP, a debugger) shows as NotResponding, as it
would with the sender in its own process.
"""

from __future__ import annotations

import contextlib
import gc
import json
import marshal
import os
import pickle
import signal
import sys
import time
from dataclasses import dataclass
from typing import Final

import structlog

from runstream._ring import Ring
from runstream.config import Settings
from runstream.errors import RunstreamError
from runstream.keys import Keys
from runstream.logger import EventLogger, _FlushMarker

__all__ = [
    "CLOSE_AFTER_FLUSH_S",
    "FLUSHED",
    "MORE",
    "PICKLED",
    "PUBLISH_EVERY",
    "Flush",
    "Register",
    "Retire",
    "RingLogger",
    "main",
    "run",
]

#: A frame's first byte: more pieces of these items follow; the items are pickled (else marshalled).
MORE: Final = 1
PICKLED: Final = 2
#: What the training process writes before it closes the line, its exit flush done.
FLUSHED: Final = b"q"
#: How long the final flush waits then (the training process's exit flush already waited).
CLOSE_AFTER_FLUSH_S: Final = 1.0
#: Seconds between two statuses (counters for ``logger_stats``) while nothing else calls for one.
PUBLISH_EVERY: Final = 0.1


@dataclass(frozen=True, slots=True)
class Register:
    """A run the training process logs to, with its handle's index there."""

    index: int
    run_id: str
    settings: Settings
    keys: Keys
    live: bool


@dataclass(frozen=True, slots=True)
class Retire:
    """The run reached a final status in the training process: no more heartbeats."""

    index: int


@dataclass(frozen=True, slots=True)
class Flush:
    """Answer ``request`` (through the ring's ``done``) once all before it is in Redis."""

    request: int


class RingLogger(EventLogger):
    """The logger of the sender process: its buffer is fed from the ring."""

    def __init__(self, ring: Ring, producer: str) -> None:
        super().__init__()
        self.ring = ring
        self.producer = producer
        self._answers: list[tuple[_FlushMarker, int]] = []
        self._alive_seen = -1
        self._pieces: list[bytes] = []  # of a frame put in pieces, those taken so far
        self._publish_at = 0.0

    @property
    def attention(self) -> bool:
        return self._attention

    @attention.setter
    def attention(self, value: bool) -> None:
        """Raised by the sender before it sleeps until woken: the training process then wakes it."""
        self._attention = value
        ring: Ring | None = getattr(self, "ring", None)
        if value and ring is not None:
            ring.idle = True
            if ring.backlog():  # put just before the flag went up: no wake-up is coming for it
                self._wake_sender()

    def drain(self) -> int:
        self.ring.idle = False
        self._take()
        self.ring.ask()  # the training process's next log puts what it holds, for the next drain
        return super().drain()

    def _take(self) -> None:
        for frame in self.ring.take():
            self._pieces.append(frame[1:])
            if frame[0] & MORE:
                continue
            data = b"".join(self._pieces)
            self._pieces = []
            # The training process's own items (see _feeding._dumps).
            items = pickle.loads(data) if frame[0] & PICKLED else marshal.loads(data)  # noqa: S301, S302
            if set(map(type, items)) == {tuple}:  # points and events only, as nearly always
                self.queue.extend(items)
                continue
            for item in items:
                if isinstance(item, tuple):
                    self.queue.append(item)
                elif isinstance(item, Register):
                    handle = self.register(item.run_id, item.settings, item.keys, live=item.live)
                    if handle.index != item.index:  # both number runs in the order they register
                        raise RunstreamError(f"run {item.run_id} registered as {handle.index}, not {item.index}")
                elif isinstance(item, Retire):
                    self.retire(self._handles[item.index])
                elif isinstance(item, Flush):
                    marker = _FlushMarker()
                    self._flush_requests += 1
                    self.queue.append(marker)
                    self._answers.append((marker, item.request))
                else:
                    raise RunstreamError(f"the ring held a {type(item).__name__}")

    def resolve_markers(self) -> None:
        super().resolve_markers()
        done = [request for marker, request in self._answers if marker.done.is_set()]
        if done:
            self._answers = [(m, r) for m, r in self._answers if not m.done.is_set()]
        now = time.monotonic()
        if done or self._error is not None or now >= self._publish_at:
            self.publish()
            self._publish_at = now + PUBLISH_EVERY
        if done:
            self.ring.done = max(done)  # after the status: the flush reads its seqs next

    def publish(self) -> None:
        """The counters, error and seqs the training process reads (its stats, flush, reads)."""
        stats = self.stats
        error = self._error
        self.ring.publish(
            pickle.dumps(
                {
                    "stats": stats,
                    "error": None if error is None else (type(error).__name__, str(error)),
                    "seqs": [h.seq for h in self._handles],
                }
            )
        )
        self.ring.failed = error is not None  # after the status that holds it

    def beat(self) -> None:
        alive = self.ring.alive
        if alive == self._alive_seen:
            return  # the training process is stopped: its runs are not responding
        self._alive_seen = alive
        super().beat()


class _ToParent:
    """A structlog logger whose lines go to the training process, which logs them as its own.

    So the application's structlog setup (JSON lines, levels, handlers) applies to what the
    sender says, as it did with the sender in a thread.  Once the training process has gone
    (the pipe broken), lines go to stderr.
    """

    def __init__(self, name: str) -> None:
        self.name = name

    def msg(self, message: str) -> None:
        try:
            sys.stdout.write(f"{self.name}\t{message}\n")
            sys.stdout.flush()
        except (OSError, ValueError):
            with contextlib.suppress(OSError, ValueError):
                sys.stderr.write(f"{message}\n")

    debug = info = warning = error = critical = exception = log = msg


def _say_through_parent() -> None:
    structlog.configure(
        processors=[structlog.processors.add_log_level, structlog.processors.format_exc_info, _json],
        logger_factory=_ToParent,
        cache_logger_on_first_use=True,
    )


def _json(_logger: object, _method: str, event: structlog.typing.EventDict) -> str:
    return json.dumps(event, default=str)


def main(argv: list[str]) -> int:
    fd, capacity, producer, parent = int(argv[0]), int(argv[1]), argv[2], int(argv[3])
    # Ctrl-C reaches the whole process group: the training process's exit flush comes
    # through the ring, so this process must outlive the interrupt to send it.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # A file-size limit (the disk's quota, say) must fail the spool's write, as a full disk
    # does, not kill the process that holds the points.
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    _say_through_parent()
    ring = Ring(fd, capacity)
    logger = RingLogger(ring, producer)
    logger.publish()
    logger._ensure_started()
    # What this process made to start (modules, the client) lives as long as it does:
    # out of the collector's sight, so that a full collection, which the points passing
    # through would set off every few seconds, does not walk it each time (a fifth of
    # this process's CPU).  Young objects are collected as usual, a little less often.
    gc.freeze()
    gc.set_threshold(10_000, 10, 10)
    flushed = False  # the training process flushed before it left (else it died, or was killed)
    try:
        while True:
            woken = os.read(0, 4096)
            if not woken or os.getppid() != parent:
                break
            flushed = flushed or FLUSHED in woken
            logger._wake_sender()
    except OSError:
        pass
    # The training process has gone: whatever it put in the ring is sent or spooled; after
    # its own exit flush, without waiting on a Redis it already waited for in vain.
    logger.drain()
    logger.close(timeout=CLOSE_AFTER_FLUSH_S if flushed else None)
    logger.publish()
    return 0


def run() -> int:
    return main(sys.argv[1:])


if __name__ == "__main__":
    # Run as the module of its real name, whose classes the training process pickled.
    from runstream import _sidecar

    sys.exit(_sidecar.run())
