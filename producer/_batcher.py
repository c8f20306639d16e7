"""Turning buffered items into batches: grouping, steps, seqs and encoding.

The hot path leaves raw tuples in the buffer (no objects built, no clock read):

    (run_index, name, value, step_or_None)   a scalar point
    (run_index, event)                       any other event

``run_index`` is the run's place in the logger's table of :class:`RunHandle`.  A
small int rather than the handle itself: a tuple holding only ints, floats and
strings is untracked by the garbage collector at its first collection, so a full
buffer costs the collector nothing (with the handle inside, every call cost
twice as much under a deep buffer).

:func:`build_batches` groups them per run into batches of at most
:data:`MAX_BATCH_WEIGHT` points (the scalars of one metric columnar, in the position
of the metric's first point, so events keep their order), fills in default steps
(0, 1, 2, ... per metric, continuing after the last step given), stamps the points
with the drain time, gives each batch the run's next seq and encodes it.  It runs in
the sender thread, or in a caller thread helping to drain an overfull buffer, always
under the logger's drain lock.

Two bounds hold for every batch, so that no entry is ever refused for its size (one
refused entry would take every event that shared it, a run's start among them):

- weight: a list or table heavier than what is left of a batch is cut by values or
  rows (:mod:`runstream._pieces`); the first piece fills the batch, the others go
  whole batches each.
- bytes: an encoded payload over :data:`~runstream.codec.MAX_BATCH_BYTES` (strings
  are what gets there) is not sent: its events are shared out over several batches,
  and an event too big alone is cut, before any of them takes a seq.  Numbers never
  get there (16,000 points are ~150-290 KB), so the fast path pays one ``len``.

Pieces go in consecutive batches of the run, each with the next seq: order per run
is kept, seqs stay contiguous.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from operator import itemgetter
from typing import TYPE_CHECKING, Final, TypeAlias, cast

from runstream import _pieces
from runstream._log import sdk_logger
from runstream._spool import OutgoingBatch
from runstream.codec import MAX_BATCH_BYTES, Batch, encode_batch, encode_payload
from runstream.events import Event, MetricsLogged, Value

if TYPE_CHECKING:
    from runstream._channel import Channel

__all__ = ["MAX_BATCH_WEIGHT", "Item", "Point", "RunHandle", "build_batches"]

#: Points (or list values, or table cells) in one stream entry at most.  16,000 float
#: points pack into a 128,030-byte chunk: inside the allocator's 128 KiB size class,
#: where 16,384 would spill just over it into the next (a fifth more memory).
MAX_BATCH_WEIGHT: Final = 16_000


class RunHandle:
    """What the logger keeps per run in this process.

    ``seq`` and ``next_step`` are guarded by the logger's drain lock; ``live`` is read
    by the heartbeat timer.
    """

    __slots__ = ("__weakref__", "channel", "index", "live", "next_step", "run_id", "seq", "stream")

    def __init__(self, index: int, run_id: str, stream: str, channel: Channel) -> None:
        self.index = index
        self.run_id = run_id
        self.stream = stream
        self.channel = channel
        self.seq = 0
        self.next_step: dict[str, int] = {}
        self.live = True

    def __repr__(self) -> str:
        return f"RunHandle({self.run_id!r}, seq={self.seq})"


#: A scalar point as the hot path leaves it: (run index, name, value, step or None).
Point: TypeAlias = "tuple[int, str, Value, int | None]"
_Steps: TypeAlias = "Sequence[int | None]"
#: A buffered item: a scalar point, or any other event.
Item: TypeAlias = "Point | tuple[int, Event]"


class _Builder:
    """The batch being built for one run: events, and open columns per metric."""

    __slots__ = ("events", "handle", "series", "weight")

    def __init__(self, handle: RunHandle) -> None:
        self.handle = handle
        self.events: list[Event | list[Point]] = []
        self.series: dict[str, list[Point]] = {}
        self.weight = 0


def build_batches(
    items: Iterable[Item], producer: str, handles: list[RunHandle]
) -> list[tuple[Channel, OutgoingBatch]]:
    """Batches for ``items`` (in order per run), each paired with its destination.

    ``handles`` is the logger's table that the items' run indexes point into.
    """
    now = time.time()
    if isinstance(items, list) and (periodic := _periodic(items, producer, handles, now)) is not None:
        return periodic
    builders: dict[int, _Builder] = {}
    done: list[_Builder] = []
    # The loop runs once per point: the current run's builder, its open columns and
    # its weight are kept in locals, and switched only when the run changes.
    last = -1
    builder: _Builder | None = None
    series_of: dict[str, list[Point]] = {}
    weight = 0
    for item in items:
        if item[0] != last:
            if builder is not None:
                builder.weight = weight
            last = item[0]
            builder = builders.get(last)
            if builder is None:
                builder = builders[last] = _Builder(handles[last])
            series_of, weight = builder.series, builder.weight
        assert builder is not None  # noqa: S101  # set by the switch above (for mypy)
        if len(item) == 4:
            series = series_of.get(item[1])
            if series is None:
                series = series_of[item[1]] = []
                builder.events.append(series)
            series.append(item)
            weight += 1
        else:
            builder, weight = _add_event(item[1], builder, weight, done, builders, last)
            series_of = builder.series = {}  # later points open new columns after this event
        if weight >= MAX_BATCH_WEIGHT:
            builder.weight = weight
            done.append(builder)
            del builders[last]
            last = -1
    if builder is not None and last != -1:
        builder.weight = weight
    done.extend(builders.values())
    return [(b.handle.channel, batch) for b in done for batch in _encode(b, producer, now)]


def _add_event(
    event: Event, builder: _Builder, weight: int, done: list[_Builder], builders: dict[int, _Builder], run: int
) -> tuple[_Builder, int]:
    """Add ``event`` to ``builder`` (at ``weight``): the run's builder and its weight after it.

    An event heavier than what is left (a long list, a large table) is cut by values or
    rows: the first piece fills this batch, the others whole batches, the last stays open.
    """
    cost = _pieces.weight(event)
    if weight + cost > MAX_BATCH_WEIGHT and (count := _pieces.units(event)) > 1:
        if weight and MAX_BATCH_WEIGHT - weight < cost // count:  # not one row left here
            builder, weight = _next(builder, weight, done, builders, run), 0
        pieces = _pieces.by_weight(event, cost, MAX_BATCH_WEIGHT - weight, MAX_BATCH_WEIGHT)
        for piece, piece_cost in pieces[:-1]:
            builder.events.append(piece)
            builder, weight = _next(builder, weight + piece_cost, done, builders, run), 0
        event, cost = pieces[-1]
    builder.events.append(event)
    return builder, weight + cost


def _next(builder: _Builder, weight: int, done: list[_Builder], builders: dict[int, _Builder], run: int) -> _Builder:
    """Close ``builder`` (full at ``weight``) and open the run's next one."""
    builder.weight = weight
    done.append(builder)
    builders[run] = fresh = _Builder(builder.handle)
    return fresh


def _periodic(
    items: list[Item], producer: str, handles: list[RunHandle], now: float
) -> list[tuple[Channel, OutgoingBatch]] | None:
    """The batches of a training loop's buffer, or None if ``items`` are not one.

    A training loop logs the same metrics in the same order every step, to one run:
    ``m0, m1, ..., m9, m0, m1, ...``.  Found with C-level passes over the buffer (no
    Python code per point), each metric's points are then a slice of it.  Anything else
    (another event among the points, two runs, an irregular order) is the general
    loop's.
    """
    count = len(items)
    columns = _point_columns(items)
    if columns is None:
        return None
    runs, _, values_of, steps = columns
    names = cast("list[str]", columns[1])  # a list or a tuple: either way the same operations below
    if runs.count(runs[0]) != count:
        return None
    try:
        period = names.index(names[0], 1)
    except ValueError:
        period = count
    head = names[:period]
    if len(set(head)) != period or names != head * (count // period) + head[: count % period]:
        return None
    handle = handles[runs[0]]
    values = list(values_of)
    default = steps.count(None) == count
    # Whole steps per batch, as many as fit in one (a step wider than a batch: one step each).
    width = max(period, MAX_BATCH_WEIGHT - MAX_BATCH_WEIGHT % period)
    batches: list[tuple[Channel, OutgoingBatch]] = []
    for first in range(0, count, width):
        last = min(count, first + width)
        events: list[Event] = []
        for j in range(first, min(last, first + period)):
            given = None if default else list(steps[j:last:period])
            events.append(_column(handle, names[j], values[j:last:period], given, now))
        batches.extend((handle.channel, b) for b in _encode_events(handle, events, last - first, producer))
    return batches


#: Items up to which one zip makes the columns; above, a pass per column is faster (a
#: zip over a million items makes a million iterators, out of the caches).
_ZIP_MAX: Final = 32_768


def _point_columns(items: list[Item]) -> tuple[Sequence[int], Sequence[str], Sequence[Value], _Steps] | None:
    """Run indexes, names, values and steps of ``items``, if all are points (else None)."""
    if not items:
        return None
    if len(items) <= _ZIP_MAX:
        columns = list(zip(*items, strict=False))  # a pair (an event) among them leaves two
        if len(columns) != 4:
            return None
        return cast("tuple[tuple[int, ...], tuple[str, ...], tuple[Value, ...], _Steps]", columns)
    if list(map(len, items)).count(4) != len(items):
        return None
    points = cast("list[Point]", items)
    return tuple(list(map(itemgetter(i), points)) for i in range(4))  # type: ignore[return-value]


def _columns(handle: RunHandle, points: list[Point], now: float) -> MetricsLogged:
    given = [p[3] for p in points]
    return _column(
        handle, points[0][1], [p[2] for p in points], None if given.count(None) == len(given) else given, now
    )


def _column(
    handle: RunHandle, name: str, values: list[Value], given: list[int | None] | None, now: float
) -> MetricsLogged:
    """The points of one metric as one event: steps as given, else one past the metric's last."""
    start = handle.next_step.get(name, 0)
    steps: range | list[int]
    if given is None or given.count(None) == len(given):  # the usual case: default steps
        steps = range(start, start + len(values))
    else:
        steps = []
        for step in given:
            steps.append(start if step is None else step)
            start = steps[-1] + 1
        if steps == list(range(steps[0], steps[0] + len(steps))):
            steps = range(steps[0], steps[0] + len(steps))  # given, but consecutive: as compact
    handle.next_step[name] = steps[-1] + 1
    return MetricsLogged(name, steps, values, now)


def _encode(builder: _Builder, producer: str, now: float) -> list[OutgoingBatch]:
    handle = builder.handle
    events = [e if not isinstance(e, list) else _columns(handle, e, now) for e in builder.events]
    return _encode_events(handle, events, builder.weight, producer)


def _encode_events(handle: RunHandle, events: list[Event], weight: int, producer: str) -> list[OutgoingBatch]:
    """The batch of ``events``, or the batches it is split into when its payload is too big.

    The seq is taken only by a batch that goes out as it is, so the pieces of one that
    did not fit take consecutive seqs.
    """
    fields = encode_batch(Batch(run_id=handle.run_id, producer=producer, seq=handle.seq + 1, events=events))
    size = len(fields["b"])
    if size > MAX_BATCH_BYTES and (groups := _split(handle, events, weight, size)) is not None:
        return [batch for group, part in groups for batch in _encode_events(handle, group, part, producer)]
    handle.seq += 1
    return [OutgoingBatch(stream=handle.stream, fields=fields, size=size, events=weight)]


#: Bytes an event is cut into pieces of: below the bound, so that pieces a little
#: uneven (strings of different lengths) still fit without a second cut.
_PIECE_BYTES: Final = MAX_BATCH_BYTES * 3 // 4
#: The most a payload's array header takes (msgpack array32).
_ARRAY_HEADER: Final = 5


def _split(handle: RunHandle, events: list[Event], weight: int, size: int) -> list[tuple[list[Event], int]] | None:
    """``events`` (a payload of ``size`` bytes, too big) as groups that each fit in one
    payload, with their weights; None if it is one event that cannot be cut."""
    if len(events) == 1:
        event = events[0]
        if _pieces.units(event) < 2:  # validation keeps such events far smaller: a guard, not a path
            sdk_logger("runstream.logger").warning(
                "batch_over_budget", run_id=handle.run_id, event_type=event.TYPE, size=size, budget=MAX_BATCH_BYTES
            )
            return None  # sent alone: the collector accepts up to MAX_ENTRY_BYTES
        parts = -(-size // _PIECE_BYTES)
        return [([piece], part) for piece, part in _pieces.by_count(event, weight, parts)]
    # A payload is an array header and its events one after another, so the events'
    # own sizes add up to it: pack them in order, as many a group as fit.
    sizes = [len(encode_payload([e])) - 1 for e in events]  # less the one-event array's header
    groups: list[tuple[list[Event], int]] = []
    group: list[Event] = []
    used = part = 0
    for event, event_size in zip(events, sizes, strict=True):
        if group and used + event_size > MAX_BATCH_BYTES - _ARRAY_HEADER:
            groups.append((group, part))
            group, used, part = [], 0, 0
        group.append(event)
        used += event_size
        part += _pieces.weight(event)
    groups.append((group, part))
    return groups
