"""A packed series as columns, and back: the archive's numeric form of a metric.

The record packs a series as chunks (:mod:`runstream.collector.records`): compact for
appending, but a header per batch and 8 bytes a value.  The archive keeps it as
*segments*, one per run of consecutive chunks whose values have one type: a column of
steps, one of values and one of each point's time, each compressed by pcodec, which
takes a smooth curve's float64 values to well under a byte each, consecutive steps
and batch times to almost nothing.

Both directions are array work, no Python per point: :func:`segments` decodes the
record's chunks straight into numpy arrays, and :func:`repack` builds one merged chunk
per segment (the record's own format, with its time table), so that every reader of
packed series reads an archived one unchanged.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

import msgpack
import numpy as np
import numpy.typing as npt

from runstream.collector.records import HEADER, MERGED, STEP_BYTES, iter_chunks

__all__ = ["Segment", "repack", "segments"]

#: Value dtypes by chunk kind ("s", text, is kept as a list).
DTYPES: Final[dict[bytes, np.dtype[Any]]] = {b"d": np.dtype("<f8"), b"q": np.dtype("<i8"), b"?": np.dtype("u1")}
_PLAIN: Final = {merged: plain for plain, merged in MERGED.items()}
#: A time table entry counts at most this many points, and its delta fits an int32.
_MOST_POINTS: Final = 0xFFFF
_INT32: Final = (-(2**31), 2**31 - 1)


@dataclass(frozen=True, slots=True)
class Segment:
    """Consecutive points of one value type: ``kind`` as a chunk's (``d``, ``q``, ``?``,
    ``s``), ``unsigned`` if its steps are above 2**63 - 1 (kept as int64 bit patterns)."""

    kind: bytes
    unsigned: bool
    steps: npt.NDArray[np.int64]
    values: npt.NDArray[np.generic] | list[str]
    times: npt.NDArray[np.float64]

    def __len__(self) -> int:
        return len(self.steps)


def segments(parts: Sequence[bytes]) -> list[Segment]:
    """The series stored as ``parts`` (the list's items, then the tail), as segments."""
    out: list[Segment] = []
    group: list[tuple[bytes, tuple[bytes, bytes, int, float, int, int, int]]] = []
    for part in parts:
        for chunk in iter_chunks(part):
            if group and _segment_key(chunk) != _segment_key(group[0][1]):
                out.append(_decode(group))
                group = []
            group.append((part, chunk))
    if group:
        out.append(_decode(group))
    return out


def _segment_key(chunk: tuple[bytes, bytes, int, float, int, int, int]) -> tuple[bytes, bool]:
    kind, mode = chunk[0], chunk[1]
    return kind, _PLAIN.get(mode, mode) == b"u"


def _decode(group: list[tuple[bytes, tuple[bytes, bytes, int, float, int, int, int]]]) -> Segment:
    kind, unsigned = _segment_key(group[0][1])
    total = sum(chunk[2] for _, chunk in group)
    steps = np.empty(total, np.int64)
    times = np.empty(total, np.float64)
    values: npt.NDArray[np.generic] | list[str] = [] if kind == b"s" else np.empty(total, DTYPES[kind])
    at = 0
    for part, (_, mode, n, ts, step0, stride, offset) in group:
        end = at + n
        plain = _PLAIN.get(mode, mode)
        if plain == b"a":
            steps[at:end] = step0 + stride * np.arange(n, dtype=np.int64)
        elif plain == b"d":
            np.cumsum(np.frombuffer(part, "<i4", n, offset), dtype=np.int64, out=steps[at:end])
            steps[at:end] += step0
        else:  # int64 steps, or uint64 ones (their bit patterns)
            steps[at:end] = np.frombuffer(part, "<i8", n, offset)
        body = offset + STEP_BYTES[mode] * n
        if isinstance(values, list):
            (length,) = struct.unpack_from("<I", part, body)
            values.extend(msgpack.unpackb(part[body + 4 : body + 4 + length], raw=False))
            table = body + 4 + length
        else:
            values[at:end] = np.frombuffer(part, DTYPES[kind], n, body)
            table = body + DTYPES[kind].itemsize * n
        if mode in _PLAIN:  # merged: each source chunk's points and time, from the time table
            times[at:end] = _table_times(part, table, ts)
        else:
            times[at:end] = ts
        at = end
    return Segment(kind, unsigned, steps, values, times)


def _table_times(part: bytes, offset: int, ts: float) -> npt.NDArray[np.float64]:
    (m,) = struct.unpack_from("<I", part, offset)
    table = np.frombuffer(part, np.dtype([("n", "<u2"), ("delta", "<i4")]), m, offset + 4)
    first = np.array([ts], np.float64).view(np.uint64)
    # The deltas add to the bit pattern, wrapping as unsigned 64-bit integers do.
    bits = first + np.cumsum(table["delta"].astype(np.int64)).astype(np.uint64)
    return np.repeat(bits.view(np.float64), table["n"].astype(np.intp))


def repack(segment: Segment) -> list[bytes]:
    """``segment`` in the record's packed format: merged chunks with int64 steps (as many
    as the time table needs: a new chunk where two times are too far apart for its
    int32 deltas)."""
    n = len(segment)
    if n == 0:
        return []
    change = np.flatnonzero(segment.times[1:].view(np.uint64) != segment.times[:-1].view(np.uint64)) + 1
    starts = np.concatenate(([0], change))  # the first point of each run of one time
    counts = np.diff(np.concatenate((starts, [n])))
    bits = segment.times[starts].view(np.uint64)
    deltas = np.diff(bits).view(np.int64) if len(bits) > 1 else np.empty(0, np.int64)
    far = np.flatnonzero((deltas < _INT32[0]) | (deltas > _INT32[1])) + 1  # runs a new chunk starts at
    chunks: list[bytes] = []
    for first_run, last_run in zip(np.concatenate(([0], far)), np.concatenate((far, [len(starts)])), strict=True):
        chunks.append(_merged_chunk(segment, starts, counts, bits, int(first_run), int(last_run)))
    return chunks


def _merged_chunk(
    segment: Segment,
    starts: npt.NDArray[np.intp],
    counts: npt.NDArray[np.intp],
    bits: npt.NDArray[np.uint64],
    first_run: int,
    last_run: int,
) -> bytes:
    lo = int(starts[first_run])
    hi = int(starts[last_run]) if last_run < len(starts) else len(segment)
    runs = counts[first_run:last_run]
    run_bits = bits[first_run:last_run]
    # A run of more points than an entry counts is split into entries, the later ones 0 apart.
    pieces = np.maximum(1, -(-runs // _MOST_POINTS))
    entry_points = np.full(int(pieces.sum()), _MOST_POINTS, np.int64)
    ends = np.cumsum(pieces) - 1
    entry_points[ends] = runs - (pieces - 1) * _MOST_POINTS
    entry_deltas = np.zeros(len(entry_points), np.int64)
    firsts = ends - (pieces - 1)
    entry_deltas[firsts[1:]] = np.diff(run_bits).view(np.int64)
    table = np.empty(len(entry_points), np.dtype([("n", "<u2"), ("delta", "<i4")]))
    table["n"] = entry_points
    table["delta"] = entry_deltas
    ts = float(run_bits[:1].view(np.float64)[0])
    mode = b"U" if segment.unsigned else b"Q"
    steps = segment.steps[lo:hi].astype("<i8").tobytes()
    if isinstance(segment.values, list):
        packed = msgpack.packb(segment.values[lo:hi], use_bin_type=True)
        value_bytes = struct.pack("<I", len(packed)) + packed
    else:
        value_bytes = np.ascontiguousarray(segment.values[lo:hi], DTYPES[segment.kind]).tobytes()
    header = HEADER.pack(segment.kind, mode, hi - lo, ts, 0, 0)
    return header + steps + value_bytes + struct.pack("<I", len(table)) + table.tobytes()
