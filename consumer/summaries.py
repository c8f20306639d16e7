"""A run in a few hundred bytes, for search: its attributes, tags, parameters and metrics' last/min/max.

An ended run's summary never changes, so it is made once (from its record, in Redis
or in the archive alike) and kept in the workspace's summaries hash
(``keys.summaries()``); a run still going is summed up afresh at each search.  A
restore or a delete drops the kept one (:mod:`runstream.archive.lifecycle`).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence
from typing import Any, Final, cast

import msgpack
import numpy as np

from runstream.consumer.reader import RecordReader, time_or_none
from runstream.events import TERMINAL_STATUSES

__all__ = ["summaries", "summarize"]

#: Runs summed up at once, at most (each reads its record).
_AT_ONCE: Final = 16
_CHUNK: Final = 1000


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


async def summarize(reader: RecordReader, run_id: str) -> dict[str, Any] | None:
    """The run's summary; None if there is no such run."""
    meta = await reader.meta(run_id)
    if not meta:
        return None
    tags, params, index = await asyncio.gather(
        reader.tags(run_id), reader.properties(run_id), reader.metric_index(run_id)
    )
    metrics: dict[str, dict[str, Any]] = {}
    for name, info in index.items():
        if info["kind"] not in ("series", "list"):
            continue
        arrays = await reader.arrays(run_id, name)
        if arrays is None or len(arrays[1]) == 0:  # text: the last value only
            metrics[name] = {"last": await reader.last_value(run_id, name), "min": None, "max": None}
            continue
        values = arrays[1]
        finite = values[np.isfinite(values)]
        metrics[name] = {
            "last": float(values[-1]),
            "min": float(finite.min()) if len(finite) else None,
            "max": float(finite.max()) if len(finite) else None,
        }
    started, ended = time_or_none(meta.get("started_at")), time_or_none(meta.get("ended_at"))
    return {
        "run_id": run_id,
        "experiment": meta.get("experiment"),
        "status": meta.get("status"),
        "name": meta.get("display_name"),
        "parent_id": meta.get("parent_id"),
        "created": time_or_none(meta.get("created_at")),
        "started": started,
        "ended": ended,
        "duration": None if started is None or ended is None else ended - started,
        "tags": tags,
        "params": params,
        "metrics": metrics,
    }


async def summaries(reader: RecordReader, run_ids: Sequence[str]) -> list[dict[str, Any]]:
    """The summaries of ``run_ids`` (in order; runs that do not exist left out): kept ones
    read, the others made (and kept, for ended runs)."""
    key = reader.keys.summaries()
    found: dict[str, dict[str, Any]] = {}
    for start in range(0, len(run_ids), _CHUNK):
        chunk = list(run_ids[start : start + _CHUNK])
        for run_id, raw in zip(chunk, cast("list[bytes | None]", await reader.client.hmget(key, chunk)), strict=True):
            if raw is not None:
                found[run_id] = msgpack.unpackb(raw, raw=False)
    missing = [run_id for run_id in run_ids if run_id not in found]
    gate = asyncio.Semaphore(_AT_ONCE)

    async def make(run_id: str) -> None:
        async with gate:
            summary = await summarize(reader, run_id)
        if summary is None:
            return
        found[run_id] = summary
        if summary["status"] in TERMINAL_STATUSES:
            await reader.client.hset(key, run_id, msgpack.packb(summary, use_bin_type=True))

    await asyncio.gather(*(make(run_id) for run_id in missing))
    return [found[run_id] for run_id in run_ids if run_id in found]
