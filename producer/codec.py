"""The wire format: how a batch of one run's events becomes a stream entry and back.

Version 1.  A stream entry (one ``XADD``) carries exactly these fields:

    v   format version, ASCII decimal ("1")
    r   run id
    p   producer id: random per process, so seqs from two processes never collide
    q   seq: per (producer, run), starting at 1, +1 per batch, never reused, below 2**63
    b   payload: msgpack (bin type on) array of event maps

Each event map has a snake_case ``type`` and the fields of its class in
:mod:`runstream.events`; ``ts`` is a Unix time in seconds (float).  Scalar metrics
are columnar: ``{"type": "metric", "name": n, "steps": [...], "values": [...],
"ts": t}`` with arrays of equal length and one time for the points; consecutive
steps travel as ``"step0": first`` instead of the ``steps`` array.  Values keep their msgpack type (int,
float64 with NaN/inf, bool, str).  Nothing else is ever inside: no pickle, no JSON.

:func:`decode_entry` is the one place untyped entry data becomes typed events; it
refuses anything malformed with :class:`~runstream.errors.DecodeError` naming the
reason (the collector dead-letters such entries).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import Any, Final, TypedDict

import msgpack

from runstream.errors import DecodeError
from runstream.events import (
    MAX_NAME_LEN,
    RUN_STATUSES,
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
    Status,
    StatusChanged,
    TableLogged,
    TagsSet,
    Value,
)
from runstream.keys import check_identifier, check_run_id

__all__ = ["MAX_BATCH_BYTES", "MAX_ENTRY_BYTES", "WIRE_VERSION", "Batch", "EntryFields", "decode_entry", "encode_batch"]

WIRE_VERSION: Final = 1
#: Largest payload a collector accepts; the producer splits batches well below it.
MAX_ENTRY_BYTES: Final = 64 * 1024 * 1024
#: Largest payload the producer writes in one entry: larger batches are split (a list, a
#: table, a column of strings goes out in pieces, in consecutive batches).  1 MiB because
#: one entry must never stall anyone: a collector reads 64 entries a call (64 MiB at
#: most, not 4 GiB), and Redis, one command at a time, holds every client while it parses
#: an XADD and while it runs the apply script of one batch (ms for 1 MiB, seconds for 64).
#: A full batch of numbers (16,000 points) is 144-290 KB, so this cuts only batches of
#: long strings; the longest str value (65,536 characters, <= 256 KiB) fits four times.
MAX_BATCH_BYTES: Final = 1024 * 1024


@dataclass(frozen=True, slots=True)
class Batch:
    """One run's events as one stream entry: the unit of delivery and of dedup."""

    run_id: str
    producer: str
    seq: int
    events: list[Event]


class EntryFields(TypedDict):
    """The fields of one stream entry, as the producer writes them."""

    v: int
    r: str
    p: str
    q: int
    b: bytes


# ---------------------------------------------------------------------------- encode


# Field names on the wire, where they differ from the event classes'.
_WIRE_NAMES: Final = {"timestamp": "ts"}


def _event_to_wire(event: Event) -> dict[str, Any]:
    if isinstance(event, MetricsLogged):  # nearly every event: spelt out, not found by fields()
        steps = event.steps
        wire: dict[str, Any] = {"type": "metric", "name": event.name, "values": event.values, "ts": event.timestamp}
        if isinstance(steps, range) and steps.step == 1:
            wire["step0"] = steps.start  # consecutive steps: the first one says it all
        else:
            wire["steps"] = list(steps)
        return wire
    wire = {"type": event.TYPE}
    for f in fields(event):
        wire[_WIRE_NAMES.get(f.name, f.name)] = getattr(event, f.name)
    return wire


def encode_payload(events: list[Event]) -> bytes:
    """msgpack the events of one batch (the ``b`` field)."""
    return msgpack.packb([_event_to_wire(e) for e in events], use_bin_type=True)


def encode_batch(batch: Batch) -> EntryFields:
    """The fields of the stream entry that carries ``batch``."""
    return {
        "v": WIRE_VERSION,
        "r": batch.run_id,
        "p": batch.producer,
        "q": batch.seq,
        "b": encode_payload(batch.events),
    }


# ---------------------------------------------------------------------------- decode


def decode_entry(fields: Mapping[bytes, bytes]) -> Batch:
    """Decode one stream entry's fields (as redis-py returns them) into a :class:`Batch`.

    Raises:
        DecodeError: unknown version, missing or malformed field, or an event that
            does not match its type's shape; ``reason`` says which.
    """
    version = _ascii(fields, b"v")
    if version != str(WIRE_VERSION):
        raise DecodeError(f"unknown wire version {version!r}")
    run_id = _ascii(fields, b"r")
    producer = _ascii(fields, b"p")
    if not producer:  # "" is the collector's own producer id (no seq check)
        raise DecodeError("producer id must not be empty")
    try:
        check_run_id(run_id)  # a forged id could name a folder outside the artifact store
    except ValueError as exc:
        raise DecodeError(str(exc)) from None
    seq_text = _ascii(fields, b"q")
    # ASCII digits only (str.isdigit() takes "²", which int() refuses) and within Redis's
    # signed 64-bit integers (int() also refuses over 4300 digits).
    if not (seq_text.isascii() and seq_text.isdigit() and len(seq_text) <= 19) or not 0 < int(seq_text) < 2**63:
        raise DecodeError(f"seq must be a positive integer, not {seq_text!r}")
    payload = fields.get(b"b")
    if payload is None:
        raise DecodeError("missing field 'b'")
    if len(payload) > MAX_ENTRY_BYTES:
        raise DecodeError(f"payload of {len(payload)} bytes exceeds {MAX_ENTRY_BYTES}")
    events = decode_payload(payload)
    return Batch(run_id=run_id, producer=producer, seq=int(seq_text), events=events)


def decode_payload(payload: bytes) -> list[Event]:
    """Decode the ``b`` field into typed events (see :func:`decode_entry`)."""
    try:
        raw = msgpack.unpackb(payload, raw=False, strict_map_key=True)
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        raise DecodeError(f"payload is not valid msgpack: {exc}") from exc
    if not isinstance(raw, list) or not raw:
        raise DecodeError("payload must be a non-empty array of events")
    return [_event_from_wire(item) for item in raw]


def _event_from_wire(item: object) -> Event:
    if not isinstance(item, dict):
        raise DecodeError(f"event must be a map, not {type(item).__name__}")
    kind = item.get("type")
    decoder = _DECODERS.get(kind) if isinstance(kind, str) else None
    if decoder is None:
        raise DecodeError(f"unknown event type {kind!r}")
    try:
        return decoder(item)
    except _MalformedError as exc:
        raise DecodeError(f"{kind} event: {exc}") from None


class _MalformedError(Exception):
    """A field of one event has the wrong shape (turned into a DecodeError)."""


def _ascii(fields: Mapping[bytes, bytes], key: bytes) -> str:
    value = fields.get(key)
    if value is None:
        raise DecodeError(f"missing field {key.decode()!r}")
    try:
        return value.decode()
    except UnicodeDecodeError:
        raise DecodeError(f"field {key.decode()!r} is not UTF-8") from None


def _get_str(item: dict[str, Any], key: str, *, max_len: int | None = None) -> str:
    value = item.get(key)
    if not isinstance(value, str):
        raise _MalformedError(f"{key!r} must be a str")
    if max_len is not None and not 0 < len(value) <= max_len:
        raise _MalformedError(f"{key!r} must have 1 to {max_len} characters")
    return value


def _get_checked(item: dict[str, Any], key: str, check: Callable[[object], str]) -> str:
    """A field that names a key or a folder (an experiment, a parent run), as ``check`` allows."""
    try:
        return check(item.get(key))
    except (TypeError, ValueError) as exc:
        raise _MalformedError(f"{key!r}: {exc}") from None


def _get_name(item: dict[str, Any]) -> str:
    return _get_str(item, "name", max_len=MAX_NAME_LEN)


def _get_optional_str(item: dict[str, Any], key: str) -> str | None:
    value = item.get(key)
    if value is not None and not isinstance(value, str):
        raise _MalformedError(f"{key!r} must be a str or nil")
    return value


def _get_ts(item: dict[str, Any]) -> float:
    value = item.get("ts")
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise _MalformedError("'ts' must be a finite number")
    return float(value)


#: The types msgpack gives back for a valid value (unpacked with raw=False).
_SCALAR_TYPES: Final = frozenset({int, float, bool, str})


def _get_values(item: dict[str, Any], key: str) -> list[Value]:
    values = item.get(key)
    if not isinstance(values, list):
        raise _MalformedError(f"{key!r} must be an array")
    # One C-level pass over the types (a per-value isinstance loop cost 40% of an apply).
    if not _SCALAR_TYPES.issuperset(map(type, values)):
        odd = next(v for v in values if type(v) not in _SCALAR_TYPES)
        raise _MalformedError(f"{key!r} holds a {type(odd).__name__}")
    return values


def _get_str_map(item: dict[str, Any], key: str) -> dict[str, str]:
    value = item.get(key)
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise _MalformedError(f"{key!r} must be a map of str to str")
    return value


def _get_status(item: dict[str, Any]) -> Status:
    status = item.get("status")
    for known in RUN_STATUSES:
        if status == known:
            return known
    raise _MalformedError(f"unknown status {status!r}")


def _decode_metric(item: dict[str, Any]) -> MetricsLogged:
    values = _get_values(item, "values")
    steps: range | list[int]
    if "step0" in item:
        start = item["step0"]
        if type(start) is not int or start < 0:
            raise _MalformedError("'step0' must be a non-negative int")
        steps = range(start, start + len(values))
    else:
        steps = item.get("steps")  # type: ignore[assignment]  # checked on the next line
        if not isinstance(steps, list) or not all(type(s) is int and s >= 0 for s in steps):
            raise _MalformedError("'steps' must be an array of non-negative ints")
    if not len(steps) == len(values) > 0:
        raise _MalformedError("'steps' and 'values' must be non-empty and of equal length")
    return MetricsLogged(_get_name(item), steps, values, _get_ts(item))


def _decode_row(item: dict[str, Any]) -> RowLogged:
    row = item.get("row")
    if not isinstance(row, dict) or not row:
        raise _MalformedError("'row' must be a non-empty map")
    if not all(isinstance(k, str) and isinstance(v, int | float | str) for k, v in row.items()):
        raise _MalformedError("'row' must map str column names to scalars")
    return RowLogged(_get_name(item), row, _get_ts(item))


def _decode_table(item: dict[str, Any]) -> TableLogged:
    columns = item.get("columns")
    if not isinstance(columns, dict) or not columns:
        raise _MalformedError("'columns' must be a non-empty map")
    if not all(isinstance(col, str) for col in columns):
        raise _MalformedError("'columns' names must be str")
    lengths = {len(_get_values(columns, col)) for col in columns}
    if len(lengths) != 1:
        raise _MalformedError("columns must have equal lengths")
    return TableLogged(_get_name(item), columns, _get_ts(item))


def _decode_file(item: dict[str, Any]) -> FileUploaded:
    size = item.get("size")
    if type(size) is not int or size < 0:
        raise _MalformedError("'size' must be a non-negative int")
    return FileUploaded(_get_str(item, "name", max_len=1024), size, _get_str(item, "sha256"), _get_ts(item))


def _decode_output(item: dict[str, Any]) -> OutputLogged:
    stream = item.get("stream")
    lines = item.get("lines")
    if not isinstance(lines, list) or not all(isinstance(line, str) for line in lines):
        raise _MalformedError("'lines' must be an array of str")
    if stream == "stdout":
        return OutputLogged("stdout", lines, _get_ts(item))
    if stream == "stderr":
        return OutputLogged("stderr", lines, _get_ts(item))
    raise _MalformedError(f"unknown output stream {stream!r}")


_DECODERS: Final[dict[str, Callable[[dict[str, Any]], Event]]] = {
    RunStarted.TYPE: lambda d: RunStarted(
        _get_checked(d, "experiment", functools.partial(check_identifier, "experiment")),
        _get_str(d, "display_name"),
        None if d.get("parent_id") is None else _get_checked(d, "parent_id", check_run_id),
        _get_status(d),
        _get_ts(d),
    ),
    MetricsLogged.TYPE: _decode_metric,
    ListLogged.TYPE: lambda d: ListLogged(_get_name(d), _get_values(d, "values"), _get_ts(d)),
    RowLogged.TYPE: _decode_row,
    TableLogged.TYPE: _decode_table,
    ImageLogged.TYPE: lambda d: ImageLogged(_get_name(d), _get_str(d, "file", max_len=1024), _get_ts(d)),
    TagsSet.TYPE: lambda d: TagsSet(_get_str_map(d, "tags"), _get_ts(d)),
    PropertiesAdded.TYPE: lambda d: PropertiesAdded(_get_str_map(d, "properties"), _get_ts(d)),
    FileUploaded.TYPE: _decode_file,
    OutputLogged.TYPE: _decode_output,
    StatusChanged.TYPE: lambda d: StatusChanged(_get_status(d), _get_optional_str(d, "error"), _get_ts(d)),
    HeartbeatSent.TYPE: lambda d: HeartbeatSent(_get_ts(d)),
}
