"""Moving an ended run's record into the archive, and back.

Archival, in an order that a kill at any point survives:

1. read the record (:func:`~.snapshot.read_snapshot`, one transaction);
2. write its file set, the manifest last (:mod:`.fileset`);
3. read the files back, check them against the manifest and the record's digest;
4. in one script on the run's slot: if the applied seqs are still those of step 1
   and the run is final, drop the record's keys and mark the meta hash with where
   the archive is (``archive``, ``archived_at``, ``archive_digest``).

Killed before 4, the run is whole in Redis (a file set may exist beside it, and is
written again next time); after 4, whole in the archive.  Readers go by the meta
hash's ``archive`` field, so a run is never read from both, nor counted twice.  The
meta hash, the applied seqs and the live stream's final entry stay in Redis as the
run's stub: listings, statuses and exactly-once apply need no archive read.

A batch that arrives for an archived run (a producer that straggled, a spool sent
late) is not lost: ``apply.lua`` refuses it (the meta says ``archive``), the collector
:meth:`restores <Archiver.restore>` the record into Redis and applies it, and the run is
archived again later with it.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal, cast

import msgpack
from structlog.typing import FilteringBoundLogger as BoundLogger

from runstream.archive.columns import repack
from runstream.archive.fileset import MANIFEST, ArchiveError, Record, decode, digest, encode, from_snapshot, run_folder
from runstream.archive.snapshot import RunSnapshot, read_snapshot, record_keys
from runstream.archive.store import ArchiveStore, open_store
from runstream.archive.summary import record_summary
from runstream.connection import RedisClient
from runstream.events import TERMINAL_STATUSES
from runstream.keys import Keys

__all__ = ["Archived", "Archiver", "Skipped", "load_record"]

_SWAP: Final = (Path(__file__).parent / "swap.lua").read_text()
#: Why a run was not archived.
Skipped = Literal["missing", "already", "not_final", "changed"]
#: The swap's replies: 1, swapped, or why not.
_SWAPPED: Final = 1
_SKIPPED: Final[dict[int, Skipped]] = {0: "changed", 2: "already", 3: "not_final"}


@dataclass(frozen=True, slots=True)
class Archived:
    """A run archived: where, its points and the file set's bytes."""

    run_id: str
    location: str
    points: int
    archive_bytes: int


def _seqs_text(applied: dict[str, str]) -> str:
    """The applied seqs as the swap script compares them (sorted ``producer=seq`` lines)."""
    return "\n".join(sorted(f"{producer}={seq}" for producer, seq in applied.items()))


async def load_record(store: ArchiveStore, location: str) -> Record:
    """The record the file set at ``location`` (a folder in ``store``) holds, verified."""
    names = [path.rsplit("/", 1)[-1] for path in await store.names(location)]
    if MANIFEST not in names:
        raise ArchiveError(f"no archive at {store.url}/{location}")
    objects = dict(zip(names, await asyncio.gather(*(store.get(location + n) for n in names)), strict=True))
    return await asyncio.to_thread(decode, objects)


class Archiver:
    """Archives and restores one workspace's runs (see the module's docstring)."""

    def __init__(self, client: RedisClient, keys: Keys, store: ArchiveStore, log: BoundLogger) -> None:
        self.client = client
        self.keys = keys
        self.store = store
        self.log = log
        self._swap = client.register_script(_SWAP)

    def location(self, run_id: str) -> str:
        return run_folder(self.keys.prefix, self.keys.workspace, run_id)

    async def archive(self, run_id: str) -> Archived | Skipped:
        """Archive the run if it is final and not archived yet; else why not: it has no
        record, is not final, is archived already, or changed while it was written (a
        batch applied meanwhile: archive it again).

        Raises:
            ArchiveError: the file set read back does not match the record (nothing changed
                in Redis).
        """
        snapshot = await read_snapshot(self.client, self.keys, run_id)
        if snapshot is None:
            return "missing"
        if "archive" in snapshot.meta:
            return "already"
        if snapshot.meta.get("status") not in TERMINAL_STATUSES:
            return "not_final"
        record = from_snapshot(snapshot)
        objects = await asyncio.to_thread(encode, record)
        location = self.location(run_id)
        for name in sorted(objects, key=lambda n: n == MANIFEST):  # the manifest last
            await self.store.put(location + name, objects[name])
        expected = json.loads(objects[MANIFEST])["digest"]  # the record's, as encode() took it
        readback = await load_record(self.store, location)
        if (found := await asyncio.to_thread(digest, readback)) != expected:
            raise ArchiveError(f"run {run_id}: the archive read back has digest {found}, not {expected}")
        meta_key, seqs_key = self.keys.meta(run_id), self.keys.applied(run_id)
        reply = await self._swap(
            keys=[meta_key, seqs_key, *record_keys(self.keys, run_id, _metric_names(snapshot))],
            args=[
                _seqs_text(snapshot.applied),
                self.store.url,
                location,
                repr(time.time()),
                expected,
                *sorted(TERMINAL_STATUSES),
            ],
        )
        if (code := int(cast("int", reply))) != _SWAPPED:
            return _SKIPPED[code]
        # Its search summary, from the record in hand: a search never opens the archive (killed
        # before this, the next search makes it from the archive instead).
        summary = msgpack.packb(record_summary(readback), use_bin_type=True)
        await self.client.hset(self.keys.summaries(), run_id, summary)
        size = sum(len(data) for data in objects.values())
        return Archived(run_id, location, record.points, size)

    async def restore(self, run_id: str) -> bool:
        """Put an archived run's record back into Redis (its archive stays until archived
        again); False if the run is not archived."""
        url, location = cast(
            "list[bytes | None]", await self.client.hmget(self.keys.meta(run_id), ["archive", "archive_path"])
        )
        if url is None or location is None:
            return False
        store = self.store if url.decode() == self.store.url else open_store(url.decode())
        record = await load_record(store, location.decode())
        keys = k = self.keys
        async with self.client.pipeline(transaction=True) as pipe:
            for key in record_keys(keys, run_id, _metric_names(record)):
                _ = pipe.delete(key)
            for key, mapping in (
                (k.tags(run_id), record.tags),
                (k.properties(run_id), record.properties),
                (k.metric_index(run_id), record.kinds),
                (k.metric_counts(run_id), record.counts),
                (k.files(run_id), record.files),
            ):
                if mapping:
                    _ = pipe.hset(key, mapping=mapping)  # type: ignore[arg-type]
            if record.children:
                _ = pipe.sadd(k.children(run_id), *record.children)
            for name, segs in record.series.items():
                chunks = [chunk for s in segs for chunk in repack(s)]
                if chunks:
                    _ = pipe.rpush(k.metric_series(run_id, name), *chunks)
            for name, items in record.items.items():
                _ = pipe.rpush(k.metric_values(run_id, name), *items)
            for entry_id, stream, lines, t in record.output:
                _ = pipe.xadd(k.output(run_id), {"s": stream, "l": lines, "t": t}, id=entry_id)
            _ = pipe.hdel(k.meta(run_id), "archive", "archive_path", "archived_at", "archive_digest")
            _ = pipe.zadd(k.archive_due(), {run_id: time.time()})
            await pipe.execute()
        self.log.info("run_restored", run_id=run_id, points=record.points)
        return True


def _metric_names(record: Record | RunSnapshot) -> set[str]:
    return set(record.kinds) | set(record.series) | set(record.items)
