"""Downsampling long series for charts: MinMaxLTTB, keeping first, last and extremes.

A chart a few thousand pixels wide cannot show a million points; the server sends
at most about ``max_points`` chosen by MinMaxLTTB (tsdownsample: a few ms for 1e6
points), which keeps the shape, then puts back the first and last points and the
global minimum and maximum, so no spike disappears.  NaN/inf gaps are bridged for
the choice; chosen points keep their value.  Packed series are decoded straight into
numpy arrays (:func:`series_arrays`): no per-point Python work on this path.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from runstream.collector.records import STEP_BYTES, iter_chunks

__all__ = ["downsample_indices", "series_arrays", "warm_up"]

_VALUE_DTYPES = {b"d": "<f8", b"q": "<i8", b"?": "u1"}
_KIND_NAMES = {b"d": "float", b"q": "int", b"?": "bool"}


def downsample_indices(
    steps: npt.NDArray[np.int64], values: npt.NDArray[np.float64], max_points: int
) -> npt.NDArray[np.intp]:
    """Indices of the points to keep (all if there are few), in order."""
    n = len(values)
    if n <= max_points:
        return np.arange(n)
    if max_points < 8:  # too few for MinMaxLTTB: evenly spaced, first and last included
        return np.unique(np.linspace(0, n - 1, max(max_points, 1)).astype(np.intp))
    finite = np.isfinite(values)
    y = values
    if not finite.all():
        if not finite.any():
            return np.arange(n - max_points, n)
        y = values.copy()
        y[~finite] = np.interp(np.flatnonzero(~finite), np.flatnonzero(finite), values[finite])
    from tsdownsample import MinMaxLTTBDownsampler  # the server extra's: series_arrays needs numpy only

    room = max_points - 4  # the first, last, minimum and maximum are added back
    sampler = MinMaxLTTBDownsampler()  # type: ignore[no-untyped-call]  # tsdownsample ships no annotations
    # Steps out of order (logged going back): sampled by position instead.
    chosen = sampler.downsample(steps, y, n_out=room) if _ascending(steps) else sampler.downsample(y, n_out=room)
    extra = np.array([0, n - 1, int(np.argmax(y)), int(np.argmin(y))], dtype=np.intp)
    return np.unique(np.concatenate([chosen.astype(np.intp), extra]))


def _ascending(steps: npt.NDArray[np.int64], block: int = 65_536) -> bool:
    """Whether ``steps`` never decrease, checked a block at a time: a million-point
    comparison at once would allocate megabytes, and fresh pages cost more than the work."""
    pairs = len(steps) - 1  # compared: steps[k + 1] >= steps[k] for k < pairs
    return all(
        bool(np.all(steps[i + 1 : min(i + block, pairs) + 1] >= steps[i : min(i + block, pairs)]))
        for i in range(0, pairs, block)
    )


def series_arrays(parts: Sequence[bytes]) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64], str] | None:
    """A packed series, given as its stored items (each a run of whole chunks), as arrays
    (steps, values) and its values' type ("float", "int", "bool" or "mixed"); None if it
    holds text.

    Headers are read first so each array is allocated once and every chunk is copied
    straight into place: a million points cost two 8 MB copies, not six.
    """
    chunks = [(part, chunk) for part in parts for chunk in iter_chunks(part)]
    kinds = {chunk[0] for _, chunk in chunks}
    if not kinds <= _VALUE_DTYPES.keys():
        return None
    total = sum(chunk[2] for _, chunk in chunks)
    steps = np.empty(total, np.int64)
    values = np.empty(total, np.float64)
    at = 0
    for part, (kind, mode, n, _, step0, stride, offset) in chunks:
        end = at + n
        # An upper-case mode is a merged chunk's: the same steps (records.py).
        if mode in (b"a", b"A"):  # step0, step0 + stride, ...: a cumulative sum, computed in place
            run = steps[at:end]
            run.fill(stride)
            run[0] = step0
            np.cumsum(run, out=run)
        elif mode in (b"d", b"D"):
            np.cumsum(np.frombuffer(part, "<i4", n, offset), dtype=np.int64, out=steps[at:end])
            steps[at:end] += step0
        else:  # int64 steps, or uint64 ones above 2**63 - 1 (wrapped, as everywhere in the arrays)
            steps[at:end] = np.frombuffer(part, "<i8", n, offset)
        values[at:end] = np.frombuffer(part, _VALUE_DTYPES[kind], n, offset + STEP_BYTES[mode] * n)
        at = end
    value_type = _KIND_NAMES[next(iter(kinds))] if len(kinds) == 1 else ("mixed" if kinds else "float")
    return steps, values, value_type


def warm_up() -> None:
    """Run the downsampler once on a throwaway series, so the first chart a user opens
    does not also pay its one-time set-up (about 50 ms: thread pool, first allocations)."""
    points = 200_000
    downsample_indices(np.arange(points, dtype=np.int64), np.sin(np.arange(points) / 1e3), 1000)
