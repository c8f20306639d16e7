"""The server's cache of decoded series: keyed by point count, bounded by points held."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from runstream.consumer.series_cache import SeriesCache


def arrays(n: int) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64], str]:
    return np.arange(n, dtype=np.int64), np.zeros(n, dtype=np.float64), "float"


class TestSeriesCache:
    """A grown series misses; the least recently used entries leave first."""

    def test_count_names_the_content(self) -> None:
        cache = SeriesCache(budget=100)
        cache.put("r", "loss", 10, arrays(10))

        assert cache.get("r", "loss", 10) is not None
        assert cache.get("r", "loss", 11) is None
        assert cache.get("r", "other", 10) is None

    def test_budget_evicts_least_recently_used(self) -> None:
        cache = SeriesCache(budget=100)
        cache.put("r", "a", 40, arrays(40))
        cache.put("r", "b", 40, arrays(40))
        assert cache.get("r", "a", 40) is not None  # a is now the most recent
        cache.put("r", "c", 40, arrays(40))

        assert cache.get("r", "b", 40) is None
        assert cache.get("r", "a", 40) is not None
        assert cache.get("r", "c", 40) is not None

    def test_too_large_is_not_kept(self) -> None:
        cache = SeriesCache(budget=10)
        cache.put("r", "big", 11, arrays(11))

        assert cache.get("r", "big", 11) is None
