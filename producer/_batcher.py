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
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from operator import itemgetter
from typing import TYPE_CHECKING, Final, TypeAlias, cast

from runstream._spool import OutgoingBatch
from runstream.codec import Batch, encode_batch
from runstream.events import Event, ListLogged, MetricsLogged, TableLogged, Value

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
#: A buffered item: a scalar point, or any other event.
Item: TypeAlias = "Point | tuple[int, Event]"

_RUN, _NAME, _VALUE, _STEP = (itemgetter(i) for i in range(4))


class _Builder:
    """The batch being built for one run: events, and open columns per metric."""

    __slots__ = ("events", "handle", "series", "weight")

    def __init__(self, handle: RunHandle) -> None:
        self.handle = handle
        self.events: list[Event | list[Point]] = []
        self.series: dict[str, list[Point]] = {}
        self.weight = 0


def _weight(event: Event) -> int:
    if isinstance(event, ListLogged):
        return len(event.values)
    if isinstance(event, TableLogged):
        return sum(len(col) for col in event.columns.values())
    return 1


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
            series_of = builder.series = {}  # later points open new columns after this event
            builder.events.append(item[1])
            weight += _weight(item[1])
        if weight >= MAX_BATCH_WEIGHT:
            builder.weight = weight
            done.append(builder)
            del builders[last]
            last = -1
    if builder is not None and last != -1:
        builder.weight = weight
    done.extend(builders.values())
    return [(b.handle.channel, _encode(b, producer, now)) for b in done]


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
    if not count or set(map(len, items)) != {4}:
        return None
    points = cast("list[Point]", items)
    runs = set(map(_RUN, points))
    if len(runs) != 1:
        return None
    names = list(map(_NAME, points))
    try:
        period = names.index(names[0], 1)
    except ValueError:
        period = count
    head = names[:period]
    if len(set(head)) != period or names != head * (count // period) + head[: count % period]:
        return None
    handle = handles[runs.pop()]
    values = list(map(_VALUE, points))
    steps = list(map(_STEP, points))
    default = steps.count(None) == count
    # Whole steps per batch, as many as fit in one (a step wider than a batch: one step each).
    width = max(period, MAX_BATCH_WEIGHT - MAX_BATCH_WEIGHT % period)
    batches = []
    for first in range(0, count, width):
        last = min(count, first + width)
        events: list[Event] = []
        for j in range(first, min(last, first + period)):
            given = None if default else steps[j:last:period]
            events.append(_column(handle, names[j], values[j:last:period], given, now))
        batches.append((handle.channel, _encode_events(handle, events, last - first, producer)))
    return batches


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


def _encode(builder: _Builder, producer: str, now: float) -> OutgoingBatch:
    handle = builder.handle
    events = [e if not isinstance(e, list) else _columns(handle, e, now) for e in builder.events]
    return _encode_events(handle, events, builder.weight, producer)


def _encode_events(handle: RunHandle, events: list[Event], weight: int, producer: str) -> OutgoingBatch:
    handle.seq += 1
    fields = encode_batch(Batch(run_id=handle.run_id, producer=producer, seq=handle.seq, events=events))
    return OutgoingBatch(stream=handle.stream, fields=fields, size=len(fields["b"]), events=weight)
