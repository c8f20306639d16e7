"""Cutting one event into pieces that go out in consecutive batches.

An event too large for one batch (a ``log_list`` of millions of values, a large table,
a column of long strings, many tags at once) is cut along its *units*: values, rows,
keys or lines.  Each piece is an event of the same type, and the pieces, applied in
order, leave the record as the whole event would have: a second ``list`` event of a
name appends to it, a second ``table`` event appends rows, tags and properties are set
key by key, output lines are stored chunk by chunk.  Events without such units (a row,
a status, a file) cannot be cut: :mod:`runstream.validation` keeps them small enough
for one entry.

Weights (what :class:`~runstream._spool.OutgoingBatch` counts as ``events``) are shared
out so that the pieces' weights add up to the whole event's.
"""

from __future__ import annotations

from itertools import islice, pairwise
from typing import assert_never

from runstream.events import (
    Event,
    FileUploaded,
    HeartbeatSent,
    ImageLogged,
    ListLogged,
    MetricsLogged,
    OutputLogged,
    PropertiesAdded,
    RowLogged,
    RunStarted,
    StatusChanged,
    TableLogged,
    TagsSet,
)

__all__ = ["by_count", "by_weight", "units", "weight"]


def weight(event: Event) -> int:
    """What ``event`` counts towards a batch's bound: its points, values or cells, else 1."""
    if isinstance(event, MetricsLogged | ListLogged):
        return len(event.values)
    if isinstance(event, TableLogged):
        return sum(len(col) for col in event.columns.values())
    return 1


def units(event: Event) -> int:
    """How many pieces ``event`` could be cut into at most (0 or 1: it cannot be cut)."""
    match event:
        case MetricsLogged(values=values) | ListLogged(values=values):
            return len(values)
        case TableLogged(columns=columns):
            return len(next(iter(columns.values()), []))
        case TagsSet(tags=pairs) | PropertiesAdded(properties=pairs):
            return len(pairs)
        case OutputLogged(lines=lines):
            return len(lines)
        case RunStarted() | RowLogged() | ImageLogged() | FileUploaded() | StatusChanged() | HeartbeatSent():
            return 0
        case _:  # pragma: no cover  # every event type is matched above
            assert_never(event)


def by_count(event: Event, total: int, parts: int) -> list[tuple[Event, int]]:
    """``event`` (of weight ``total``) in ``parts`` pieces of as many units each as can be."""
    count = units(event)
    parts = max(1, min(parts, count))
    return _pieces(event, total, [count * i // parts for i in range(parts + 1)])


def by_weight(event: Event, total: int, room: int, full: int) -> list[tuple[Event, int]]:
    """``event`` (of weight ``total``) in pieces: the first of at most ``room`` weight, the
    others of at most ``full`` each (a unit heavier than that: one unit a piece)."""
    count = units(event)
    unit = max(1, total // max(1, count))  # a table's row weighs its columns
    bounds = [0, min(count, max(1, room // unit))]
    step = max(1, full // unit)
    while bounds[-1] < count:
        bounds.append(min(count, bounds[-1] + step))
    return _pieces(event, total, bounds)


def _pieces(event: Event, total: int, bounds: list[int]) -> list[tuple[Event, int]]:
    count = bounds[-1]
    # Weights telescope: exact per unit for values and cells, the whole weight on one
    # piece for an event of weight 1 (tags, lines), and always adding up to ``total``.
    return [(_cut(event, a, b), total * b // count - total * a // count) for a, b in pairwise(bounds)]


def _cut(event: Event, start: int, stop: int) -> Event:
    """The piece of ``event`` made of its units ``start`` to ``stop``."""
    match event:
        case MetricsLogged(name, steps, values, ts):
            return MetricsLogged(name, steps[start:stop], values[start:stop], ts)
        case ListLogged(name, values, ts):
            return ListLogged(name, values[start:stop], ts)
        case TableLogged(name, columns, ts):
            return TableLogged(name, {col: cells[start:stop] for col, cells in columns.items()}, ts)
        case TagsSet(tags, ts):
            return TagsSet(dict(islice(tags.items(), start, stop)), ts)
        case PropertiesAdded(properties, ts):
            return PropertiesAdded(dict(islice(properties.items(), start, stop)), ts)
        case OutputLogged(stream, lines, ts):
            return OutputLogged(stream, lines[start:stop], ts)
        case _:
            raise ValueError(f"a {event.TYPE} event cannot be cut")
