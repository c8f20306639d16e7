"""A ring of frames in memory shared by a training process and its sender process.

DESIGN §3 lets the sending move out of the training process when the GIL makes an
in-process sender too costly: a thread that wakes every few milliseconds to drain, encode
and send holds the GIL some 100-200 µs each time (its caches cold after the loop's
matmuls), and a loop logging one point a millisecond pays that, and the hand-offs, a
hundred times a second.  With the ring, the training process's only work is to copy what
its buffer holds into shared memory, inline, when the sender process asks (a byte in the
header the hot path already reads, through :class:`Ring.wanted`); everything else runs in
the sender process, on the other core.

One writer (the training process, under its logger's drain lock) and one reader (the
sender process).  Positions are byte counts since the start, never wrapped; a frame is a
4-byte length and its payload, and one that would not fit before the end of the data
region is preceded by a wrap mark.  The writer publishes a frame by moving ``head`` after
writing it, so the reader never sees half a frame, even of a writer killed mid-copy.

The memory is an anonymous file (``memfd``; an unlinked temporary file where there is
none), passed to the sender process by descriptor: nothing is left behind in /dev/shm by
a process that dies, and no other user can open it.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import struct
import tempfile
from typing import Final

__all__ = ["Ring"]

_HEAD: Final = 0  # u64: bytes written (the training process)
_TAIL: Final = 8  # u64: bytes taken (the sender process)
_WANTED: Final = 16  # u8: the sender process asks for what the buffer holds
_IDLE: Final = 17  # u8: the sender process sleeps until woken (through its standard input)
_FAILED: Final = 18  # u8: the sender process's status holds an error (the feeder's timer looks)
_ALIVE: Final = 24  # u64: bumped by the training process's timer thread (paused: it stops)
_DONE: Final = 32  # u64: the last flush request the sender process finished
_STATUS_VERSION: Final = 40  # u64: odd while the sender process writes its status
_STATUS_LEN: Final = 48  # u32
_STATUS: Final = 64  # the status blob (counters, error, seqs), at most _STATUS_MAX bytes
_STATUS_MAX: Final = 65_536 - 64
_DATA: Final = 65_536
_WRAP: Final = 0xFFFFFFFF
_U64 = struct.Struct("<Q")
_U32 = struct.Struct("<I")

#: The data region's size: what a sender process that stalls (Redis away) lets pile up
#: before the training process keeps the rest in its own buffer.
DEFAULT_CAPACITY: Final = 16 * 1024 * 1024


class RingFull(Exception):  # noqa: N818  # a condition, not a failure: the caller keeps the frame
    """The frame does not fit until the reader takes some."""


class Ring:
    """The shared memory of ``fd`` (made by :meth:`create`, or inherited by the sender process)."""

    def __init__(self, fd: int, capacity: int) -> None:
        self.fd = fd
        self.capacity = capacity
        self.memory = mmap.mmap(fd, _DATA + capacity)
        self.view = memoryview(self.memory)
        #: The one byte the hot path reads: non-zero when the sender process wants a push.
        self.wanted = self.view[_WANTED : _WANTED + 1]

    @classmethod
    def create(cls, capacity: int = DEFAULT_CAPACITY) -> Ring:
        """A new zeroed ring, its descriptor inheritable by a child given it in ``pass_fds``."""
        try:
            fd = os.memfd_create("runstream-ring", 0)
        except (AttributeError, OSError):  # not Linux: an unlinked temporary file does as well
            fd, path = tempfile.mkstemp(prefix="runstream-ring-")
            os.unlink(path)
        os.ftruncate(fd, _DATA + capacity)
        return cls(fd, capacity)

    def close(self) -> None:
        """Unmap and close (another process's mapping, if any, lives on)."""
        self.wanted.release()
        self.view.release()
        with contextlib.suppress(BufferError):
            self.memory.close()
        with contextlib.suppress(OSError):
            os.close(self.fd)

    # ------------------------------------------------------------------- counters

    def _get(self, at: int) -> int:
        return int(_U64.unpack_from(self.memory, at)[0])

    def _set(self, at: int, value: int) -> None:
        _U64.pack_into(self.memory, at, value)

    @property
    def alive(self) -> int:
        return self._get(_ALIVE)

    def beat(self) -> None:
        """The training process is running (its threads are not stopped)."""
        self._set(_ALIVE, self._get(_ALIVE) + 1)

    @property
    def done(self) -> int:
        return self._get(_DONE)

    @done.setter
    def done(self, request: int) -> None:
        self._set(_DONE, request)

    def ask(self) -> None:
        """The sender process wants what the training process's buffer holds."""
        self.memory[_WANTED] = 1

    @property
    def idle(self) -> bool:
        return bool(self.memory[_IDLE])

    @idle.setter
    def idle(self, value: bool) -> None:
        self.memory[_IDLE] = int(value)

    @property
    def failed(self) -> bool:
        return bool(self.memory[_FAILED])

    @failed.setter
    def failed(self, value: bool) -> None:
        self.memory[_FAILED] = int(value)

    def backlog(self) -> int:
        """Bytes written and not taken yet."""
        return self._get(_HEAD) - self._get(_TAIL)

    # ------------------------------------------------------------------- frames

    def put(self, payload: bytes) -> None:
        """Append one frame (the writer).

        Raises:
            RingFull: not until the reader takes some (nothing written).
            ValueError: the frame could never fit.
        """
        size = 4 + len(payload)
        if size > self.capacity // 2:
            raise ValueError(f"a frame of {len(payload):,} bytes does not fit the ring")
        head, tail = self._get(_HEAD), self._get(_TAIL)
        offset = head % self.capacity
        pad = 0 if offset + size <= self.capacity else self.capacity - offset
        if head + pad + size - tail > self.capacity:
            raise RingFull
        if pad:
            if pad >= 4:
                _U32.pack_into(self.memory, _DATA + offset, _WRAP)
            head += pad
            offset = 0
        start = _DATA + offset
        _U32.pack_into(self.memory, start, len(payload))
        self.memory[start + 4 : start + size] = payload
        self._set(_HEAD, head + size)  # last: the frame is whole before the reader can see it

    def take(self) -> list[bytes]:
        """Every whole frame written since the last take (the reader)."""
        head, tail = self._get(_HEAD), self._get(_TAIL)
        frames: list[bytes] = []
        while tail < head:
            offset = tail % self.capacity
            if self.capacity - offset < 4 or _U32.unpack_from(self.memory, _DATA + offset)[0] == _WRAP:
                tail += self.capacity - offset
                continue
            (length,) = _U32.unpack_from(self.memory, _DATA + offset)
            start = _DATA + offset + 4
            frames.append(self.memory[start : start + length])
            tail += 4 + length
        self._set(_TAIL, tail)
        return frames

    # ------------------------------------------------------------------- status

    def publish(self, blob: bytes) -> None:
        """The sender process's status (a seqlock: the version is odd while it writes)."""
        if len(blob) > _STATUS_MAX:
            raise ValueError(f"a status of {len(blob):,} bytes does not fit")
        version = self._get(_STATUS_VERSION)
        self._set(_STATUS_VERSION, version + 1)
        _U32.pack_into(self.memory, _STATUS_LEN, len(blob))
        self.memory[_STATUS : _STATUS + len(blob)] = blob
        self._set(_STATUS_VERSION, version + 2)

    def status(self) -> bytes | None:
        """The last status published whole (None before the first)."""
        for _ in range(1000):
            before = self._get(_STATUS_VERSION)
            if before % 2:
                continue
            (length,) = _U32.unpack_from(self.memory, _STATUS_LEN)
            blob = self.memory[_STATUS : _STATUS + length]
            if self._get(_STATUS_VERSION) == before:
                return blob if before else None
        return None
