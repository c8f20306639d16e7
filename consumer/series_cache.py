"""Decoded series kept between requests: a series only grows, so its point count names its content.

Charts ask for the same long series again and again (page loads, zooms, several
viewers); fetching and decoding a million points each time costs most of a request.
Entries are keyed by (run, metric, point count) and the cache holds at most
``budget`` points in all (16 bytes each), least recently used first out.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Final

import numpy as np
import numpy.typing as npt

__all__ = ["SeriesCache"]

Arrays = tuple[npt.NDArray[np.int64], npt.NDArray[np.float64], str]
DEFAULT_BUDGET: Final = 16_000_000  # points: about 256 MB of arrays


class SeriesCache:
    """LRU of decoded numeric series, bounded by their total number of points."""

    def __init__(self, budget: int = DEFAULT_BUDGET) -> None:
        self.budget = budget
        self._entries: OrderedDict[tuple[str, str, int], Arrays] = OrderedDict()
        self._points = 0

    def get(self, run_id: str, name: str, count: int) -> Arrays | None:
        key = (run_id, name, count)
        arrays = self._entries.get(key)
        if arrays is not None:
            self._entries.move_to_end(key)
        return arrays

    def put(self, run_id: str, name: str, count: int, arrays: Arrays) -> None:
        size = len(arrays[0])
        if size > self.budget:
            return
        self._entries[(run_id, name, count)] = arrays
        self._points += size
        while self._points > self.budget:
            _, evicted = self._entries.popitem(last=False)
            self._points -= len(evicted[0])
