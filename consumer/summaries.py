"""A run in a few hundred bytes, for search: its attributes, tags, parameters and metrics' last/min/max.

An ended run's summary seldom changes, so it is made once (from its record, in Redis
or in the archive alike) and kept in the workspace's summaries hash
(``keys.summaries()``), until a batch applied to the run after its end (a straggling
producer) has the collector drop it; a run still going is summed up again whenever it
changed.  Runs
whose records are in Redis are summed up a few hundred at a time, in two round trips
(their hashes, then their series), whatever their number.  A
restore or a delete drops the kept one (:mod:`runstream.archive.lifecycle`).

A search over 10,000 runs reads them all, so this process keeps what it decoded: a kept
summary's dict by its packed bytes (the same bytes read again: no decoding), and a
running run's summary by its version, its applied seqs and status, which whatever changes
a summary moves (a batch applied, or the collector ending a run itself).  The summaries
returned are those shared dicts: read them, never change them.
"""

from __future__ import annotations

import asyncio
import math
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any, Final, cast

import msgpack

from runstream.archive.summary import series_stats, summary
from runstream.connection import text_hash
from runstream.consumer.downsample import series_arrays
from runstream.consumer.reader import RecordReader, unpack_values
from runstream.events import TERMINAL_STATUSES

__all__ = ["summaries", "summarize"]

#: Runs read in one pipeline, at most (their hashes and series).
_CHUNK: Final = 500
#: Kept summaries asked for in one HMGET (several go in one pipeline).
_HMGET_CHUNK: Final = 2000
#: Summaries this process keeps decoded, of each kind (about 1-2 KB each).
_KEEP: Final = 20_000
Arrays = tuple[Any, Any, str]
#: What a running run's summary was made from: its applied seqs and its status.
Version = tuple[tuple[bytes, bytes], ...]

#: Kept summaries decoded, by workspace and run: (the packed bytes, the summary).
_decoded: OrderedDict[tuple[str, str], tuple[bytes, dict[str, Any]]] = OrderedDict()
#: Summaries of runs still going, by their meta key: (their version then, the summary).
_running: OrderedDict[str, tuple[Version, dict[str, Any]]] = OrderedDict()


def _remember(cache: OrderedDict[Any, Any], key: Any, value: Any) -> None:
    cache[key] = value
    cache.move_to_end(key)
    while len(cache) > _KEEP:
        cache.popitem(last=False)


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


async def summarize(reader: RecordReader, run_id: str) -> dict[str, Any] | None:
    """The run's summary, from its record wherever it is; None if there is no such run."""
    meta = await reader.meta(run_id)
    if not meta:
        return None
    tags, params, index = await asyncio.gather(
        reader.tags(run_id), reader.properties(run_id), reader.metric_index(run_id)
    )
    metrics: dict[str, dict[str, Any]] = {}
    for name, info in index.items():
        if info["kind"] in ("series", "list"):
            metrics[name] = _stats(await reader.arrays(run_id, name)) or {
                "last": await reader.last_value(run_id, name),
                "min": None,
                "max": None,
            }
    return summary(run_id, meta, tags, params, metrics)


def _stats(arrays: Arrays | None) -> dict[str, Any] | None:
    return None if arrays is None else series_stats(arrays[1])


async def _summarize_in_redis(reader: RecordReader, run_ids: list[str]) -> dict[str, dict[str, Any] | None]:
    """The summaries of runs whose records are in Redis, in two round trips for them all
    (an archived run found among them is summed up from its archive)."""
    keys = reader.keys
    async with reader.client.pipeline(transaction=False) as pipe:
        for run_id in run_ids:
            for key in (keys.meta(run_id), keys.tags(run_id), keys.properties(run_id), keys.metric_index(run_id)):
                _ = pipe.hgetall(key)
        replies = await pipe.execute()
    records = {run_id: [text_hash(r) for r in replies[4 * n : 4 * n + 4]] for n, run_id in enumerate(run_ids)}
    wanted = [
        (run_id, name, kind)
        for run_id, (meta, _, _, kinds) in records.items()
        if meta and "deleted" not in meta and "archive" not in meta
        for name, kind in kinds.items()
        if kind in ("series", "list")
    ]
    async with reader.client.pipeline(transaction=False) as pipe:
        for run_id, name, _ in wanted:
            _ = pipe.lrange(keys.metric_series(run_id, name), 0, -1)
            _ = pipe.get(keys.metric_tail(run_id, name))
        parts = await pipe.execute()
    metrics: dict[str, dict[str, Any]] = {run_id: {} for run_id in run_ids}
    for n, (run_id, name, _) in enumerate(wanted):
        packed = [*cast("list[bytes]", parts[2 * n]), *([parts[2 * n + 1]] if parts[2 * n + 1] else [])]
        stats = _stats(series_arrays(packed))
        if stats is None:  # text: its last value
            values = unpack_values(b"".join(packed))
            stats = {"last": values[-1] if values else None, "min": None, "max": None}
        metrics[run_id][name] = stats
    found: dict[str, dict[str, Any] | None] = {}
    for run_id, (meta, tags, params, _) in records.items():
        if not meta or "deleted" in meta:
            found[run_id] = None
        elif "archive" in meta:
            found[run_id] = await summarize(reader, run_id)
        else:
            found[run_id] = summary(run_id, meta, tags, params, metrics[run_id])
    return found


async def summaries(reader: RecordReader, run_ids: Sequence[str]) -> list[dict[str, Any]]:
    """The summaries of ``run_ids`` (in order; runs that do not exist left out): kept ones
    read, the others made (and kept, for ended runs)."""
    key = reader.keys.summaries()
    found: dict[str, dict[str, Any]] = {}
    for run_id, raw in (await _kept(reader, key, run_ids)).items():
        found[run_id] = _decode(key, run_id, raw)
    missing = [run_id for run_id in run_ids if run_id not in found]
    for start in range(0, len(missing), _CHUNK):
        found |= await _not_kept(reader, missing[start : start + _CHUNK])
    return [found[run_id] for run_id in run_ids if run_id in found]


async def _kept(reader: RecordReader, key: str, run_ids: Sequence[str]) -> dict[str, bytes]:
    """The kept summaries of ``run_ids``, packed.  When they are most of the workspace's,
    the whole hash is read: asking for 10,000 runs by name costs more (the request's
    encoding) than reading a few thousand more."""
    client = reader.client
    if len(run_ids) >= 1000 and 2 * len(run_ids) >= await client.hlen(key):
        every = cast("dict[bytes, bytes]", await client.hgetall(key))
        return {run_id: raw for run_id in run_ids if (raw := every.get(run_id.encode())) is not None}
    chunks = [list(run_ids[start : start + _HMGET_CHUNK]) for start in range(0, len(run_ids), _HMGET_CHUNK)]
    async with client.pipeline(transaction=False) as pipe:  # one round trip for them all
        for chunk in chunks:
            _ = pipe.hmget(key, chunk)
        replies = await pipe.execute()
    return {
        run_id: raw
        for chunk, raws in zip(chunks, replies, strict=True)
        for run_id, raw in zip(chunk, cast("list[bytes | None]", raws), strict=True)
        if raw is not None
    }


async def _not_kept(reader: RecordReader, run_ids: list[str]) -> dict[str, dict[str, Any]]:
    """The summaries of runs without a kept one: a running run's as this process made it
    if the run has not changed since, else made (and kept, for a run that has ended)."""
    versions = await _versions(reader, run_ids)
    found: dict[str, dict[str, Any]] = {}
    changed = []
    for run_id in run_ids:
        version, seen = versions[run_id], _running.get(reader.keys.meta(run_id))
        if version is not None and seen is not None and seen[0] == version:
            found[run_id] = seen[1]
        else:
            changed.append(run_id)
    kept: dict[str, bytes] = {}
    for run_id, made in (await _summarize_in_redis(reader, changed) if changed else {}).items():
        if made is None:
            continue
        found[run_id] = made
        if made["status"] in TERMINAL_STATUSES:
            kept[run_id] = msgpack.packb(made, use_bin_type=True)
            _running.pop(reader.keys.meta(run_id), None)  # read from the kept one from now on
        elif (version := versions[run_id]) is not None:
            _remember(_running, reader.keys.meta(run_id), (version, made))
    if kept:
        await reader.client.hset(reader.keys.summaries(), mapping=kept)  # type: ignore[arg-type]
        # A batch applied since the version was read (a late one, to an ended run) may have
        # changed what was kept, and its collector dropped the kept summary before this put
        # it back: read the versions again, and drop what they say is out of date.
        now = await _versions(reader, list(kept))
        if stale := [run_id for run_id in kept if now[run_id] != versions[run_id]]:
            await reader.client.hdel(reader.keys.summaries(), *stale)
    return found


def _decode(key: str, run_id: str, raw: bytes) -> dict[str, Any]:
    """The kept summary ``raw``, decoded once for as long as it stays the same bytes."""
    seen = _decoded.get((key, run_id))
    if seen is not None and seen[0] == raw:
        return seen[1]
    made: dict[str, Any] = msgpack.unpackb(raw, raw=False)
    _remember(_decoded, (key, run_id), (raw, made))
    return made


async def _versions(reader: RecordReader, run_ids: list[str]) -> dict[str, Version | None]:
    """Each run's version (None for a run that is not plainly running in Redis: archived,
    deleted, gone), read before its record so that a summary is never older than its version."""
    keys = reader.keys
    async with reader.client.pipeline(transaction=False) as pipe:
        for run_id in run_ids:
            _ = pipe.hmget(keys.meta(run_id), ["status", "archive", "deleted"])
            _ = pipe.hgetall(keys.applied(run_id))
        replies = await pipe.execute()
    versions: dict[str, Version | None] = {}
    for n, run_id in enumerate(run_ids):
        (status, archive, deleted), seqs = replies[2 * n], cast("dict[bytes, bytes]", replies[2 * n + 1])
        plain = status is not None and archive is None and deleted is None
        versions[run_id] = ((b"", status), *sorted(seqs.items())) if plain else None
    return versions
