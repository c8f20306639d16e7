"""Live updates as JSON and as one line of text (the SSE payload and ``runstream tail``)."""

from __future__ import annotations

import math
from dataclasses import fields
from typing import Any

from runstream.consumer.subscribe import Resynced, Update
from runstream.events import Event, MetricsLogged, OutputLogged, StatusChanged

__all__ = ["describe", "json_value", "to_json"]


def json_value(value: Any) -> Any:
    """JSON has no NaN or infinities: they travel as the strings "NaN", "Infinity", "-Infinity"."""
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, list | range):
        return [json_value(v) for v in value]
    if isinstance(value, dict):
        return {k: json_value(v) for k, v in value.items()}
    return value


def to_json(item: Update | Resynced) -> dict[str, Any]:
    """A JSON-ready dict: ``{"id", "type", ...the event's fields}`` or a resync notice."""
    if isinstance(item, Resynced):
        return {"type": "resync", "after": item.after, "reason": item.reason}
    event: Event = item.event
    body = {f.name: json_value(getattr(event, f.name)) for f in fields(event)}
    return {"id": item.id, "type": event.TYPE, **body}


def describe(item: Update | Resynced) -> str:
    """One human line for a terminal."""
    if isinstance(item, Resynced):
        return f"(resync: {item.reason})"
    event = item.event
    match event:
        case MetricsLogged(name, steps, values, _):
            if len(values) == 1:
                return f"{name} step {steps[0]}: {values[0]!r}"
            return f"{name} steps {steps[0]}..{steps[-1]}: {len(values)} points, last {values[-1]!r}"
        case StatusChanged(status, error, _):
            return f"status {status}" + (f": {error}" if error else "")
        case OutputLogged(stream, lines, _):
            return "\n".join(f"[{stream}] {line}" for line in lines)
        case _:
            body = ", ".join(f"{f.name}={getattr(event, f.name)!r}" for f in fields(event) if f.name != "timestamp")
            return f"{event.TYPE} {body}"
