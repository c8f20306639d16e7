"""The archive's file set for one run, and its digest.

Under ``<prefix>/<workspace>/runs/<run_id>/`` in the object store:

    series.parquet    one row per segment of each metric (:mod:`.columns`): name,
                      kind, count, first/last step, min/max/last value, and the
                      steps, values and times columns, each compressed by pcodec
                      (text values: a zlib'd msgpack list)
    output.parquet    the output stream's entries: id, stream, lines, time
    record.msgpack.z  the rest of the record (meta, tags, properties, metric kinds
                      and counts, tables' and images' items, files, children, seqs),
                      zlib'd msgpack
    manifest.json     written last: each file's size and sha256, the points, and the
                      record's digest (below)

A file set counts only with its manifest, and only if every file matches it: so a
crash while writing leaves no archive that a reader would take.  The *digest* is a
sha256 of the record's content in decoded form (every point's step, value and time,
and every other field): computed from the Redis record before writing and from the
files read back after, the two agreeing is what lets the record's keys go.
"""

from __future__ import annotations

import hashlib
import io
import json
import zlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, NamedTuple

import msgpack
import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.parquet as pq
from pcodec import ChunkConfig, standalone

from runstream.archive.columns import DTYPES, Segment, segments
from runstream.archive.snapshot import OutputEntry, RunSnapshot

__all__ = [
    "FORMAT",
    "MANIFEST",
    "ArchiveError",
    "Record",
    "Series",
    "decode",
    "digest",
    "encode",
    "from_snapshot",
    "manifest_of",
    "run_folder",
]

FORMAT: Final = 1
MANIFEST: Final = "manifest.json"
_SERIES, _OUTPUT, _REST = "series.parquet", "output.parquet", "record.msgpack.z"
_PCO: Final = ChunkConfig()


class ArchiveError(Exception):
    """An archive that is missing, incomplete or does not match its manifest."""


@dataclass
class Record:
    """A run's record in the archive's form: series as segments, the rest as Redis has it."""

    run_id: str
    meta: dict[str, str]
    tags: dict[str, str] = field(default_factory=dict)
    properties: dict[str, str] = field(default_factory=dict)
    kinds: dict[str, str] = field(default_factory=dict)
    counts: dict[str, str] = field(default_factory=dict)
    series: Mapping[str, list[Segment]] = field(default_factory=dict)  # decoded: a Series
    items: dict[str, list[bytes]] = field(default_factory=dict)
    files: dict[str, bytes] = field(default_factory=dict)
    children: list[str] = field(default_factory=list)
    applied: dict[str, str] = field(default_factory=dict)
    output: list[OutputEntry] = field(default_factory=list)

    @property
    def points(self) -> int:
        if isinstance(self.series, Series):  # counted in the table: nothing decoded
            return self.series.points
        return sum(len(s) for segs in self.series.values() for s in segs)

    def numbers(self, name: str) -> Sequence[Points | Segment]:
        """The metric's steps and values, segment by segment, as a chart reads them (from an
        archive's file set, without decoding the times it does not show)."""
        if isinstance(self.series, Series):
            return self.series.numbers(name)
        return self.series.get(name, [])


def run_folder(prefix: str, workspace: str, run_id: str) -> str:
    """Where a run's file set lives in the store (run ids are names, never paths: keys.check_run_id)."""
    return f"{prefix}/{workspace}/runs/{run_id}/"


def from_snapshot(snapshot: RunSnapshot) -> Record:
    return Record(
        snapshot.run_id,
        dict(snapshot.meta),
        tags=snapshot.tags,
        properties=snapshot.properties,
        kinds=snapshot.kinds,
        counts=snapshot.counts,
        series={name: segments(parts) for name, parts in snapshot.series.items()},
        items=snapshot.items,
        files=snapshot.files,
        children=snapshot.children,
        applied=snapshot.applied,
        output=snapshot.output,
    )


def _rest(record: Record) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "run_id": record.run_id,
        "meta": record.meta,
        "tags": record.tags,
        "properties": record.properties,
        "kinds": record.kinds,
        "counts": record.counts,
        "items": record.items,
        "files": record.files,
        "children": record.children,
        "applied": record.applied,
    }


def digest(record: Record) -> str:
    """The sha256 of the record's content, the same for a record and its archive's read-back."""
    h = hashlib.sha256(msgpack.packb(_rest(record), use_bin_type=True))
    h.update(msgpack.packb(record.output, use_bin_type=True))
    for name in sorted(record.series):
        h.update(name.encode() + b"\0")
        for s in record.series[name]:
            h.update(s.kind + (b"u" if s.unsigned else b"s"))
            h.update(s.steps.astype("<i8").tobytes())
            h.update(s.times.astype("<f8").tobytes())
            if isinstance(s.values, list):
                h.update(msgpack.packb(s.values, use_bin_type=True))
            else:
                h.update(np.ascontiguousarray(s.values, DTYPES[s.kind]).tobytes())
    return h.hexdigest()


def _pco(array: np.ndarray[Any, Any]) -> bytes:
    return bytes(standalone.simple_compress(np.ascontiguousarray(array), _PCO))


def _unpco(data: bytes, dtype: str, n: int) -> np.ndarray[Any, Any]:
    if n == 0:
        return np.empty(0, dtype)
    out = standalone.simple_decompress(data)
    if out is None or len(out) != n:
        raise ArchiveError(f"a column decoded to {0 if out is None else len(out)} values, not {n}")
    return np.asarray(out)


def _summary(s: Segment) -> tuple[float | None, float | None, float | None]:
    if isinstance(s.values, list) or len(s) == 0:
        return None, None, None
    values = s.values.astype(np.float64)
    finite = values[np.isfinite(values)]
    low, high = (float(finite.min()), float(finite.max())) if len(finite) else (None, None)
    return low, high, float(values[-1])


_SERIES_SCHEMA: Final = pa.schema(
    [
        ("name", pa.string()),
        ("kind", pa.string()),
        ("unsigned", pa.bool_()),
        ("n", pa.int64()),
        ("first_step", pa.int64()),
        ("last_step", pa.int64()),
        ("min", pa.float64()),
        ("max", pa.float64()),
        ("last", pa.float64()),
        ("steps", pa.binary()),
        ("values", pa.binary()),
        ("times", pa.binary()),
    ]
)


def _series_table(record: Record) -> pa.Table:
    rows: dict[str, list[Any]] = {name: [] for name in _SERIES_SCHEMA.names}
    for name in sorted(record.series):
        for s in record.series[name]:
            low, high, last = _summary(s)
            rows["name"].append(name)
            rows["kind"].append(s.kind.decode())
            rows["unsigned"].append(s.unsigned)
            rows["n"].append(len(s))
            rows["first_step"].append(int(s.steps[0]) if len(s) else None)
            rows["last_step"].append(int(s.steps[-1]) if len(s) else None)
            rows["min"].append(low)
            rows["max"].append(high)
            rows["last"].append(last)
            rows["steps"].append(_pco(s.steps))
            rows["times"].append(_pco(s.times))
            if isinstance(s.values, list):
                rows["values"].append(zlib.compress(msgpack.packb(s.values, use_bin_type=True)))
            else:  # booleans go as int64 (pcodec takes no 8-bit types; 0/1 cost nothing either way)
                rows["values"].append(_pco(s.values.astype(np.int64) if s.kind == b"?" else s.values))
    return pa.table(rows, schema=_SERIES_SCHEMA)


def _parquet(table: pa.Table) -> bytes:
    sink = io.BytesIO()
    pq.write_table(table, sink, compression="zstd")
    return sink.getvalue()


def encode(record: Record) -> dict[str, bytes]:
    """The file set's objects by file name, the manifest included."""
    output = pa.table(
        {
            "id": [e[0] for e in record.output],
            "stream": [e[1] for e in record.output],
            "lines": [e[2] for e in record.output],
            "time": [e[3] for e in record.output],
        },
        schema=pa.schema([("id", pa.string()), ("stream", pa.string()), ("lines", pa.binary()), ("time", pa.string())]),
    )
    objects = {
        _SERIES: _parquet(_series_table(record)),
        _OUTPUT: _parquet(output),
        _REST: zlib.compress(msgpack.packb(_rest(record), use_bin_type=True)),
    }
    manifest = {
        "format": FORMAT,
        "run_id": record.run_id,
        "digest": digest(record),
        "points": record.points,
        "files": {
            name: {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()} for name, data in objects.items()
        },
    }
    objects[MANIFEST] = json.dumps(manifest, indent=1, sort_keys=True).encode()
    return objects


def manifest_of(objects: dict[str, bytes]) -> dict[str, Any]:
    """The manifest, once every file it names is there and matches it."""
    try:
        manifest: dict[str, Any] = json.loads(objects[MANIFEST])
    except (KeyError, ValueError) as exc:
        raise ArchiveError(f"no readable manifest ({exc})") from None
    if manifest.get("format") != FORMAT:
        raise ArchiveError(f"archive format {manifest.get('format')!r} is not {FORMAT}")
    for name, expected in manifest["files"].items():
        data = objects.get(name)
        if data is None:
            raise ArchiveError(f"{name} is missing")
        if len(data) != expected["bytes"] or hashlib.sha256(data).hexdigest() != expected["sha256"]:
            raise ArchiveError(f"{name} does not match the manifest")
    return manifest


def decode(objects: dict[str, bytes]) -> Record:
    """The record a verified file set holds (:class:`ArchiveError` if it is not whole); its
    series are decoded a metric at a time, as they are read (:class:`Series`)."""
    manifest_of(objects)
    rest = msgpack.unpackb(zlib.decompress(objects[_REST]), raw=False)
    record = Record(
        rest["run_id"],
        rest["meta"],
        tags=rest["tags"],
        properties=rest["properties"],
        kinds=rest["kinds"],
        counts=rest["counts"],
        items=rest["items"],
        files=rest["files"],
        children=rest["children"],
        applied=rest["applied"],
    )
    out = pq.read_table(pa.BufferReader(objects[_OUTPUT])).to_pydict()
    record.output = list(zip(out["id"], out["stream"], out["lines"], out["time"], strict=True))
    table = pq.read_table(pa.BufferReader(objects[_SERIES])).to_pydict()
    columns: dict[str, list[_Columns]] = {}
    for at, name in enumerate(table["name"]):
        columns.setdefault(name, []).append(
            _Columns(
                table["kind"][at].encode(),
                table["unsigned"][at],
                table["n"][at],
                table["steps"][at],
                table["values"][at],
                table["times"][at],
            )
        )
    record.series = Series(columns)
    return record


@dataclass(frozen=True, slots=True)
class _Columns:
    """One segment as the series table holds it: its columns still compressed."""

    kind: bytes
    unsigned: bool
    n: int
    steps: bytes
    values: bytes
    times: bytes

    def decode(self) -> Segment:
        numbers = self.numbers()
        return Segment(self.kind, self.unsigned, numbers.steps, numbers.values, _unpco(self.times, "<f8", self.n))

    def numbers(self) -> Points:
        values: Any
        if self.kind == b"s":
            values = msgpack.unpackb(zlib.decompress(self.values), raw=False)
        else:
            values = _unpco(self.values, "i8" if self.kind == b"?" else DTYPES[self.kind].str, self.n)
            values = values.astype(DTYPES[self.kind]) if self.kind == b"?" else values
        return Points(self.kind, _unpco(self.steps, "<i8", self.n), values)


class Points(NamedTuple):
    """A segment's steps and values without its times (what a chart reads)."""

    kind: bytes
    steps: npt.NDArray[np.int64]
    values: npt.NDArray[np.generic] | list[str]


class Series(Mapping[str, list[Segment]]):
    """An archived record's series by metric name, each metric's columns decoded on its first
    read and kept: a chart or ``get_metrics`` of one metric does not pay for the run's others
    (a million points a metric decode in about 10 ms).  The files were checked against the
    manifest when read; a column that decodes to the wrong count raises :class:`ArchiveError`."""

    def __init__(self, columns: dict[str, list[_Columns]]) -> None:
        self._columns = columns
        self._decoded: dict[str, list[Segment]] = {}
        self._numbers: dict[str, list[Points]] = {}
        #: The points of every metric, as the table counts them (nothing decoded).
        self.points = sum(c.n for segments in columns.values() for c in segments)

    def __getitem__(self, name: str) -> list[Segment]:
        segments = self._decoded.get(name)
        if segments is None:  # two threads reading it at once both decode it: the same segments
            segments = self._decoded[name] = [c.decode() for c in self._columns[name]]
        return segments

    def numbers(self, name: str) -> Sequence[Points | Segment]:
        """The metric's steps and values: its segments if decoded already, else decoded
        without their times (a third of the decoding) and kept."""
        segments = self._decoded.get(name)
        if segments is not None:
            return segments
        numbers = self._numbers.get(name)
        if numbers is None:
            numbers = self._numbers[name] = [c.numbers() for c in self._columns.get(name, [])]
        return numbers

    def __iter__(self) -> Iterator[str]:
        return iter(self._columns)

    def __len__(self) -> int:
        return len(self._columns)
