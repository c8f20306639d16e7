"""Runs and metrics as pandas DataFrames (the ``frames`` extra), as MLflow's ``search_runs`` gives them."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from runstream.errors import RunstreamError

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["export_frame", "metrics_frame", "runs_frame"]

_ATTRIBUTES = ("run_id", "experiment", "status", "name", "parent_id", "created", "started", "ended", "duration")


def _pandas() -> ModuleType:
    try:
        import pandas
    except ImportError as exc:
        raise RunstreamError(f"DataFrames need pandas: pip install 'runstream[frames]' ({exc})") from None
    return pandas


def runs_frame(summaries: list[dict[str, Any]]) -> pd.DataFrame:
    """A row a run: its attributes, then ``params.*``, ``tags.*`` and ``metrics.*`` (last values)."""
    pandas = _pandas()
    rows = [
        {
            **{name: summary.get(name) for name in _ATTRIBUTES},
            **{f"params.{k}": v for k, v in summary["params"].items()},
            **{f"tags.{k}": v for k, v in summary["tags"].items()},
            **{f"metrics.{k}": stats["last"] for k, stats in summary["metrics"].items()},
        }
        for summary in summaries
    ]
    frame: pd.DataFrame = pandas.DataFrame(rows, columns=list(_ATTRIBUTES) if not rows else None)
    for column in ("created", "started", "ended"):
        frame[column] = pandas.to_datetime(frame[column], unit="s", utc=True)
    return frame


def metrics_frame(series: dict[str, tuple[list[int], list[Any], list[float]]]) -> pd.DataFrame:
    """A row a point: metric, step, value, time (UTC), in the order logged."""
    pandas = _pandas()
    frames = [
        pandas.DataFrame({"metric": name, "step": steps, "value": values, "time": times})
        for name, (steps, values, times) in series.items()
    ]
    frame: pd.DataFrame = (
        pandas.concat(frames, ignore_index=True)
        if frames
        else pandas.DataFrame({"metric": [], "step": [], "value": [], "time": []})
    )
    frame["time"] = pandas.to_datetime(frame["time"], unit="s", utc=True)
    return frame


def export_frame(frame: pd.DataFrame, path: str | Path) -> Path:
    """Write ``frame`` to ``path``: Parquet for ``.parquet``, CSV for ``.csv``.

    Raises:
        ValueError: another suffix.
    """
    target = Path(path)
    if target.suffix == ".parquet":
        frame.to_parquet(target, index=False)
    elif target.suffix == ".csv":
        frame.to_csv(target, index=False)
    else:
        raise ValueError(f"export to .parquet or .csv, not {target.suffix or 'no suffix'!r} ({target})")
    return target
