"""The archive's file set for one run, and its digest.

Under ``<prefix>/<workspace>/runs/<run_id>/`` in the object store:

    series.parquet    one row per segment of each metric (:mod:`.columns`): name,
                      kind, count, first/last step, min/max/last value, and the
                      steps, values and times columns, each compressed by pcodec
                      (text values: a zlib'd msgpack list); a metric's rows in one
                      row group, every page with its CRC32, so that a reader can
                      fetch one metric by range (:mod:`.series_file`)
    output.parquet    the output stream's entries: id, stream, lines, time
    record.msgpack.z  the rest of the record (meta, tags, properties, metric kinds
                      and counts, tables' and images' items, files, children, seqs),
                      zlib'd msgpack
    manifest.json     written last: each file's size and sha256, the points, and the
                      record's digest (below)

A file set counts only with its manifest, and only if every file matches it: so a
crash while writing leaves no archive that a reader would take (a reader that opens
the series file by ranges checks its size, then each page it reads by its CRC).  The *digest* is a
sha256 of the record's content in decoded form (every point's step, value and time,
and every other field): computed from the Redis record before writing and from the
files read back after, the two agreeing is what lets the record's keys go.
"""

from __future__ import annotations

import hashlib
import io
import json
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import msgpack
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from pcodec import ChunkConfig, standalone

from runstream.archive.columns import DTYPES, Segment, segments
from runstream.archive.series_file import GROUPS_KEY, ArchiveError, Points, Series, open_series
from runstream.archive.snapshot import OutputEntry, RunSnapshot

__all__ = [
    "FORMAT",
    "MANIFEST",
    "OUTPUT",
    "REST",
    "SERIES",
    "ArchiveError",
    "Record",
    "Series",
    "check",
    "decode",
    "digest",
    "encode",
    "from_snapshot",
    "manifest_of",
    "read_manifest",
    "record_of",
    "run_folder",
]

FORMAT: Final = 1
MANIFEST: Final = "manifest.json"
SERIES, OUTPUT, REST = "series.parquet", "output.parquet", "record.msgpack.z"
_PCO: Final = ChunkConfig()


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

    async def numbers(self, name: str) -> Sequence[Points | Segment]:
        """The metric's steps and values, segment by segment, as a chart reads them (from an
        archive's file set, read in a worker thread, without the times it does not show)."""
        if isinstance(self.series, Series):
            return await self.series.fetch(name)
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


#: A metric of at least this many points has a row group of its own; smaller ones share one
#: up to about as many points (a chart of one reads its group, not the file).
GROUP_POINTS: Final = 65_536


def _series_rows(name: str, segs: Sequence[Segment], rows: dict[str, list[Any]]) -> None:
    for s in segs:
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


def _series_file(record: Record) -> bytes:
    """series.parquet: each metric's segments in one row group (:mod:`.series_file`), every
    page with its CRC32, the groups named in the file's metadata."""
    groups: list[list[str]] = []
    points = 0
    for name in sorted(record.series):
        n = sum(len(s) for s in record.series[name])
        if not groups or points >= GROUP_POINTS or n >= GROUP_POINTS:
            groups.append([])
            points = 0
        groups[-1].append(name)
        points += n
    index = {name: [at, sum(len(s) for s in record.series[name])] for at, names in enumerate(groups) for name in names}
    schema = _SERIES_SCHEMA.with_metadata({GROUPS_KEY: json.dumps(index, separators=(",", ":"))})
    sink = io.BytesIO()
    # zstd takes another ~7% off pcodec's columns (the times' runs); a dictionary takes nothing.
    with pq.ParquetWriter(
        sink, schema, compression="zstd", use_dictionary=["name", "kind"], write_page_checksum=True
    ) as writer:
        for names in groups:
            rows: dict[str, list[Any]] = {name: [] for name in schema.names}
            for name in names:
                _series_rows(name, record.series[name], rows)
            writer.write_table(pa.table(rows, schema=schema), row_group_size=max(1, len(rows["name"])))
    return sink.getvalue()


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
        SERIES: _series_file(record),
        OUTPUT: _parquet(output),
        REST: zlib.compress(msgpack.packb(_rest(record), use_bin_type=True)),
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


def read_manifest(data: bytes | None) -> dict[str, Any]:
    """The manifest's content, if it is one of this format."""
    try:
        manifest: dict[str, Any] = json.loads(data or b"")
    except ValueError as exc:
        raise ArchiveError(f"no readable manifest ({exc})") from None
    if manifest.get("format") != FORMAT:
        raise ArchiveError(f"archive format {manifest.get('format')!r} is not {FORMAT}")
    return manifest


def check(manifest: dict[str, Any], name: str, data: bytes | None) -> bytes:
    """``data``, the file ``name``, if it is there and matches the manifest."""
    expected = manifest["files"][name]
    if data is None:
        raise ArchiveError(f"{name} is missing")
    if len(data) != expected["bytes"] or hashlib.sha256(data).hexdigest() != expected["sha256"]:
        raise ArchiveError(f"{name} does not match the manifest")
    return data


def manifest_of(objects: dict[str, bytes]) -> dict[str, Any]:
    """The manifest, once every file it names is there and matches it."""
    manifest = read_manifest(objects.get(MANIFEST))
    for name in manifest["files"]:
        check(manifest, name, objects.get(name))
    return manifest


def decode(objects: dict[str, bytes]) -> Record:
    """The record a verified file set holds (:class:`ArchiveError` if it is not whole); its
    series are decoded a metric at a time, as they are read (:class:`Series`)."""
    manifest_of(objects)
    return record_of(objects[REST], objects[OUTPUT], open_series(pa.BufferReader(objects[SERIES])))


def record_of(rest_file: bytes, output_file: bytes, series: Series) -> Record:
    """The record of a file set's files (checked already)."""
    rest = msgpack.unpackb(zlib.decompress(rest_file), raw=False)
    out = pq.read_table(pa.BufferReader(output_file)).to_pydict()
    return Record(
        rest["run_id"],
        rest["meta"],
        tags=rest["tags"],
        properties=rest["properties"],
        kinds=rest["kinds"],
        counts=rest["counts"],
        series=series,
        items=rest["items"],
        files=rest["files"],
        children=rest["children"],
        applied=rest["applied"],
        output=list(zip(out["id"], out["stream"], out["lines"], out["time"], strict=True)),
    )
