"""Archived runs read back: the stub names the archive, and its record is kept decoded.

An archived run's meta hash (its stub, :mod:`.archiver`) holds ``archive`` (the
store's URL), ``archive_path`` (the run's folder in it) and ``archive_digest``.
Any reader opens the store from the URL itself (credentials for S3 from the usual
``AWS_*`` variables), so a training script, the CLI and the server need no archive
settings to read what a collector archived.  Records are opened once and kept,
least recently used first out, up to a budget of points: opening one fetches its small
files (checked against the manifest) and its series file's footer; the first read of a
metric then fetches that metric's row group alone, by range (:mod:`.series_file`), and
decodes it (about 10 ms for a million points: the run's other metrics are not fetched),
later reads nothing.  An archived record never changes (a late batch restores it into
Redis first, and the next archive has another digest), so the cache needs no
invalidation; a file set replaced under an open record fails its reads, never mixes.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Sequence
from typing import Final

import numpy as np
import numpy.typing as npt
import obstore
import pyarrow as pa

from runstream.archive.columns import Segment, repack
from runstream.archive.fileset import (
    MANIFEST,
    OUTPUT,
    REST,
    SERIES,
    ArchiveError,
    Record,
    check,
    read_manifest,
    record_of,
)
from runstream.archive.series_file import Points, RangedFile, indexed_series, open_series
from runstream.archive.store import ArchiveStore, NotFoundError, open_store

__all__ = ["ARCHIVE_FIELDS", "cached_record", "packed_parts", "series_arrays"]

#: The meta hash's fields that make it an archived run's stub.
ARCHIVE_FIELDS: Final = ("archive", "archive_path", "archive_digest", "archived_at")
#: Points of decoded records kept (about 24 bytes each, plus the packed form once built).
BUDGET: Final = 20_000_000

_stores: dict[str, ArchiveStore] = {}
_records: OrderedDict[tuple[str, str, str], Record] = OrderedDict()
_packed: dict[tuple[str, str, str, str], list[bytes]] = {}
_loading: dict[tuple[str, str, str], asyncio.Future[Record]] = {}


def _store(url: str) -> ArchiveStore:
    store = _stores.get(url)
    if store is None:
        store = _stores[url] = open_store(url)
    return store


async def cached_record(url: str, path: str, digest: str) -> Record:
    """The archived record at ``path`` in the store at ``url`` (loaded once; concurrent
    readers of one record share its load)."""
    key = (url, path, digest)
    record = _records.get(key)
    if record is not None:
        _records.move_to_end(key)
        return record
    pending = _loading.get(key)
    if pending is not None:
        return await asyncio.shield(pending)
    future: asyncio.Future[Record] = asyncio.get_running_loop().create_future()
    _loading[key] = future
    try:
        record = await asyncio.to_thread(open_record, _store(url), path)
    except BaseException as exc:
        future.set_exception(exc)
        future.exception()  # retrieved: only the waiters re-raise it
        raise
    else:
        future.set_result(record)
        _keep(key, record)
    finally:
        del _loading[key]
    return record


def open_record(store: ArchiveStore, location: str) -> Record:
    """The record of the file set at ``location``, its series file opened by ranges: its
    footer read, each metric's row group when the metric is read (the small files read
    whole and checked against the manifest).  Blocking: call it in a worker thread."""

    def whole(name: str) -> bytes | None:
        try:
            return bytes(obstore.get(store.store, location + name).bytes())
        except (NotFoundError, FileNotFoundError):
            return None

    if (manifest_file := whole(MANIFEST)) is None:
        raise ArchiveError(f"no archive at {store.url}/{location}")
    manifest = read_manifest(manifest_file)
    rest, output = check(manifest, REST, whole(REST)), check(manifest, OUTPUT, whole(OUTPUT))
    ranged = RangedFile(store.store, location + SERIES)
    if ranged.size != manifest["files"][SERIES]["bytes"]:
        raise ArchiveError(f"{SERIES} does not match the manifest")
    series = indexed_series(ranged)
    if series is None:  # an older file set, its series not grouped: read whole, checked
        series = open_series(pa.BufferReader(check(manifest, SERIES, whole(SERIES))))
    return record_of(rest, output, series)


def _keep(key: tuple[str, str, str], record: Record) -> None:
    _records[key] = record
    total = sum(r.points for r in _records.values())
    while total > BUDGET and len(_records) > 1:
        old_key, old = _records.popitem(last=False)
        total -= old.points
        for packed_key in [k for k in _packed if k[:3] == old_key]:
            del _packed[packed_key]


async def packed_parts(key: tuple[str, str, str], record: Record, name: str) -> list[bytes]:
    """A metric's series in the record's packed form (built once per record)."""
    packed_key = (*key, name)
    parts = _packed.get(packed_key)
    if parts is None:
        segments = await asyncio.to_thread(record.series.get, name, [])
        parts = _packed[packed_key] = [chunk for s in segments for chunk in repack(s)]
    return parts


_TYPE_NAMES: Final = {b"d": "float", b"q": "int", b"?": "bool"}


def series_arrays(
    segments: Sequence[Points | Segment],
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64], str] | None:
    """A numeric series as the chart route's arrays (steps, values as float64, the values'
    type: as :func:`runstream.consumer.downsample.series_arrays`); None if it holds text."""
    kinds = {s.kind for s in segments}
    if not kinds <= _TYPE_NAMES.keys():
        return None
    if len(segments) == 1:
        steps, values = segments[0].steps, np.asarray(segments[0].values, np.float64)
    else:
        steps = np.concatenate([s.steps for s in segments]) if segments else np.empty(0, np.int64)
        values = (
            np.concatenate([np.asarray(s.values, np.float64) for s in segments])
            if segments
            else np.empty(0, np.float64)
        )
    value_type = _TYPE_NAMES[next(iter(kinds))] if len(kinds) == 1 else ("mixed" if kinds else "float")
    return steps, values, value_type
