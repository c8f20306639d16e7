"""The run record: what the collector writes for a run, and the packed series format.

Everything about one run sits in its Redis Cluster slot (keys from
:class:`runstream.keys.Keys`):

    meta       hash: experiment, display_name, parent_id, status, created_at,
               started_at, ended_at, error, last_heartbeat
    tags       hash: tag -> value           props   hash: property -> value (write-once)
    metrics    hash: metric name -> kind (see :data:`KINDS`)
    counts     hash: metric name -> points (series), rows (tables) or images
    m:<name>   list: sealed runs of chunks of the metric's packed series (below)
    t:<name>   string: the newest chunks, sealed into m:<name> at 64 KiB
    v:<name>   list: msgpack items of tables ({column: [values]}) or image file names
    files      hash: file name -> msgpack {"size", "sha256", "ts"}
    children   set: ids of child runs
    seqs       hash: producer id -> last seq applied
    live       capped stream of compact updates (see :mod:`runstream.collector.aggregate`)
    out        stream of captured output, one entry per chunk: fields s (stdout|stderr),
               l (the chunk's lines joined by newlines), t (time)

A packed series is the concatenation of the items of ``m:<name>`` and then
``t:<name>``; each is a run of chunks, one chunk per metric per applied batch:

    header  <c c I d q q>  kind, step mode, n, ts, step0, stride   (30 bytes)
    steps   mode "a": none (step i = step0 + i * stride)
            mode "d": n int32 deltas (step i = step i-1 + delta, step -1 = step0)
            mode "q": n int64 steps
            mode "u": n uint64 steps (a step above 2**63 - 1; step0 is 0)
    values  kind "d": n float64 | "q": n int64 | "?": n bytes 0/1
            kind "s": uint32 length + msgpack array of n str

So a float point costs 8 bytes plus its share of a 30-byte header: under 9 bytes
in batched logging, where the budget is 16.  Chunks keep the logging order; a
series whose values change type (int, then float) simply has chunks of both kinds.

Merged chunks.  A training loop logs a point per metric per step, so a batch brings
a few points per metric, and a chunk of a few points pays the whole header (a point
a second: 38 bytes a float point).  When a tail is sealed, ``apply.lua`` merges its
runs of joinable chunks into one (the rules: :mod:`runstream.collector.merging`).  A
merged chunk has the step mode in upper case ("A", "D", "Q", "U": the steps as the
lower-case mode), its header's ts is its first source chunk's, and a time table
follows the values:

    times   uint32 m, then m times <H i>: the points of source chunk j, and its ts
            minus source chunk j-1's (j = 0: the header's ts), in float64 last
            places (the difference of the IEEE 754 bit patterns): exact, and an int32
            spans about ±512 s at today's epoch times

So each point keeps its chunk's exact time, and a merged float point costs 8 bytes
plus 6 per source chunk's share and 34 per merged chunk's: about 8.6 bytes in paced
logging (10 points a chunk), 14 at a point a chunk (38 unmerged).  Old data (lower
case modes only) reads as before.
"""

from __future__ import annotations

import struct
from array import array
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import Final, Literal, cast

import msgpack

from runstream.events import Value

__all__ = [
    "HEADER",
    "KINDS",
    "MERGED",
    "STEP_BYTES",
    "TIMES",
    "Series",
    "iter_chunks",
    "pack_chunk",
    "time_bits",
    "unpack_series",
    "unpack_values",
]

#: How a metric was logged: "series" (only ``log``), "list" (``log_list``, maybe
#: mixed with ``log``: always read as a list), "table" (``log_row``/``log_table``),
#: "image" (``log_image``).
KINDS: Final = ("series", "list", "table", "image")
Kind = Literal["series", "list", "table", "image"]

HEADER: Final = struct.Struct("<ccIdqq")
#: A plain step mode -> its merged one (the same steps, a time table after the values).
MERGED: Final = {b"a": b"A", b"d": b"D", b"q": b"Q", b"u": b"U"}
_PLAIN: Final = {merged: plain for plain, merged in MERGED.items()}
#: Bytes of step data per point, by step mode.
STEP_BYTES: Final = {b"a": 0, b"d": 4, b"q": 8, b"u": 8, b"A": 0, b"D": 4, b"Q": 8, b"U": 8}
#: One entry of a merged chunk's time table: points, ts delta in float64 last places.
TIMES: Final = struct.Struct("<Hi")
_BITS: Final = struct.Struct("<Q")
_FLOAT: Final = struct.Struct("<d")
_INT32: Final = (-(2**31), 2**31 - 1)
_INT64: Final = (-(2**63), 2**63 - 1)


@dataclass(frozen=True, slots=True)
class Series:
    """A metric's points as read back: steps, values and the time of each point."""

    steps: list[int]
    values: list[Value]
    timestamps: list[float]


def _value_kind(values: Sequence[Value]) -> bytes:
    """The chunk kind for values all of one type, else b"" (C-level passes only)."""
    types = set(map(type, values))
    if len(types) != 1:
        return b""
    first = types.pop()
    if first is float:
        return b"d"
    if first is bool:
        return b"?"
    if first is int and _INT64[0] <= min(values) and max(values) <= _INT64[1]:  # type: ignore[operator]  # all ints here
        return b"q"
    if first is str:
        return b"s"
    return b""


def pack_chunk(steps: Sequence[int], values: Sequence[Value], ts: float) -> bytes:
    """Pack points of one type into chunks (values of mixed types give one chunk per run of a type)."""
    kind = _value_kind(values)
    if not kind:  # mixed types in one batch: split into runs of one type
        out, start = [], 0
        for i in range(1, len(values) + 1):
            if i == len(values) or type(values[i]) is not type(values[start]) or _value_kind(values[i : i + 1]) == b"":
                out.append(_pack_one(steps[start:i], values[start:i], ts))
                start = i
        return b"".join(out)
    return _pack_one(steps, values, ts)


def _pack_one(steps: Sequence[int], values: Sequence[Value], ts: float) -> bytes:
    kind = _value_kind(values)
    if not kind:  # a single uint64 above int64: keep it exact as a str-free msgpack chunk
        kind = b"s"
    n = len(values)
    step0 = steps[0]
    top = max(steps[0], steps[-1]) if isinstance(steps, range) else max(steps)
    if top > _INT64[1]:  # steps above int64 (the producer takes uint64 steps)
        mode, step0, stride, step_bytes = b"u", 0, 0, array("Q", steps).tobytes()
    elif isinstance(steps, range) or n == 1:
        mode, stride, step_bytes = b"a", (steps.step if isinstance(steps, range) else 1), b""
    else:
        deltas = [b - a for a, b in pairwise(steps)]
        if len(set(deltas)) == 1:
            mode, stride, step_bytes = b"a", deltas[0], b""
        elif all(_INT32[0] <= d <= _INT32[1] for d in deltas):
            mode, stride, step_bytes = b"d", 0, array("i", [0, *deltas]).tobytes()
        else:
            mode, stride, step_bytes = b"q", 0, array("q", steps).tobytes()
    if kind in (b"d", b"q"):  # all floats, or all int64s: the array takes them as they are
        value_bytes = array(kind.decode(), cast("Sequence[float]", values)).tobytes()
    elif kind == b"?":
        value_bytes = bytes(cast("Sequence[bool]", values))
    else:
        packed = msgpack.packb(list(values), use_bin_type=True)
        value_bytes = struct.pack("<I", len(packed)) + packed
    return HEADER.pack(kind, mode, n, ts, step0, stride) + step_bytes + value_bytes


def iter_chunks(data: bytes) -> Iterator[tuple[bytes, bytes, int, float, int, int, int]]:
    """Each chunk's header fields (kind, step mode, n, ts, step0, stride) and body offset."""
    offset = 0
    while offset < len(data):
        kind, mode, n, ts, step0, stride = HEADER.unpack_from(data, offset)
        yield kind, mode, n, ts, step0, stride, offset + HEADER.size
        offset += HEADER.size + _body_size(data, offset + HEADER.size, kind, mode, n)


def _body_size(data: bytes, offset: int, kind: bytes, mode: bytes, n: int) -> int:
    size = STEP_BYTES[mode] * n
    if kind == b"s":
        (length,) = struct.unpack_from("<I", data, offset + size)
        size += 4 + int(length)
    else:
        size += {b"d": 8 * n, b"q": 8 * n, b"?": n}[kind]
    if mode in _PLAIN:
        (m,) = struct.unpack_from("<I", data, offset + size)
        size += 4 + TIMES.size * int(m)
    return size


def time_bits(ts: float) -> int:
    """A time's float64 bit pattern, as the unsigned int the time table's deltas add to."""
    (bits,) = _BITS.unpack(_FLOAT.pack(ts))
    return int(bits)


def _stamps(data: bytes, offset: int, ts: float) -> list[float]:
    """The points' times from a merged chunk's time table at ``offset``."""
    (m,) = struct.unpack_from("<I", data, offset)
    stamps: list[float] = []
    bits = time_bits(ts)
    for points, delta in TIMES.iter_unpack(data[offset + 4 : offset + 4 + TIMES.size * m]):
        bits = (bits + delta) % 2**64
        stamps.extend(_FLOAT.unpack(_BITS.pack(bits)) * points)
    return stamps


def unpack_series(data: bytes) -> Series:
    """Decode a packed series (no per-point Python work beyond building the lists)."""
    steps: list[int] = []
    values: list[Value] = []
    stamps: list[float] = []
    for kind, merged_mode, n, ts, step0, stride, offset in iter_chunks(data):
        mode = _PLAIN.get(merged_mode, merged_mode)
        if mode == b"a":
            steps.extend(range(step0, step0 + n * stride, stride) if stride else [step0] * n)
            offset_values = offset
        elif mode == b"d":
            deltas = array("i")
            deltas.frombytes(data[offset : offset + 4 * n])
            step = step0
            for d in deltas:
                step += d
                steps.append(step)
            offset_values = offset + 4 * n
        else:
            absolute = array("Q" if mode == b"u" else "q")
            absolute.frombytes(data[offset : offset + 8 * n])
            steps.extend(absolute)
            offset_values = offset + 8 * n
        values.extend(_values(data, offset_values, kind, n))
        if merged_mode not in _PLAIN:
            stamps.extend([ts] * n)
        else:
            stamps.extend(_stamps(data, offset + _body_size(data, offset, kind, mode, n), ts))
    return Series(steps, values, stamps)


def unpack_values(data: bytes) -> list[Value]:
    """Only the values of a packed series (what ``get_metrics`` needs): skips steps and times."""
    values: list[Value] = []
    for kind, mode, n, _, _, _, offset in iter_chunks(data):
        steps = STEP_BYTES[mode] * n
        values.extend(_values(data, offset + steps, kind, n))
    return values


def _values(data: bytes, offset: int, kind: bytes, n: int) -> list[Value]:
    if kind in (b"d", b"q"):
        out = array(kind.decode())
        out.frombytes(data[offset : offset + 8 * n])
        return cast("list[Value]", out.tolist())
    if kind == b"?":
        return [b != 0 for b in data[offset : offset + n]]
    (length,) = struct.unpack_from("<I", data, offset)
    result: list[Value] = msgpack.unpackb(data[offset + 4 : offset + 4 + length], raw=False)
    return result
