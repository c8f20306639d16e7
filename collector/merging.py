"""Merging a tail's chunks into few when it is sealed: the reference of ``apply.lua``'s ``seal``.

``apply.lua`` is the one place records are written, so the merge that runs when a
metric's tail ``t:<name>`` is sealed into ``m:<name>`` is Lua; this module is the same
algorithm in Python, byte for byte (tests hold the two to the same output), and the
pure function the property tests run.  The merged format is described in
:mod:`runstream.collector.records`.

A run of chunks becomes one merged chunk while each next chunk

- has the same value kind, and plain (lowercase) steps of a mode that can join:
  "a"/"d" with "a"/"d" (arithmetic while the steps keep one stride, else int32 deltas
  if every delta fits), "q" with "q", "u" with "u";
- has its time within an int32 of float64 last places of the previous chunk's time
  (at today's epoch times, about ±512 s), and at most 65,535 points;
- keeps every step, for "a"/"d", under 2**53 in magnitude (Lua's numbers are doubles:
  steps beyond are left as they are, never rounded).

Anything else (an already merged chunk, a chunk that cannot join) starts the next
run; a run of one chunk, or one whose merged chunk would not be smaller (a few points
whose steps turn to int32 deltas), is kept byte for byte as it was.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Final

from runstream.collector.records import HEADER, MERGED, STEP_BYTES, TIMES, iter_chunks, time_bits

__all__ = ["merge_chunks"]

_EXACT: Final = 2**53
_INT32: Final = (-(2**31), 2**31 - 1)
_I32: Final = struct.Struct("<i")
_MAX_PART: Final = 65_535


def _fits32(x: int) -> bool:
    return _INT32[0] <= x <= _INT32[1]


@dataclass(slots=True)
class _Chunk:
    kind: bytes
    mode: bytes
    n: int
    ts: float
    step0: int
    stride: int
    raw: bytes  # the whole chunk
    steps: bytes  # its step bytes
    values: bytes  # its value bytes ("s": the msgpack array's elements only)
    first: int = 0  # first and last step ("a"/"d")
    last: int = 0


def _split(data: bytes) -> list[_Chunk]:
    chunks = [c for c in iter_chunks(data)]
    out: list[_Chunk] = []
    for i, (kind, mode, n, ts, step0, stride, offset) in enumerate(chunks):
        end = chunks[i + 1][6] - HEADER.size if i + 1 < len(chunks) else len(data)
        start = offset - HEADER.size
        step_end = offset + STEP_BYTES[mode] * n
        values = data[step_end:end]
        if mode in MERGED.values():
            values = b""  # not re-merged: kept whole
        elif kind == b"s":
            values = values[4 + _array_header(values[4:]) :]
        chunk = _Chunk(kind, mode, n, ts, step0, stride, data[start:end], data[offset:step_end], values)
        if mode == b"a":
            chunk.first, chunk.last = step0, step0 + (n - 1) * stride
        elif mode == b"d":
            deltas = [d for (d,) in _I32.iter_unpack(chunk.steps)]
            chunk.first, chunk.last = step0 + deltas[0], step0 + sum(deltas)
        out.append(chunk)
    return out


def _array_header(packed: bytes) -> int:
    """Bytes of a msgpack array's header (fixarray, array 16, array 32)."""
    first = packed[0]
    return 1 if first < 0xDC else (3 if first == 0xDC else 5)


def _joinable(c: _Chunk) -> bool:
    if c.mode not in MERGED or c.n > _MAX_PART:
        return False
    return c.mode in (b"q", b"u") or all(abs(x) < _EXACT for x in (c.step0, c.stride, c.first, c.last))


@dataclass(slots=True)
class _Run:
    head: _Chunk
    mode: bytes
    n: int
    stride: int
    last: int
    bits: int
    steps: list[bytes] = field(default_factory=list)
    values: list[bytes] = field(default_factory=list)
    times: list[tuple[int, int]] = field(default_factory=list)
    raw: list[bytes] = field(default_factory=list)

    @classmethod
    def start(cls, c: _Chunk) -> _Run:
        return cls(c, c.mode, c.n, c.stride, c.last, time_bits(c.ts), [c.steps], [c.values], [(c.n, 0)], [c.raw])

    def add(self, c: _Chunk) -> bool:
        head = self.head
        if not _joinable(head) or not _joinable(c) or c.kind != head.kind or self.n + c.n >= 2**32:
            return False
        delta = time_bits(c.ts) - self.bits
        if not _fits32(delta):
            return False
        if self.mode in (b"q", b"u") or c.mode in (b"q", b"u"):
            if c.mode != self.mode:
                return False
            self.steps.append(c.steps)
        else:
            gap = c.first - self.last
            stride = self.stride if self.n > 1 else gap
            if self.mode == b"a" and c.mode == b"a" and gap == stride and (c.n == 1 or c.stride == stride):
                self.stride = stride
            else:
                if not _fits32(gap) or (c.mode == b"a" and c.n > 1 and not _fits32(c.stride)):
                    return False
                if self.mode == b"a":
                    if self.n > 1 and not _fits32(self.stride):
                        return False
                    self.mode = b"d"
                    self.steps = [_I32.pack(0) + _I32.pack(self.stride) * (self.n - 1)]
                rest = _I32.pack(c.stride) * (c.n - 1) if c.mode == b"a" else c.steps[4:]
                self.steps.append(_I32.pack(gap) + rest)
            self.last = c.last
        self.n += c.n
        self.bits += delta
        self.values.append(c.values)
        self.times.append((c.n, delta))
        self.raw.append(c.raw)
        return True

    def pack(self) -> bytes:
        head = self.head
        if len(self.times) == 1:
            return head.raw
        values = b"".join(self.values)
        if head.kind == b"s":
            values = b"\xdd" + struct.pack(">I", self.n) + values
            values = struct.pack("<I", len(values)) + values
        step0, stride = head.step0, head.stride
        if self.mode == b"a":
            step0, stride = head.first, self.stride
        elif self.mode == b"d" and head.mode == b"a":
            step0, stride = head.step0, 0
        header = HEADER.pack(head.kind, MERGED[self.mode], self.n, head.ts, step0, stride)
        times = struct.pack("<I", len(self.times)) + b"".join(TIMES.pack(k, d) for k, d in self.times)
        merged = header + b"".join(self.steps) + values + times
        raw = b"".join(self.raw)
        return merged if len(merged) < len(raw) else raw


def merge_chunks(data: bytes) -> bytes:
    """The chunks of ``data`` merged into as few as the format allows (see the module docstring)."""
    out: list[bytes] = []
    run: _Run | None = None
    for chunk in _split(data):
        if run is None or not run.add(chunk):
            if run is not None:
                out.append(run.pack())
            run = _Run.start(chunk)
    if run is not None:
        out.append(run.pack())
    return b"".join(out)
