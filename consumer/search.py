"""Search across runs, live and archived alike: filter, sort, page (DESIGN §7).

The filter and sort syntax is :mod:`.search_filter`'s; each run is judged on its
summary (:mod:`.summaries`), which for an ended run is read, not recomputed: so a
search over ten thousand runs reads ten thousand small hash fields, whichever tier
their records are in.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import msgpack

from runstream.consumer.reader import RecordReader
from runstream.consumer.search_filter import SortKey, matcher, parse_filter, parse_order_by
from runstream.consumer.summaries import summaries

__all__ = ["Found", "search_runs"]


@dataclass(frozen=True, slots=True)
class Found:
    """A page of the runs that match, and how many match in all."""

    total: int
    runs: list[dict[str, Any]]


def _own(summary: dict[str, Any]) -> dict[str, Any]:
    """A copy of a summary (what summaries are made of packs: a copy quicker than deepcopy's)."""
    copied: dict[str, Any] = msgpack.unpackb(msgpack.packb(summary, use_bin_type=True), raw=False)
    return copied


def _sort(runs: list[dict[str, Any]], keys: list[SortKey]) -> list[dict[str, Any]]:
    """Stable sorts from the last key to the first; a run without the value goes last either way."""
    for key in reversed(keys):
        present = [r for r in runs if key.field.of(r) is not None]
        absent = [r for r in runs if key.field.of(r) is None]
        present.sort(key=functools.partial(_value_order, key), reverse=key.descending)
        runs = present + absent
    return runs


def _value_order(key: SortKey, run: dict[str, Any]) -> tuple[int, Any]:
    """Numbers before text, each in its own order."""
    value = key.field.of(run)
    if isinstance(value, bool | int | float):
        return 0, float(value)
    return 1, str(value)


async def search_runs(
    reader: RecordReader,
    experiment: str | None = None,
    filter: str | None = None,  # the name every tracker's search uses
    order_by: list[str] | str | None = None,
    limit: int | None = None,
    offset: int = 0,
) -> Found:
    """The runs of ``experiment`` (or of every experiment) that match ``filter``, sorted by
    ``order_by`` (newest first by default), from ``offset``, ``limit`` of them at most.

    Raises:
        FilterError: the filter or a sort key does not parse.
    """
    clauses, keys = parse_filter(filter), parse_order_by(order_by)
    names = [experiment] if experiment else await reader.experiments()
    run_ids = [run_id for name in names for run_id in await reader.runs(name)]
    matches = matcher(clauses)
    matching = [s for s in await summaries(reader, run_ids) if matches(s)]
    if not keys:
        matching.sort(key=lambda s: s.get("created") or 0.0, reverse=True)
    matching = _sort(matching, keys)
    end = None if limit is None else offset + limit
    # The summaries are this process' shared copies: the caller gets its own.
    return Found(len(matching), [_own(s) for s in matching[offset:end]])
