"""Reading run records: the shapes ``get_metrics`` and friends return.

Reads what the collector wrote (layout in :mod:`runstream.collector.records`) with
a few round trips per call, whatever the series length: a packed series comes back
in one LRANGE + GET and is decoded in bulk.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Final, cast

import msgpack

from runstream.collector.records import Series, unpack_series, unpack_values
from runstream.connection import RedisClient, text_hash
from runstream.consumer.archived_record import ArchivedRecord
from runstream.errors import RunstreamError
from runstream.events import Value
from runstream.keys import Keys

if TYPE_CHECKING:
    from runstream.consumer.archived_record import Arrays

__all__ = [
    "RECORD_GRACE",
    "MetricValue",
    "RecordNotReadyError",
    "RecordReader",
    "collectors_alive",
    "created_at",
    "time_or_none",
    "unpack_values",
    "wait_applied",
    "wait_for_record",
]

#: One metric as ``get_metrics`` returns it (see the table in DESIGN §2).
MetricValue = Value | list[Value] | dict[str, list[Value]] | str | list[str]


#: The meta hash's fields that make it an archived run's stub (runstream.archive.archived).
_ARCHIVE_FIELDS = ("archive", "archive_path", "archive_digest", "archived_at")


class RecordReader:
    """Reads the records of one workspace through an asyncio Redis client.

    An archived run (its meta hash names the archive: :mod:`runstream.archive`) is read
    from its archive, in the same shapes: every method answers for it as it did before.
    """

    def __init__(self, client: RedisClient, keys: Keys) -> None:
        self.client = client
        self.keys = keys

    async def archived(self, run_id: str) -> ArchivedRecord | None:
        """The run's archived record, if the run is archived."""
        url, path, digest = cast(
            "list[bytes | None]",
            await self.client.hmget(self.keys.meta(run_id), ["archive", "archive_path", "archive_digest"]),
        )
        if url is None or path is None:
            return None
        try:
            from runstream.archive.archived import cached_record  # needs the archive extra
        except ImportError as exc:
            raise RunstreamError(
                f"run {run_id} is archived ({url.decode()}); reading it needs the archive extra:"
                f" pip install 'runstream[archive]' ({exc})"
            ) from None
        key = (url.decode(), path.decode(), (digest or b"").decode())
        return ArchivedRecord(key, await cached_record(*key))

    async def meta(self, run_id: str) -> dict[str, str]:
        """The run's meta hash ({} if there is no run: a deleted run's is a tombstone)."""
        meta = text_hash(cast("dict[bytes, bytes]", await self.client.hgetall(self.keys.meta(run_id))))
        if "deleted" in meta:
            return {}
        for name in _ARCHIVE_FIELDS:
            meta.pop(name, None)
        return meta

    async def metas(self, run_ids: Sequence[str]) -> list[dict[str, str]]:
        """:meth:`meta` of each run, in one round trip."""
        async with self.client.pipeline(transaction=False) as pipe:
            for run_id in run_ids:
                _ = pipe.hgetall(self.keys.meta(run_id))
            replies = await pipe.execute()
        metas = []
        for reply in replies:
            meta = text_hash(cast("dict[bytes, bytes]", reply))
            metas.append({} if "deleted" in meta else {k: v for k, v in meta.items() if k not in _ARCHIVE_FIELDS})
        return metas

    async def status(self, run_id: str) -> str | None:
        raw = cast("bytes | None", await self.client.hget(self.keys.meta(run_id), "status"))
        return raw.decode() if raw else None

    async def tags(self, run_id: str) -> dict[str, str]:
        if archived := await self.archived(run_id):
            return dict(archived.record.tags)
        return text_hash(cast("dict[bytes, bytes]", await self.client.hgetall(self.keys.tags(run_id))))

    async def properties(self, run_id: str) -> dict[str, str]:
        if archived := await self.archived(run_id):
            return dict(archived.record.properties)
        return text_hash(cast("dict[bytes, bytes]", await self.client.hgetall(self.keys.properties(run_id))))

    async def files(self, run_id: str) -> dict[str, dict[str, Any]]:
        if archived := await self.archived(run_id):
            return {name: msgpack.unpackb(info, raw=False) for name, info in sorted(archived.record.files.items())}
        raw = cast("dict[bytes, bytes]", await self.client.hgetall(self.keys.files(run_id)))
        return {name.decode(): msgpack.unpackb(info, raw=False) for name, info in sorted(raw.items())}

    async def children(self, run_id: str) -> list[str]:
        if archived := await self.archived(run_id):
            return sorted(archived.record.children)
        members = cast("set[bytes]", await self.client.smembers(self.keys.children(run_id)))
        return sorted(m.decode() for m in members)

    async def applied_seq(self, run_id: str, producer: str) -> int:
        raw = cast("bytes | None", await self.client.hget(self.keys.applied(run_id), producer))
        return int(raw) if raw else 0

    async def metric_index(self, run_id: str) -> dict[str, dict[str, Any]]:
        """Each metric's kind and how many points (rows, images) it holds."""
        if archived := await self.archived(run_id):
            kinds, counted = archived.record.kinds, archived.record.counts
            return {name: {"kind": kind, "count": int(counted.get(name, 0))} for name, kind in sorted(kinds.items())}
        async with self.client.pipeline(transaction=False) as pipe:
            _ = pipe.hgetall(self.keys.metric_index(run_id))
            _ = pipe.hgetall(self.keys.metric_counts(run_id))
            kinds, counts = await pipe.execute()
        counted = text_hash(cast("dict[bytes, bytes]", counts))
        return {
            name: {"kind": kind, "count": int(counted.get(name, 0))}
            for name, kind in sorted(text_hash(cast("dict[bytes, bytes]", kinds)).items())
        }

    async def metric_index_at(self, run_id: str) -> tuple[dict[str, dict[str, Any]], str]:
        """The metric index and the live-stream id it is current to, read at one moment: a
        follower of the stream from that id gets exactly what came after the counts (read
        apart, a batch applied between them would be in neither)."""
        if await self.archived(run_id) is not None:  # nothing changes: no moment to share
            return await self.metric_index(run_id), await self.live_id(run_id)
        keys = self.keys
        async with self.client.pipeline(transaction=True) as pipe:
            _ = pipe.hgetall(keys.metric_index(run_id))
            _ = pipe.hgetall(keys.metric_counts(run_id))
            _ = pipe.xrevrange(keys.live(run_id), count=1)
            kinds, counts, newest = await pipe.execute()
        counted = text_hash(cast("dict[bytes, bytes]", counts))
        index = {
            name: {"kind": kind, "count": int(counted.get(name, 0))}
            for name, kind in sorted(text_hash(cast("dict[bytes, bytes]", kinds)).items())
        }
        live = cast("list[tuple[bytes, Any]]", newest)
        return index, live[0][0].decode() if live else "0-0"

    async def last_value(self, run_id: str, name: str) -> Value | None:
        """The newest point of a series, reading only its newest chunks."""
        if archived := await self.archived(run_id):
            values = archived.values(list(await archived.numbers(name))[-1:])
            return values[-1] if values else None
        tail = cast("bytes | None", await self.client.get(self.keys.metric_tail(run_id, name)))
        if not tail:
            tail = cast("bytes | None", await self.client.lindex(self.keys.metric_series(run_id, name), -1))
        values = unpack_values(tail) if tail else []
        return values[-1] if values else None

    async def run_count(self, experiment: str) -> int:
        return int(await self.client.zcard(self.keys.experiment_runs(experiment)))

    async def live_id(self, run_id: str) -> str:
        """The id of the newest live update ("0-0" if none): follow the run from here."""
        newest = cast("list[tuple[bytes, Any]]", await self.client.xrevrange(self.keys.live(run_id), count=1))
        return newest[0][0].decode() if newest else "0-0"

    async def output(self, run_id: str, limit: int) -> list[dict[str, Any]]:
        """The newest ``limit`` output lines, oldest first (``id``: entry id / line)."""
        if archived := await self.archived(run_id):
            kept = archived.record.output[-limit:]
            entries = [(i.encode(), {b"s": s.encode(), b"l": lines, b"t": t.encode()}) for i, s, lines, t in kept][::-1]
        else:
            entries = cast(
                "list[tuple[bytes, dict[bytes, bytes]]]",
                await self.client.xrevrange(self.keys.output(run_id), count=limit),
            )
        lines = [
            {
                "id": f"{entry_id.decode()}/{k}",
                "stream": fields[b"s"].decode(),
                "line": line,
                "time": float(fields[b"t"]),
            }
            for entry_id, fields in reversed(entries)
            for k, line in enumerate(fields[b"l"].decode(errors="replace").split("\n"))
        ]
        return lines[-limit:]

    async def experiments(self) -> list[str]:
        members = cast("set[bytes]", await self.client.smembers(self.keys.experiments()))
        return sorted(m.decode() for m in members)

    async def runs(self, experiment: str) -> list[str]:
        """Run ids of an experiment, newest first."""
        ids = cast("list[bytes]", await self.client.zrevrange(self.keys.experiment_runs(experiment), 0, -1))
        return [i.decode() for i in ids]

    async def packed_parts(self, run_id: str, name: str) -> list[bytes]:
        """A metric's packed series as stored: the sealed items, then the tail (each whole chunks)."""
        if archived := await self.archived(run_id):
            return await archived.packed_parts(name)
        async with self.client.pipeline(transaction=False) as pipe:
            _ = pipe.lrange(self.keys.metric_series(run_id, name), 0, -1)
            _ = pipe.get(self.keys.metric_tail(run_id, name))
            sealed, tail = await pipe.execute()
        return [*cast("list[bytes]", sealed), *([tail] if tail else [])]

    async def packed(self, run_id: str, name: str) -> bytes:
        """A metric's packed series as one string."""
        return b"".join(await self.packed_parts(run_id, name))

    async def arrays(self, run_id: str, name: str) -> Arrays | None:
        """A numeric series as arrays (steps, values as float64, the values' type); None for text."""
        if archived := await self.archived(run_id):
            return await archived.arrays(name)
        from runstream.consumer.downsample import series_arrays  # numpy: the server extra's

        return series_arrays(await self.packed_parts(run_id, name))

    async def series(self, run_id: str, name: str) -> Series:
        """A metric's packed series, decoded (steps, values, times)."""
        return unpack_series(await self.packed(run_id, name))

    async def metrics(self, run_id: str, name: str | None = None) -> dict[str, MetricValue]:
        """Every metric (or the one named) in the shape of DESIGN §2's table."""
        archived = await self.archived(run_id)
        if archived is not None:
            index = dict(archived.record.kinds)
        else:
            index = text_hash(cast("dict[bytes, bytes]", await self.client.hgetall(self.keys.metric_index(run_id))))
        if name is not None:
            index = {name: index[name]} if name in index else {}
        names = list(index)
        values = await asyncio.gather(*(self._metric(run_id, n, index[n], archived) for n in names))
        return dict(zip(names, values, strict=True))

    async def _metric(self, run_id: str, name: str, kind: str, archived: ArchivedRecord | None) -> MetricValue:
        if kind in ("series", "list"):
            if archived is not None:
                points = archived.values(await archived.numbers(name))
            else:
                points = unpack_values(await self.packed(run_id, name))
            return points[0] if kind == "series" and len(points) == 1 else points
        if archived is not None:
            items = archived.record.items.get(name, [])
        else:
            items = cast("list[bytes]", await self.client.lrange(self.keys.metric_values(run_id, name), 0, -1))
        if kind == "image":
            files = [i.decode() for i in items]
            return files[0] if len(files) == 1 else files
        table: dict[str, list[Value]] = {}
        for item in items:
            try:
                rows = msgpack.unpackb(item, raw=False)
            except (ValueError, msgpack.UnpackException):
                continue  # an image's file name: another process logged the name as an image
            for column, column_values in rows.items() if isinstance(rows, dict) else ():
                table.setdefault(column, []).extend(column_values)
        return table

    async def details(self, run_id: str) -> dict[str, Any]:
        """What ``get_details`` returns: id, experiment, status, times, properties, tags, error, files,
        and ``lostBatches``: batches the collector gave up waiting for (gaps in a producer's seqs,
        each one dead-lettered), 0 for a run that lost none."""
        meta, tags, properties, files = await asyncio.gather(
            self.meta(run_id), self.tags(run_id), self.properties(run_id), self.files(run_id)
        )
        return {
            "runId": run_id,
            "experiment": meta.get("experiment"),
            "displayName": meta.get("display_name"),
            "status": meta.get("status"),
            "parentRunId": meta.get("parent_id"),
            "createdTimeUtc": time_or_none(meta.get("created_at")),
            "startTimeUtc": time_or_none(meta.get("started_at")),
            "endTimeUtc": time_or_none(meta.get("ended_at")),
            "error": meta.get("error"),
            "lostBatches": int(meta.get("lost_batches") or 0),
            "properties": properties,
            "tags": tags,
            "files": list(files),
        }


def time_or_none(text: str | None) -> float | None:
    """A time field of the run's meta hash (absent or empty: None)."""
    return float(text) if text else None


#: A collector whose last report is older than this is taken for gone.
COLLECTOR_STALE_AFTER = 45.0


class RecordNotReadyError(TimeoutError):
    """The collector has not applied what this process logged within the bound."""


async def collectors_alive(client: RedisClient, keys: Keys, now: float) -> list[str]:
    """Readers of collectors that reported within :data:`COLLECTOR_STALE_AFTER` seconds."""
    reports = cast("dict[bytes, bytes]", await client.hgetall(keys.collectors()))
    alive = []
    for reader, report in reports.items():
        try:
            updated = float(json.loads(report).get("updated_at", 0))
        except (ValueError, AttributeError):
            continue
        if now - updated < COLLECTOR_STALE_AFTER:
            alive.append(reader.decode())
    return alive


def created_at(run_id: str) -> int | None:
    """The unix time a run id names (``<experiment>_<unix seconds>_<8 hex>``), if it names one."""
    parts = run_id.rsplit("_", 2)
    if len(parts) != 3:
        return None
    _, seconds, tail = parts
    if not (seconds.isascii() and seconds.isdigit() and len(tail) == 8 and set(tail) <= set("0123456789abcdef")):
        return None
    return int(seconds)


#: Seconds a run started a moment ago is waited for, when its record is asked for.
RECORD_GRACE: Final = 5.0


async def wait_for_record(reader: RecordReader, run_id: str, bound: float) -> dict[str, str]:
    """The run's meta, waiting up to ``bound`` seconds for it to appear while a collector runs.

    A run logged a moment ago may still sit in an ingest stream (its record is made
    when a collector applies its first batch), so a command given its id right away
    should not call it unknown.  Only an id that names a time within ``bound`` of now
    is waited for: any other would have a record by now, so an unknown one is
    answered at once.  Blocks on the run's live stream, which gets its first entry
    with that batch; returns ``{}`` if no record appears.
    """
    meta = await reader.meta(run_id)
    made = created_at(run_id)
    if meta or made is None or abs(time.time() - made) > bound:
        return meta
    if not await collectors_alive(reader.client, reader.keys, time.time()):
        return meta
    deadline = time.monotonic() + bound
    while not meta and (left := deadline - time.monotonic()) > 0:
        await reader.client.xread({reader.keys.live(run_id): "0-0"}, count=1, block=max(1, int(min(left, 0.5) * 1000)))
        meta = await reader.meta(run_id)
    return meta


async def wait_applied(reader: RecordReader, run_id: str, producer: str, seq: int, bound: float) -> None:
    """Block until the collector has applied ``producer``'s batches up to ``seq`` of the run.

    Blocks on the run's live stream (each applied batch adds an entry) rather than
    polling, re-checking the applied seq after each wake.

    Raises:
        RecordNotReadyError: not within ``bound`` seconds; the message names the likely cause.
        RunstreamError: the run was deleted.
    """
    client, live = reader.client, reader.keys.live(run_id)
    deadline = time.monotonic() + bound
    newest = cast("list[tuple[bytes, Any]]", await client.xrevrange(live, count=1))
    last = newest[0][0] if newest else b"0-0"
    while await reader.applied_seq(run_id, producer) < seq:
        if await client.hexists(reader.keys.meta(run_id), "deleted"):
            raise RunstreamError(f"run {run_id} was deleted")
        left = deadline - time.monotonic()
        if left <= 0:
            alive = await collectors_alive(client, reader.keys, time.time())
            cause = (
                "no collector is running for this workspace (start one: `runstream collector`)"
                if not alive
                else f"the collectors ({', '.join(alive)}) are behind"
            )
            raise RecordNotReadyError(
                f"run {run_id}: what was logged here is not in its record after {bound} s: {cause}"
            )
        reply = await client.xread({live: last}, count=100, block=max(1, int(min(left, 0.5) * 1000)))
        for _, entries in cast("list[tuple[bytes, list[tuple[bytes, Any]]]]", reply or []):
            last = entries[-1][0]
