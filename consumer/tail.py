"""``runstream tail``: a run's updates as they come; an ended run's history; a summary a fast run can be read by.

A run still going is followed until it ends, from now or from its beginning.  A run that
has ended has nothing more to come: its record is printed (each metric's steps, points
and last value, then the final status) and the command returns; with ``--from-start``,
its updates are printed instead while its live stream still holds them (a minute after
the end, by default: then the record again).  ``--metric`` keeps the
named metrics only; ``--every SECONDS`` prints, instead of each update, one line per
metric every so often (its step, last value and points since the last line), which is
what a human can read of a run logging 100,000 points a second.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any

from runstream.consumer.reader import RecordReader
from runstream.consumer.subscribe import Resynced, Update, subscribe
from runstream.consumer.updates import describe, json_value, to_json
from runstream.events import TERMINAL_STATUSES, MetricsLogged, StatusChanged

__all__ = ["tail"]

Echo = Callable[[str], None]


async def tail(
    reader: RecordReader,
    run_id: str,
    meta: dict[str, str],
    echo: Echo,
    *,
    from_start: bool = False,
    as_json: bool = False,
    metrics: Collection[str] = (),
    every: float | None = None,
) -> None:
    """Print the run's updates (or, once it has ended, its history) with ``echo``."""
    ended = meta.get("status") in TERMINAL_STATUSES
    if ended and not from_start:
        await history(reader, run_id, meta, echo, as_json=as_json, metrics=metrics)
        return
    summary = _Summary(echo, as_json, every) if every else None
    async for item in subscribe(reader.client, reader.keys, run_id, start="beginning" if from_start else "now"):
        if ended and isinstance(item, Resynced):  # its updates given back once it ended: the record has them
            await history(reader, run_id, await reader.meta(run_id), echo, as_json=as_json, metrics=metrics)
            return
        event = item.event if isinstance(item, Update) else None
        if metrics and isinstance(event, MetricsLogged) and event.name not in metrics:
            continue
        if summary is not None and summary.take(item):
            continue
        echo(json.dumps(to_json(item)) if as_json else describe(item))
    if summary is not None:
        summary.flush()


async def history(
    reader: RecordReader,
    run_id: str,
    meta: dict[str, str],
    echo: Echo,
    *,
    as_json: bool = False,
    metrics: Collection[str] = (),
) -> None:
    """The record of an ended run: a line per metric (steps, points, last value), then its status."""
    for name, info in (await reader.metric_index(run_id)).items():
        if info["kind"] not in ("series", "list") or (metrics and name not in metrics):
            continue
        arrays = await reader.arrays(run_id, name)
        if arrays is not None and len(arrays[0]):
            steps, values, value_type = arrays
            last: Any = values[-1].item()
            last = int(last) if value_type == "int" else bool(last) if value_type == "bool" else last
            first_step, last_step, count = int(steps[0]), int(steps[-1]), len(steps)
        else:
            last, count = await reader.last_value(run_id, name), int(info["count"])
            first_step, last_step = 0, max(count - 1, 0)
        if as_json:
            row = {"type": "metric", "name": name, "points": count, "first_step": first_step, "last_step": last_step}
            echo(json.dumps({**row, "last": json_value(last)}))
        else:
            echo(f"{name} steps {first_step}..{last_step}: {count} points, last {last!r}")
    status, error = meta.get("status", "NotStarted"), meta.get("error") or None
    if as_json:
        echo(json.dumps({"type": "status", "status": status, "error": error}))
    else:
        echo(f"status {status}" + (f": {error}" if error else ""))


@dataclass
class _Latest:
    step: int
    value: Any
    points: int = 0


class _Summary:
    """Metrics' updates folded into a line per metric every ``every`` seconds."""

    def __init__(self, echo: Echo, as_json: bool, every: float) -> None:
        self.echo, self.as_json, self.every = echo, as_json, every
        self.latest: dict[str, _Latest] = {}
        self.started = self.printed = time.monotonic()

    def take(self, item: Update | Resynced) -> bool:
        """Fold ``item`` in if it is a metric's (True), printing the summary when it is due."""
        if not (isinstance(item, Update) and isinstance(item.event, MetricsLogged)):
            if isinstance(item, Update) and isinstance(item.event, StatusChanged):
                self.flush()
            return False
        event = item.event
        if event.values:
            latest = self.latest.setdefault(event.name, _Latest(event.steps[-1], event.values[-1]))
            latest.step, latest.value = event.steps[-1], event.values[-1]
            latest.points += len(event.values)
        if time.monotonic() - self.printed >= self.every:
            self.flush()
        return True

    def flush(self) -> None:
        """Print what came since the last summary (nothing if nothing did)."""
        now = time.monotonic()
        seconds, self.printed = now - self.printed, now
        for name, latest in self.latest.items():
            if not latest.points:
                continue
            rate = latest.points / seconds if seconds > 0 else 0.0
            if self.as_json:
                row = {"type": "summary", "name": name, "step": latest.step, "points": latest.points}
                self.echo(json.dumps({**row, "last": json_value(latest.value), "per_second": round(rate, 1)}))
            else:
                at = now - self.started
                self.echo(
                    f"[{at:7.1f} s] {name} step {latest.step}: {latest.value!r} (+{latest.points:,}, {rate:,.0f}/s)"
                )
            latest.points = 0
