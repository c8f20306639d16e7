"""Downsampling long series for charts: MinMaxLTTB, keeping first, last and extremes.

A chart a few thousand pixels wide cannot show a million points; the server sends
at most about ``max_points`` chosen by MinMaxLTTB (tsdownsample: a few ms for 1e6
points), which keeps the shape, then puts back the first and last points and the
global minimum and maximum, so no spike disappears.  NaN/inf gaps are bridged for
the choice; chosen points keep their value.  Packed series are decoded straight into
numpy arrays (:func:`series_arrays`): no per-point Python work on this path.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from tsdownsample import MinMaxLTTBDownsampler

from runstream.collector.records import STEP_BYTES, iter_chunks

__all__ = ["downsample_indices", "series_arrays"]

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
    room = max_points - 4  # the first, last, minimum and maximum are added back
    sampler = MinMaxLTTBDownsampler()  # type: ignore[no-untyped-call]  # tsdownsample ships no annotations
    if bool(np.all(np.diff(steps) >= 0)):
        chosen = sampler.downsample(steps, y, n_out=room)
    else:  # steps out of order: sample by position
        chosen = sampler.downsample(y, n_out=room)
    extra = np.array([0, n - 1, int(np.argmax(y)), int(np.argmin(y))], dtype=np.intp)
    return np.unique(np.concatenate([chosen.astype(np.intp), extra]))


def series_arrays(data: bytes) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64], str] | None:
    """A packed series as arrays (steps, values) and its values' type ("float", "int",
    "bool" or "mixed"), or None if it holds text."""
    steps: list[npt.NDArray[np.int64]] = []
    values: list[npt.NDArray[np.float64]] = []
    kinds: set[bytes] = set()
    for kind, mode, n, _, step0, stride, offset in iter_chunks(data):
        if kind not in _VALUE_DTYPES:
            return None
        kinds.add(kind)
        if mode == b"a":
            steps.append(step0 + stride * np.arange(n, dtype=np.int64))
        elif mode == b"d":
            steps.append(step0 + np.cumsum(np.frombuffer(data, "<i4", n, offset), dtype=np.int64))
        else:
            steps.append(np.frombuffer(data, "<i8" if mode == b"q" else "<u8", n, offset).astype(np.int64))
        start = offset + STEP_BYTES[mode] * n
        values.append(np.frombuffer(data, _VALUE_DTYPES[kind], n, start).astype(np.float64))
    if not steps:
        return np.zeros(0, np.int64), np.zeros(0, np.float64), "float"
    value_type = _KIND_NAMES[kinds.pop()] if len(kinds) == 1 else "mixed"
    return np.concatenate(steps), np.concatenate(values), value_type
