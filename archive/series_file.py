"""An archive's series file read a metric at a time, from memory or by ranges of the store.

``series.parquet`` holds one row per segment (:mod:`.fileset`), its rows grouped so that
a metric's segments lie in one row group: a metric of many points has a group of its
own, metrics of few share one, and the file's metadata (``runstream.metrics``) names
each metric's group and points.  A chart of one metric of a large run then reads the
file's footer and that group's step and value columns, not the run's other metrics nor
any point's time: from a local folder or an S3-compatible store alike, by range
(:class:`RangedFile`).

What is read is checked as it is read: every page of the file carries its CRC32, which
the reader verifies; each column decodes to the count the row says, or
:class:`ArchiveError`; and a file that changed since it was opened (a run archived again
at the same place) fails its ranged reads' ETag precondition.  A file set written before
the groups existed (no ``runstream.metrics``) is read whole and checked against its
manifest, as before.
"""

from __future__ import annotations

import asyncio
import io
import json
import threading
import zlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, NamedTuple

import msgpack
import numpy as np
import numpy.typing as npt
import obstore
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from obstore.exceptions import BaseError as StoreError
from obstore.store import ObjectStore
from pcodec import standalone

from runstream.archive.columns import DTYPES, Segment

__all__ = ["GROUPS_KEY", "ArchiveError", "Points", "RangedFile", "Series", "indexed_series", "open_series"]

#: The file metadata key of each metric's row group and points: ``{name: [group, points]}``.
GROUPS_KEY: Final = b"runstream.metrics"
_NUMBERS: Final = ["name", "kind", "unsigned", "n", "steps", "values"]


class ArchiveError(Exception):
    """An archive that is missing, incomplete or does not match its manifest."""


def unpco(data: bytes, dtype: str, n: int) -> np.ndarray[Any, Any]:
    """A pcodec column of ``n`` values (:class:`ArchiveError` if it holds another count)."""
    if n == 0:
        return np.empty(0, dtype)
    out = standalone.simple_decompress(data)
    if out is None or len(out) != n:
        raise ArchiveError(f"a column decoded to {0 if out is None else len(out)} values, not {n}")
    return np.asarray(out)


class Points(NamedTuple):
    """A segment's steps and values without its times (what a chart reads)."""

    kind: bytes
    steps: npt.NDArray[np.int64]
    values: npt.NDArray[np.generic] | list[str]


@dataclass(frozen=True, slots=True)
class _Columns:
    """One segment as the series file holds it: its columns still compressed (``times``
    None when it was not read)."""

    kind: bytes
    unsigned: bool
    n: int
    steps: bytes
    values: bytes
    times: bytes | None

    def decode(self) -> Segment:
        numbers = self.numbers()
        times = unpco(self.times or b"", "<f8", self.n)  # read without them: ArchiveError
        return Segment(self.kind, self.unsigned, numbers.steps, numbers.values, times)

    def numbers(self) -> Points:
        values: Any
        if self.kind == b"s":
            values = msgpack.unpackb(zlib.decompress(self.values), raw=False)
        else:
            values = unpco(self.values, "i8" if self.kind == b"?" else DTYPES[self.kind].str, self.n)
            values = values.astype(DTYPES[self.kind]) if self.kind == b"?" else values
        return Points(self.kind, unpco(self.steps, "<i8", self.n), values)


class RangedFile(io.RawIOBase):
    """An object of a store as a read-only file that fetches the ranges it is asked for
    (what pyarrow needs to read a Parquet file's footer, then the columns it wants).  Every
    read asks for the version opened (its ETag): a file replaced meanwhile raises."""

    def __init__(self, store: ObjectStore, path: str) -> None:
        super().__init__()
        self._store, self._path = store, path
        try:
            head = obstore.head(store, path)
        except (StoreError, FileNotFoundError) as exc:
            raise ArchiveError(f"{path}: {exc}") from None
        self.size: int = head["size"]
        self._etag = head["e_tag"]
        self._at = 0
        #: Bytes fetched so far (what a read costs the store).
        self.fetched = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._at

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._at, io.SEEK_END: self.size}[whence]
        self._at = max(0, base + offset)
        return self._at

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        end = min(self.size, self._at + len(view))
        if end <= self._at:
            return 0
        options: dict[str, Any] = {"range": (self._at, end)}
        if self._etag:
            options["if_match"] = self._etag
        try:
            data = obstore.get(self._store, self._path, options=options).bytes()  # type: ignore[arg-type]
        except (StoreError, FileNotFoundError) as exc:
            raise OSError(f"{self._path} changed or went while read: {exc}") from None
        n = len(data)
        view[:n] = memoryview(data)
        self._at += n
        self.fetched += n
        return n


def _parquet_file(source: pa.NativeFile | RangedFile) -> pq.ParquetFile:
    try:
        return pq.ParquetFile(source, page_checksum_verification=True)
    except (OSError, pa.ArrowException) as exc:
        raise ArchiveError(f"series file: {exc}") from None


def _indexed(file: pq.ParquetFile) -> Series | None:
    metadata = file.schema_arrow.metadata or {}
    if GROUPS_KEY not in metadata:
        return None
    index: dict[str, list[int]] = json.loads(metadata[GROUPS_KEY])
    return Series(file, {name: [group] for name, (group, _) in index.items()}, {n: p for n, (_, p) in index.items()})


def indexed_series(source: RangedFile) -> Series | None:
    """The series of the Parquet file ``source`` (its footer read, nothing else yet); None
    if it names no metric's group (an older file set: read it whole, :func:`open_series`)."""
    return _indexed(_parquet_file(source))


def open_series(source: pa.NativeFile) -> Series:
    """The series of the Parquet file ``source``, a file in memory."""
    file = _parquet_file(source)
    if (series := _indexed(file)) is not None:
        return series
    groups: dict[str, list[int]] = {}
    points: dict[str, int] = {}
    for group in range(file.num_row_groups):  # an older file set: its name column says
        rows = file.read_row_group(group, columns=["name", "n"]).to_pydict()
        for name, n in zip(rows["name"], rows["n"], strict=True):
            if group not in groups.setdefault(name, []):
                groups[name].append(group)
            points[name] = points.get(name, 0) + n
    return Series(file, groups, points)


class Series(Mapping[str, list[Segment]]):
    """An archived record's series by metric name, each metric read and decoded on its first
    read and kept: a chart or ``get_metrics`` of one metric does not pay for the run's
    others (a million points a metric decode in about 10 ms).  Reading may block on the
    store: async code calls :meth:`fetch` first, which reads in a worker thread."""

    def __init__(self, file: pq.ParquetFile, groups: dict[str, list[int]], points: dict[str, int]) -> None:
        self._file = file
        self._groups = groups
        self._lock = threading.Lock()  # one reader of the file at a time (its position is shared)
        self._decoded: dict[str, list[Segment]] = {}
        self._numbers: dict[str, list[Points]] = {}
        #: The points of every metric, as the file's index counts them (nothing decoded).
        self.points = sum(points.values())

    def _columns(self, name: str, times: bool) -> list[_Columns]:
        wanted = [*_NUMBERS, "times"] if times else _NUMBERS
        try:
            with self._lock:
                table = self._file.read_row_groups(self._groups[name], columns=wanted)
        except (OSError, pa.ArrowException) as exc:
            raise ArchiveError(f"metric {name!r}: {exc}") from None
        rows = table.filter(pc.equal(table["name"], name)).to_pydict()
        return [
            _Columns(kind.encode(), unsigned, n, steps, values, rows["times"][at] if times else None)
            for at, (kind, unsigned, n, steps, values) in enumerate(
                zip(rows["kind"], rows["unsigned"], rows["n"], rows["steps"], rows["values"], strict=True)
            )
        ]

    def __getitem__(self, name: str) -> list[Segment]:
        segments = self._decoded.get(name)
        if segments is None:  # two threads reading it at once both decode it: the same segments
            segments = self._decoded[name] = [c.decode() for c in self._columns(name, times=True)]
        return segments

    def numbers(self, name: str) -> Sequence[Points | Segment]:
        """The metric's steps and values: its segments if decoded already, else read and
        decoded without their times (a third of the work) and kept."""
        segments = self._decoded.get(name)
        if segments is not None:
            return segments
        numbers = self._numbers.get(name)
        if numbers is None:
            found = self._columns(name, times=False) if name in self._groups else []
            numbers = self._numbers[name] = [c.numbers() for c in found]
        return numbers

    async def fetch(self, name: str) -> Sequence[Points | Segment]:
        """:meth:`numbers`, read in a worker thread unless read already."""
        if name in self._decoded or name in self._numbers or name not in self._groups:
            return self.numbers(name)
        return await asyncio.to_thread(self.numbers, name)

    def __contains__(self, name: object) -> bool:
        return name in self._groups

    def __iter__(self) -> Iterator[str]:
        return iter(self._groups)

    def __len__(self) -> int:
        return len(self._groups)
