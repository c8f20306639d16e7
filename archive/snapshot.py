"""A run's whole record, read out of Redis at one moment: what the archive keeps.

The record's keys are listed in :mod:`runstream.collector.records`.  A snapshot holds
each as Redis has it (strings decoded, packed series and msgpack items as bytes), read
in one transaction on the run's slot so that it is one moment's record; the applied
seqs it holds are what :mod:`.archiver` checks again before the keys go, so a batch
applied in between is never dropped with them.

The live stream is not part of it: an ended run's live stream is already trimmed to
its final update (:mod:`runstream.collector.ended`), which stays in Redis with the
stub, as the resume point subscribers are given.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import cast

from runstream.connection import RedisClient, text_hash
from runstream.keys import Keys

__all__ = ["OutputEntry", "RunSnapshot", "read_snapshot", "record_keys"]

#: One entry of the output stream: its id, and fields s (stream), l (lines), t (time).
OutputEntry = tuple[str, str, bytes, str]


@dataclass
class RunSnapshot:
    """One run's record, key by key."""

    run_id: str
    meta: dict[str, str]
    tags: dict[str, str] = field(default_factory=dict)
    properties: dict[str, str] = field(default_factory=dict)
    kinds: dict[str, str] = field(default_factory=dict)  # metric name -> kind
    counts: dict[str, str] = field(default_factory=dict)  # metric name -> points, rows or images
    series: dict[str, list[bytes]] = field(default_factory=dict)  # packed: the list's items, then the tail
    items: dict[str, list[bytes]] = field(default_factory=dict)  # v:<name>: tables' msgpack, image names
    files: dict[str, bytes] = field(default_factory=dict)  # file name -> msgpack info
    children: list[str] = field(default_factory=list)
    applied: dict[str, str] = field(default_factory=dict)  # producer -> last seq applied
    output: list[OutputEntry] = field(default_factory=list)


async def read_snapshot(client: RedisClient, keys: Keys, run_id: str) -> RunSnapshot | None:
    """The run's record as it is now; None if it has none."""
    names = sorted(text_hash(await client.hgetall(keys.metric_index(run_id))))
    async with client.pipeline(transaction=True) as pipe:
        _ = pipe.hgetall(keys.meta(run_id))
        _ = pipe.hgetall(keys.tags(run_id))
        _ = pipe.hgetall(keys.properties(run_id))
        _ = pipe.hgetall(keys.metric_index(run_id))
        _ = pipe.hgetall(keys.metric_counts(run_id))
        _ = pipe.hgetall(keys.files(run_id))
        _ = pipe.smembers(keys.children(run_id))
        _ = pipe.hgetall(keys.applied(run_id))
        _ = pipe.xrange(keys.output(run_id))
        for name in names:
            _ = pipe.lrange(keys.metric_series(run_id, name), 0, -1)
            _ = pipe.get(keys.metric_tail(run_id, name))
            _ = pipe.lrange(keys.metric_values(run_id, name), 0, -1)
        replies = await pipe.execute()
    meta, tags, props, kinds, counts, files, children, applied, output = replies[:9]
    if not meta:
        return None
    snapshot = RunSnapshot(
        run_id,
        text_hash(meta),
        tags=text_hash(tags),
        properties=text_hash(props),
        kinds=text_hash(kinds),
        counts=text_hash(counts),
        files={k.decode(): v for k, v in cast("dict[bytes, bytes]", files).items()},
        children=sorted(m.decode() for m in cast("set[bytes]", children)),
        applied=text_hash(applied),
        output=[
            (entry_id.decode(), f[b"s"].decode(), f[b"l"], f[b"t"].decode())
            for entry_id, f in cast("list[tuple[bytes, dict[bytes, bytes]]]", output)
        ],
    )
    rest = replies[9:]
    for at, name in enumerate(names):
        sealed, tail, items = rest[3 * at : 3 * at + 3]
        parts = [*cast("list[bytes]", sealed), *([cast("bytes", tail)] if tail else [])]
        if parts:
            snapshot.series[name] = parts
        if items:
            snapshot.items[name] = list(cast("list[bytes]", items))
    if set(snapshot.kinds) != set(names):  # a metric came between the two reads: not one moment
        return await read_snapshot(client, keys, run_id)
    return snapshot


def record_keys(keys: Keys, run_id: str, metrics: Iterable[str]) -> list[str]:
    """The keys of the run's record that the archive replaces (all but meta, seqs and
    live), for the metrics named."""
    names = sorted(metrics)
    return [
        keys.tags(run_id),
        keys.properties(run_id),
        keys.metric_index(run_id),
        keys.metric_counts(run_id),
        keys.files(run_id),
        keys.children(run_id),
        keys.output(run_id),
        *(keys.metric_series(run_id, name) for name in names),
        *(keys.metric_tail(run_id, name) for name in names),
        *(keys.metric_values(run_id, name) for name in names),
    ]
