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

import contextlib
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
            # Unbuffered: a write the disk refuses leaves no bytes in a buffer, to be written
            # later out of place (at a seek) or to fail again at close.
            file = hidden.open("a+b", buffering=0)
            fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
            hidden.rename(self.path)
            self._file = file
        return self._file

    def append(self, batches: list[OutgoingBatch]) -> None:
        """Write ``batches`` at the end, all or none; raises ``OSError`` if the disk refuses.

        A write that fails part-way (a full disk) is cut back off, so the file only ever
        holds whole records: a torn one would make every record after it unreadable.
        """
        file = self._open()
        end = file.seek(0, os.SEEK_END)
        try:
            _write_all(file, b"".join(map(_record, batches)))
        except OSError:
            with contextlib.suppress(OSError):  # the error that matters is the write's
                os.ftruncate(file.fileno(), end)
            raise
        self.pending += len(batches)
        self.pending_events += sum(b.events for b in batches)

    def append_while_it_fits(self, batches: list[OutgoingBatch]) -> int:
        """Append ``batches`` one by one until the disk refuses one; how many were written."""
        for written, batch in enumerate(batches):
            try:
                self.append([batch])
            except OSError:
                return written
        return len(batches)

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
        """Put ``front`` before the unread records (at exit: memory goes back to disk first).

        The new spool is written beside the old one and takes its place only once whole:
        a disk that fills up meanwhile raises ``OSError`` and leaves the spool as it was,
        rather than costing what it held (reading it all first had emptied the file).
        """
        file = self._open()
        file.seek(self._read_offset)
        rest = _read_all(file)
        hidden = self.folder / f".{self.path.name}.new"
        new = hidden.open("w+b", buffering=0)
        try:
            fcntl.flock(new, fcntl.LOCK_EX | fcntl.LOCK_NB)  # before its name is one adoption looks at
            _write_all(new, b"".join(map(_record, front + rest)))
        except OSError:
            new.close()
            hidden.unlink(missing_ok=True)
            raise
        hidden.rename(self.path)
        file.close()
        self._file, self._read_offset = new, 0
        self.pending = len(front) + len(rest)
        self.pending_events = sum(b.events for b in front + rest)

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
                # In seq order: a process whose disk was too full to rewrite its spool at exit
                # put what it still held in memory (its oldest batches) after the rest.
                batches = sorted(_read_all(file), key=_replay_order)
                if batches:
                    self.append(batches)
                    self.sync()
                orphan.unlink()
                adopted += len(batches)
        return adopted


def _record(batch: OutgoingBatch) -> bytes:
    f = batch.fields
    record = msgpack.packb([batch.stream, batch.events, f["v"], f["r"], f["p"], f["q"], f["b"]], use_bin_type=True)
    return _LENGTH.pack(len(record)) + record


def _write_all(file: BinaryIO, data: bytes) -> None:
    """Write all of ``data`` to an unbuffered file (a write may take only part of it)."""
    view = memoryview(data)
    while view:
        view = view[file.write(view) :]


def _replay_order(batch: OutgoingBatch) -> tuple[str, str, int]:
    """Batches of one producer and run in seq order (the collector skips a seq below one it applied)."""
    return (batch.fields["p"], batch.fields["r"], batch.fields["q"])


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
