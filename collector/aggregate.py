"""Pure folding: a decoded batch becomes the writes that apply it to the run's record.

No I/O here.  :func:`plan` turns a :class:`~runstream.codec.Batch` into a
:class:`Plan`: the keys and arguments of one call of ``apply.lua`` (every write to
the run's own slot, guarded there by the seq check), plus the follow-up commands on
workspace indexes in other slots, which are idempotent (SADD, ZADD) so a repeat after
a crash is harmless.

The live update that subscribers read is the batch again, made compact: heartbeats
left out, and at most :data:`LIVE_POINTS` points per metric (the newest; the record
holds them all).

A producer's batch that carries anything but statuses (a heartbeat, a point, a line of
output) brings a NotResponding run back to Running first: ``apply.lua``'s ``W`` op,
which also sends subscribers the status change (the collector's sweeper, see
:mod:`.sweeper`, makes a silent run NotResponding, then Failed).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Final

import msgpack

from runstream.codec import Batch, encode_payload
from runstream.collector.records import pack_chunk
from runstream.errors import DecodeError
from runstream.events import (
    TERMINAL_STATUSES,
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
from runstream.keys import Keys

__all__ = ["LIVE_BYTES", "LIVE_MAXLEN", "LIVE_MIN", "LIVE_POINTS", "OUTPUT_MAXLEN", "Plan", "live_cap", "plan"]

#: Newest points per metric a live update carries.
LIVE_POINTS: Final = 1024
#: Entries the live stream keeps (approximately): a subscriber further behind resyncs.
LIVE_MAXLEN: Final = 10_000
#: Bytes of updates the live stream keeps (about, and at least LIVE_MIN entries): every
#: update is a copy of its batch's points (~12 B a point), so 10,000 updates of a run
#: logging 10,000 points/s would be 65 MB; this keeps the stream a few seconds deep
#: there, and as deep as LIVE_MAXLEN for slow runs.
LIVE_BYTES: Final = 1 << 20
LIVE_MIN: Final = 100
#: Output entries (chunks of lines) a run keeps (approximately).
OUTPUT_MAXLEN: Final = 100_000

Arg = bytes | str | int | float
#: A follow-up command on a workspace index: ("SADD", key, member),
#: ("ZADD", key, "NX" or "XX", score, member) or ("ZREM", key, member).
Command = tuple[str, ...]


@dataclass(slots=True)
class Plan:
    """One ``apply.lua`` call and its follow-ups."""

    keys: list[str]
    args: list[Arg]
    after: list[tuple[Arg, ...]] = field(default_factory=list)
    points: int = 0


class _Builder:
    def __init__(self, keys: Keys, run_id: str, now: float | None) -> None:
        self.k = keys
        self.run = run_id
        self.now = now  # the collector's clock, for the live-run index (producers' clocks may differ)
        self.keys = [keys.applied(run_id), keys.meta(run_id), keys.live(run_id)]
        self._index = {key: i + 1 for i, key in enumerate(self.keys)}
        self.ops: list[Arg] = []
        self.after: list[tuple[Arg, ...]] = []
        self.points = 0

    def key(self, key: str) -> int:
        index = self._index.get(key)
        if index is None:
            self.keys.append(key)
            index = self._index[key] = len(self.keys)
        return index

    def op(self, code: str, key: str, *args: Arg) -> None:
        self.ops.extend((code, self.key(key), *args))

    def chunk(self, name: str, chunk: bytes) -> None:
        self.op("P", self.k.metric_series(self.run, name), self.key(self.k.metric_tail(self.run, name)), chunk)

    def metric(self, name: str, kind: str, count: int) -> None:
        self.op("K", self.k.metric_index(self.run), name, kind)
        self.op("I", self.k.metric_counts(self.run), name, count)
        self.points += count


def _fold(b: _Builder, event: Event) -> None:  # noqa: C901  # one arm per event type
    run, k = b.run, b.k
    match event:
        case MetricsLogged(name, steps, values, ts):
            b.chunk(name, pack_chunk(steps, values, ts))
            b.metric(name, "series", len(values))
        case ListLogged(name, values, ts):
            if values:
                b.chunk(name, pack_chunk(range(len(values)), values, ts))
            b.metric(name, "list", len(values))
        case RowLogged(name, row, _):
            b.op("R", k.metric_values(run, name), msgpack.packb({c: [v] for c, v in row.items()}, use_bin_type=True))
            b.metric(name, "table", 1)
        case TableLogged(name, columns, _):
            b.op("R", k.metric_values(run, name), msgpack.packb(columns, use_bin_type=True))
            b.metric(name, "table", len(next(iter(columns.values()))))
        case ImageLogged(name, file, _):
            b.op("R", k.metric_values(run, name), file)
            b.metric(name, "image", 1)
        case TagsSet(tags, _):
            for tag, value in tags.items():
                b.op("H", k.tags(run), tag, value)
        case PropertiesAdded(properties, _):
            for prop, value in properties.items():
                b.op("N", k.properties(run), prop, value)
        case FileUploaded(name, size, sha256, ts):
            b.op("H", k.files(run), name, msgpack.packb({"size": size, "sha256": sha256, "ts": ts}))
        case OutputLogged(stream, lines, ts):
            if lines:  # one entry per captured chunk, its lines joined by newlines
                b.op("X", k.output(run), OUTPUT_MAXLEN, stream, "\n".join(lines), ts)
        case StatusChanged(status, error, ts):
            b.op("S", k.meta(run), status, error or "", ts)
            if status in TERMINAL_STATUSES:
                b.after.append(("ZREM", k.live_runs(), run))
                # Its live stream is trimmed a while after the end (:mod:`.ended`).
                b.after.append(("ZADD", k.ended_runs(), "NX", ts if b.now is None else b.now, run))
        case HeartbeatSent(ts):
            b.op("H", k.meta(run), "last_heartbeat", ts)
            b.after.append(("ZADD", k.live_runs(), "XX", ts if b.now is None else b.now, run))
        case RunStarted(experiment, display_name, parent_id, status, ts):
            meta = k.meta(run)
            b.op("N", meta, "experiment", experiment)
            b.op("N", meta, "display_name", display_name)
            b.op("N", meta, "created_at", ts)
            if parent_id:
                b.op("N", meta, "parent_id", parent_id)
                b.after.append(("SADD", k.children(parent_id), run))
            b.op("H", meta, "last_heartbeat", ts)
            b.op("S", meta, status, "", ts)
            b.after.append(("SADD", k.experiments(), experiment))
            b.after.append(("ZADD", k.experiment_runs(experiment), "NX", ts, run))
            b.after.append(("ZADD", k.live_runs(), "NX", ts if b.now is None else b.now, run))


def _compact(events: Iterable[Event]) -> list[Event]:
    """The events as a live update: no heartbeats, newest LIVE_POINTS points per metric.

    The budget is per metric over the whole batch (newest first), not per event: a
    batch may hold many events of one metric, when other events come between its points.
    """
    compact: list[Event] = []
    room: dict[str, int] = {}
    for event in reversed(list(events)):
        if isinstance(event, HeartbeatSent):
            continue
        if isinstance(event, MetricsLogged | ListLogged):
            left = room.get(event.name, LIVE_POINTS)
            if not left:
                continue
            room[event.name] = left - min(left, len(event.values))
            if len(event.values) > left:
                if isinstance(event, MetricsLogged):
                    event = MetricsLogged(event.name, event.steps[-left:], event.values[-left:], event.timestamp)
                else:
                    event = ListLogged(event.name, event.values[-left:], event.timestamp)
        compact.append(event)
    compact.reverse()
    return compact


def _heard_from(events: list[Event]) -> bool:
    """Whether a producer's batch says its run is alive: anything but status changes.

    A batch of statuses alone may come from another process (``runstream cancel``): it
    moves a NotResponding run on by itself, without first bringing it back to Running.
    """
    return any(not isinstance(event, StatusChanged) for event in events)


def live_cap(payload_bytes: int) -> int:
    """The live stream's MAXLEN for an update of ``payload_bytes``: LIVE_BYTES of updates of its size."""
    return max(LIVE_MIN, min(LIVE_MAXLEN, LIVE_BYTES // max(payload_bytes, 1)))


def plan(batch: Batch, keys: Keys, *, producer: str | None = None, now: float | None = None) -> Plan:
    """The writes that apply ``batch`` to its run's record.

    Args:
        producer: overrides the batch's producer; ``""`` applies without a seq check.
        now: the collector's time, scoring runs in the live-run index (default: event times).

    Raises:
        DecodeError: the batch names no producer: ``""`` would skip the seq check.
    """
    if producer is None and not batch.producer:
        raise DecodeError("empty producer id")
    builder = _Builder(keys, batch.run_id, now)
    if (batch.producer if producer is None else producer) and _heard_from(batch.events):
        ts = now if now is not None else batch.events[-1].timestamp
        builder.op("W", keys.meta(batch.run_id), encode_payload([StatusChanged("Running", None, ts)]), ts)
    for event in batch.events:
        _fold(builder, event)
    live = _compact(batch.events)
    payload = encode_payload(live) if live else b""
    args: list[Arg] = [
        batch.producer if producer is None else producer,
        batch.seq,
        live_cap(len(payload)),
        payload,
        *builder.ops,
    ]
    return Plan(builder.keys, args, builder.after, builder.points)
