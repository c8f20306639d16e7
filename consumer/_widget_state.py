"""The notebook widget's model of a run, apart from its views: what is shown, and the record read.

:class:`RunState` holds the run as the widget shows it (status, tags, metrics as
lines or text, the output tail) and applies events to it; :func:`read_record` fills it from
the record at one consistent moment and returns the live-stream id to follow from
(see :mod:`runstream.consumer.widgets`).  No widget code here: this is what the views draw.
"""

from __future__ import annotations

import asyncio
import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from runstream.consumer.reader import RecordReader, time_or_none
from runstream.events import (
    TERMINAL_STATUSES,
    Event,
    ImageLogged,
    ListLogged,
    MetricsLogged,
    OutputLogged,
    RowLogged,
    RunStarted,
    Status,
    StatusChanged,
    TableLogged,
    TagsSet,
    Value,
    status_follows,
)

__all__ = ["Abscissa", "Metric", "Point", "RunState", "read_record", "recorded", "thin"]


Point = int | float | None  # None: a gap (NaN, infinities)
Abscissa = int | float | str | None


# ---------------------------------------------------------------- what is shown (pure)


def _number(value: Value) -> Point:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value if isinstance(value, int | float) else None


def _text(value: Value) -> str:
    return f"{value:.6g}" if isinstance(value, float) else str(value)


def thin(xs: list[Abscissa], ys: list[Point], target: int) -> tuple[list[Abscissa], list[Point]]:
    """About ``target`` of the points, in order: the first, the last, and each bucket's lowest and highest
    (so no spike disappears)."""
    size = -(-len(ys) // max(1, target // 2 - 1))
    keep = {0, len(ys) - 1}
    for start in range(0, len(ys), size):
        bucket = [(y, i) for i, y in enumerate(ys[start : start + size], start) if y is not None]
        if bucket:
            keep.update((min(bucket)[1], max(bucket)[1]))
    chosen = sorted(keep)
    return [xs[i] for i in chosen], [ys[i] for i in chosen]


@dataclass(slots=True)
class Metric:
    """One metric as the widget shows it: a line of at most ``cap`` points, or its newest value as text."""

    kind: str  # as the record says: "series", "list", "table" or "image"
    cap: int
    count: int = 0
    last: str = ""
    columns: tuple[str, ...] | None = None
    xs: list[Abscissa] = field(default_factory=list)
    ys: list[Point] = field(default_factory=list)
    drawable: bool = True

    @property
    def chart(self) -> bool:
        """Drawn as a line: numbers only, and more than one scalar."""
        return self.drawable and (self.kind != "series" or self.count > 1)

    def add(self, count: int, last: str, xs: Sequence[Abscissa], values: Sequence[Value] | None) -> None:
        """``count`` points more, the newest shown as ``last``; ``values`` over ``xs`` to draw (None: not drawable)."""
        self.count += count
        self.last = last if count else self.last
        if values is None or any(isinstance(v, str) for v in values):
            self.drawable, self.xs, self.ys = False, [], []
        if self.drawable:
            self.xs.extend(xs)
            self.ys.extend(_number(v) for v in values or ())
            if len(self.ys) > self.cap:
                self.xs, self.ys = thin(self.xs, self.ys, self.cap // 2)


def _add_rows(metric: Metric, columns: dict[str, list[Value]]) -> None:
    """Rows: one column is drawn over the row number, two as the second over the first; more as text."""
    names = tuple(columns)
    metric.columns = names if metric.columns is None else metric.columns
    rows = len(next(iter(columns.values()), []))
    if not rows:
        return
    last = ", ".join(f"{name}={_text(column[-1])}" for name, column in columns.items())
    if names != metric.columns or len(names) > 2:
        metric.add(rows, last, (), None)
    elif len(names) == 2:
        metric.add(rows, last, [v if isinstance(v, str) else _number(v) for v in columns[names[0]]], columns[names[1]])
    else:
        metric.add(rows, last, range(metric.count, metric.count + rows), columns[names[0]])


@dataclass(slots=True)
class RunState:
    """What the widget shows of a run, changed by the run's events.  Guarded by: the background thread."""

    name: str
    cap: int
    lines: int
    status: str = "NotStarted"
    error: str | None = None
    started: float | None = None
    ended: float | None = None
    tags: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, Metric] = field(default_factory=dict)
    output: deque[str] = field(default_factory=deque)
    changed: set[str] = field(default_factory=set)  # metrics to draw again

    def apply(self, event: Event) -> None:
        match event:
            case StatusChanged(status, error, ts):
                self._status(status, error, ts)
            case RunStarted(display_name=name, status=status, timestamp=ts):
                self.name = name
                self._status(status, None, ts)
            case TagsSet(tags, _):
                self.tags.update(tags)
            case OutputLogged(_, lines, _):
                self.output.extend(lines)
                while len(self.output) > self.lines:
                    self.output.popleft()
            case MetricsLogged() | ListLogged() | RowLogged() | TableLogged() | ImageLogged():
                self._metric(event)
            case _:
                pass  # properties, files and heartbeats are not shown

    def _status(self, status: Status, error: str | None, ts: float) -> None:
        if not status_follows(self.status, status):
            return  # as in the record: statuses only move forward, final ones stay
        self.status, self.error = status, error or self.error
        if status in ("Running", "Finalizing", *TERMINAL_STATUSES):
            self.started = self.started or ts
        if status in TERMINAL_STATUSES:
            self.ended = ts

    def _metric(self, event: MetricsLogged | ListLogged | RowLogged | TableLogged | ImageLogged) -> None:
        kind = {"metric": "series", "row": "table"}.get(event.TYPE, event.TYPE)
        metric = self.metrics.setdefault(event.name, Metric(kind, self.cap))
        metric.kind = "list" if kind == "list" else metric.kind  # as the record: "list" wins over "series"
        self.changed.add(event.name)
        match event:
            case MetricsLogged(_, steps, values, _) if values:
                numbered = range(metric.count, metric.count + len(values))
                metric.add(len(values), _text(values[-1]), numbered if metric.kind == "list" else steps, values)
            case ListLogged(_, values, _) if values:
                metric.add(len(values), _text(values[-1]), range(metric.count, metric.count + len(values)), values)
            case RowLogged(_, row, _):
                _add_rows(metric, {column: [value] for column, value in row.items()})
            case TableLogged(_, columns, _):
                _add_rows(metric, columns)
            case ImageLogged(_, file, _):
                metric.add(1, file, (), None)
            case _:
                pass  # no values


# ------------------------------------------------------------------ reading the record


async def read_record(reader: RecordReader, run_id: str, state: RunState) -> str:
    """Fill the blank ``state`` from the run's record; return the live-stream id it is current to (see the
    module docstring)."""
    keys = reader.keys
    if await reader.archived(run_id) is not None:  # the record is in the archive: read as the API reads it
        meta, state.tags, index = (
            await reader.meta(run_id),
            await reader.tags(run_id),
            await reader.metric_index(run_id),
        )
        kinds = {name: info["kind"] for name, info in index.items()}
        counts = {name: str(info["count"]) for name, info in index.items()}
        live_id = await reader.live_id(run_id)
        lines = [line["line"] for line in await reader.output(run_id, state.lines)]
    else:
        async with reader.client.pipeline(transaction=True) as pipe:
            _ = pipe.xrevrange(keys.live(run_id), count=1)
            for key in (keys.meta(run_id), keys.tags(run_id), keys.metric_index(run_id), keys.metric_counts(run_id)):
                _ = pipe.hgetall(key)
            _ = pipe.xrevrange(keys.output(run_id), count=state.lines)
            live, *hashes, output = await pipe.execute()
        meta, state.tags, kinds, counts = ({k.decode(): v.decode() for k, v in h.items()} for h in hashes)
        live_id = cast("list[tuple[bytes, Any]]", live)[0][0].decode() if live else "0-0"
        lines = [line for _, fields in reversed(output) for line in fields[b"l"].decode(errors="replace").split("\n")]
    state.name, state.status, state.error = (
        meta.get("display_name", state.name),
        meta.get("status", "NotStarted"),
        meta.get("error"),
    )
    state.started, state.ended = time_or_none(meta.get("started_at")), time_or_none(meta.get("ended_at"))
    state.output.extend(lines[-state.lines :])
    found = await asyncio.gather(*(recorded(reader, run_id, n, k, int(counts.get(n, 0))) for n, k in kinds.items()))
    for event in (event for events in found for event in events):
        state.apply(event)
    return live_id


async def recorded(reader: RecordReader, run_id: str, name: str, kind: str, count: int) -> list[Event]:
    """A metric's first ``count`` points (as counted with the live id), as events that log them."""
    if kind in ("series", "list"):
        series = await reader.series(run_id, name)
        if kind == "list":
            return [ListLogged(name, series.values[:count], 0.0)]
        return [MetricsLogged(name, series.steps[:count], series.values[:count], 0.0)]
    value = (await reader.metrics(run_id, name)).get(name)
    if kind == "image":
        files = value if isinstance(value, list) else [value]
        return [ImageLogged(name, str(file), 0.0) for file in files[:count]]
    columns = cast("dict[str, list[Value]]", value if isinstance(value, dict) else {})
    return [TableLogged(name, {column: values[:count] for column, values in columns.items()}, 0.0)]
