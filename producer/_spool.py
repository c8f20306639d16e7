"""The on-disk spool: batches that could not go to Redis yet, in FIFO order.

One append-only file per producer (``<producer_id>.spool``), held under an exclusive
``flock`` while its process lives.  Records are a 4-byte big-endian length followed by
a msgpack array ``[stream, events, v, r, p, q, b]``.  A spool left behind by a dead
process (its lock is free) is *adopted* by the next producer using the same folder:
its batches carry their own producer id and seq, so replaying them is safe (the
collector skips seqs it already applied).

Written only by the logger thread, or by a caller thread holding the outbox lock.
"""

from __future__ import annotations

import fcntl
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Final

import msgpack

from runstream.codec import EntryFields

__all__ = ["OutgoingBatch", "Spool"]

_LENGTH: Final = struct.Struct(">I")
_SUFFIX: Final = ".spool"


@dataclass(frozen=True, slots=True)
class OutgoingBatch:
    """An encoded batch ready for XADD: the stream and the entry's fields."""

    stream: str
    fields: EntryFields
    size: int
    events: int


class Spool:
    """FIFO of :class:`OutgoingBatch` in a file; ``pending`` counts unread records."""

    def __init__(self, folder: Path, producer_id: str) -> None:
        self.folder = folder
        self.path = folder / f"{producer_id}{_SUFFIX}"
        self._file: BinaryIO | None = None
        self._read_offset = 0
        self.pending = 0
        self.pending_events = 0

    def _open(self) -> BinaryIO:
        if self._file is None:
            self.folder.mkdir(parents=True, exist_ok=True)
            # Locked under a name adoption ignores, then renamed: no other process can
            # ever see this spool unlocked and take it for an orphan.
            hidden = self.folder / f".{self.path.name}.new"
            file = hidden.open("a+b")
            fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
            hidden.rename(self.path)
            self._file = file
        return self._file

    def append(self, batches: list[OutgoingBatch]) -> None:
        """Write ``batches`` at the end; raises ``OSError`` if the disk refuses."""
        file = self._open()
        chunks = []
        for b in batches:
            f = b.fields
            record = msgpack.packb([b.stream, b.events, f["v"], f["r"], f["p"], f["q"], f["b"]], use_bin_type=True)
            chunks.append(_LENGTH.pack(len(record)) + record)
        file.seek(0, os.SEEK_END)
        file.write(b"".join(chunks))
        file.flush()
        self.pending += len(batches)
        self.pending_events += sum(b.events for b in batches)

    def read(self, max_batches: int, max_bytes: int) -> list[OutgoingBatch]:
        """Take up to ``max_batches`` (and about ``max_bytes``) records from the front."""
        if not self.pending:
            return []
        file = self._open()
        file.seek(self._read_offset)
        batches: list[OutgoingBatch] = []
        size = 0
        while len(batches) < max_batches and size < max_bytes and self.pending:
            header = file.read(_LENGTH.size)
            (length,) = _LENGTH.unpack(header)
            batch = _decode_record(file.read(length))
            batches.append(batch)
            size += batch.size
            self._read_offset += _LENGTH.size + length
            self.pending -= 1
            self.pending_events -= batch.events
        if not self.pending:  # all read: start the file afresh
            file.truncate(0)
            self._read_offset = 0
        return batches

    def rewrite_with_front(self, front: list[OutgoingBatch]) -> None:
        """Put ``front`` before the unread records (at exit: memory goes back to disk first)."""
        rest = self.read(self.pending, 1 << 62)
        self.append(front + rest)

    def sync(self) -> None:
        if self._file is not None:
            os.fsync(self._file.fileno())

    def close(self) -> None:
        """Close the file; remove it when nothing is left in it."""
        if self._file is None:
            return
        empty = self.pending == 0
        self._file.close()
        self._file = None
        if empty:
            self.path.unlink(missing_ok=True)

    def adopt_orphans(self) -> int:
        """Move the batches of spools whose process is gone into this one; return how many."""
        if not self.folder.is_dir():
            return 0
        adopted = 0
        for orphan in sorted(self.folder.glob(f"*{_SUFFIX}")):
            if orphan == self.path:
                continue
            with orphan.open("rb") as file:
                try:
                    fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue  # its producer is alive
                batches = list(_read_all(file))
                if batches:
                    self.append(batches)
                    self.sync()
                orphan.unlink()
                adopted += len(batches)
        return adopted


def _read_all(file: BinaryIO) -> list[OutgoingBatch]:
    batches = []
    while header := file.read(_LENGTH.size):
        if len(header) < _LENGTH.size:
            break  # a torn last write: the record never completed
        (length,) = _LENGTH.unpack(header)
        record = file.read(length)
        if len(record) < length:
            break
        batches.append(_decode_record(record))
    return batches


def _decode_record(record: bytes) -> OutgoingBatch:
    stream, events, v, r, p, q, b = msgpack.unpackb(record, raw=False)
    fields = EntryFields(v=v, r=r, p=p, q=q, b=b)
    return OutgoingBatch(stream=stream, fields=fields, size=len(b), events=events)
