"""A run's search summary (DESIGN §7): attributes, tags, parameters, each metric's last/min/max.

The shape is :mod:`runstream.consumer.summaries`' (which keeps and searches them); it is
built here so that the archiver, which holds a run's whole record as it archives it,
leaves the summary behind at no cost, and a search never has to open the archive.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from runstream.archive.fileset import Record

__all__ = ["record_summary", "series_stats", "summary"]


def _time(text: str | None) -> float | None:
    return float(text) if text else None


def series_stats(values: npt.NDArray[np.float64]) -> dict[str, Any] | None:
    """A numeric series' last, least and greatest values (NaN and infinities left out of the
    least and greatest); None if it has none."""
    if len(values) == 0:
        return None
    finite = values[np.isfinite(values)]
    return {
        "last": float(values[-1]),
        "min": float(finite.min()) if len(finite) else None,
        "max": float(finite.max()) if len(finite) else None,
    }


def summary(
    run_id: str, meta: dict[str, str], tags: dict[str, str], params: dict[str, str], metrics: dict[str, Any]
) -> dict[str, Any]:
    """The summary of a run with this meta hash, tags, properties and metrics' stats."""
    started, ended = _time(meta.get("started_at")), _time(meta.get("ended_at"))
    return {
        "run_id": run_id,
        "experiment": meta.get("experiment"),
        "status": meta.get("status"),
        "name": meta.get("display_name"),
        "parent_id": meta.get("parent_id"),
        "created": _time(meta.get("created_at")),
        "started": started,
        "ended": ended,
        "duration": None if started is None or ended is None else ended - started,
        "tags": tags,
        "params": params,
        "metrics": metrics,
    }


def record_summary(record: Record) -> dict[str, Any]:
    """The summary of an archived (or being archived) record."""
    metrics: dict[str, Any] = {}
    for name, kind in record.kinds.items():
        if kind not in ("series", "list"):
            continue
        segments = record.series.get(name, [])
        if any(isinstance(s.values, list) for s in segments):  # text: its last value
            last = segments[-1].values[-1] if segments and len(segments[-1]) else None
            metrics[name] = {"last": last, "min": None, "max": None}
            continue
        values = np.concatenate([np.asarray(s.values, np.float64) for s in segments]) if segments else np.empty(0)
        metrics[name] = series_stats(values) or {"last": None, "min": None, "max": None}
    return summary(record.run_id, record.meta, record.tags, record.properties, metrics)
