"""Deleting, archiving and restoring runs and experiments, on request (DESIGN §7).

What the Python API (``run.delete()``, ``exp.archive()``...), the REST API and the CLI
call.  Archiving and restoring are :class:`~.archiver.Archiver`'s; deleting is here:

1. in one transaction on the run's slot, every key of the record goes and its meta
   hash becomes a *tombstone* (``deleted``: the time), which expires after
   :data:`TOMBSTONE_DAYS`: a batch still on its way for the run (a straggling
   producer) is then dropped by ``apply.lua`` instead of making a run of it again;
2. the run leaves the workspace's indexes (its experiment's runs, the live, ended,
   archive-due and delete-due indexes);
3. its archive's file set and its files (artifacts) are deleted.

A run's children are deleted with it, first.  Killed midway, a delete leaves a
tombstone with some of 2 and 3 undone, which nothing reads (readers take a
tombstone for no run), and deleting the run again finishes them.  A run that has not
ended is refused: cancel it first.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Final, cast

from structlog.typing import FilteringBoundLogger as BoundLogger

from runstream.archive.archiver import Archived, Archiver, Skipped
from runstream.archive.snapshot import record_keys
from runstream.archive.store import ArchiveStore, open_store
from runstream.artifacts import ArtifactStore
from runstream.connection import RedisClient
from runstream.errors import RunstreamError
from runstream.events import TERMINAL_STATUSES
from runstream.keys import Keys

__all__ = ["TOMBSTONE_DAYS", "Lifecycle", "NotEndedError"]

#: How long a deleted run's tombstone stays (days): longer than any producer's spool waits.
TOMBSTONE_DAYS: Final = 30


class NotEndedError(RunstreamError):
    """The run has not ended: it cannot be deleted or archived (cancel it first)."""


@dataclass
class Lifecycle:
    """Deletes, archives and restores one workspace's runs."""

    client: RedisClient
    keys: Keys
    store: ArchiveStore
    artifacts: ArtifactStore
    log: BoundLogger
    archiver: Archiver = field(init=False)

    def __post_init__(self) -> None:
        self.archiver = Archiver(self.client, self.keys, self.store, self.log)

    async def _meta(self, run_id: str) -> dict[str, str]:
        raw = cast("dict[bytes, bytes]", await self.client.hgetall(self.keys.meta(run_id)))
        return {k.decode(): v.decode() for k, v in raw.items()}

    async def exists(self, run_id: str) -> bool:
        """Whether the run has a record (live or archived; a deleted run's tombstone is none)."""
        meta = await self._meta(run_id)
        return bool(meta) and "deleted" not in meta

    async def delete_run(self, run_id: str) -> list[str]:
        """Delete the run and its children; the ids deleted (children first); [] if there is no such run.

        Raises:
            NotEndedError: the run (or a child) has not ended; nothing was deleted.
        """
        meta = await self._meta(run_id)
        if not meta:
            return []
        if "deleted" in meta:  # deleted before: finish what a delete killed midway left
            await self._finish(run_id, meta, meta.get("deleted_archive"), meta.get("deleted_archive_path"))
            return []
        if meta.get("status") not in TERMINAL_STATUSES:
            raise NotEndedError(f"run {run_id} is {meta.get('status', 'not started')}: cancel it before deleting it")
        children = await self._children(run_id, meta)
        for child in children:  # refuse before deleting anything
            status = cast("bytes | None", await self.client.hget(self.keys.meta(child), "status"))
            if status is not None and status.decode() not in TERMINAL_STATUSES:
                raise NotEndedError(f"run {run_id} has a child {child} that is {status.decode()}: cancel it first")
        deleted: list[str] = []
        for child in children:
            deleted.extend(await self.delete_run(child))
        await self._tombstone(run_id, meta)
        await self._finish(run_id, meta, meta.get("archive"), meta.get("archive_path"))
        self.log.info("run_deleted", run_id=run_id, children=len(children))
        return [*deleted, run_id]

    async def _finish(self, run_id: str, meta: dict[str, str], url: str | None, path: str | None) -> None:
        """Steps 2 and 3 of a delete: the indexes, the archive's file set, the files."""
        await self._unindex(run_id, meta.get("experiment"))
        await self.client.hdel(self.keys.summaries(), run_id)
        if url and path:
            store = self.store if url == self.store.url else open_store(url)
            await store.delete(await store.names(path))
            await self.client.hdel(self.keys.meta(run_id), "deleted_archive", "deleted_archive_path")
        self.artifacts.delete(run_id)

    async def _children(self, run_id: str, meta: dict[str, str]) -> list[str]:
        if meta.get("archive") and meta.get("archive_path"):
            from runstream.archive.archived import cached_record  # the archive's record names them

            record = await cached_record(meta["archive"], meta["archive_path"], meta.get("archive_digest", ""))
            return sorted(record.children)
        members = cast("set[bytes]", await self.client.smembers(self.keys.children(run_id)))
        return sorted(m.decode() for m in members)

    async def _tombstone(self, run_id: str, meta: dict[str, str]) -> None:
        k = self.keys
        names = [n.decode() for n in cast("list[bytes]", await self.client.hkeys(k.metric_index(run_id)))]
        async with self.client.pipeline(transaction=True) as pipe:
            for key in (*record_keys(k, run_id, names), k.applied(run_id), k.live(run_id), k.meta(run_id)):
                _ = pipe.unlink(key)
            tombstone = {"deleted": repr(time.time())}
            # What step 3 deletes, kept until it has (under other names: readers take no tombstone for an archive).
            for field, kept in (
                ("experiment", "experiment"),
                ("archive", "deleted_archive"),
                ("archive_path", "deleted_archive_path"),
            ):
                if field in meta:
                    tombstone[kept] = meta[field]
            _ = pipe.hset(k.meta(run_id), mapping=tombstone)  # type: ignore[arg-type]
            _ = pipe.expire(k.meta(run_id), TOMBSTONE_DAYS * 86_400)
            await pipe.execute()

    async def _unindex(self, run_id: str, experiment: str | None) -> None:
        k = self.keys
        for index in (k.live_runs(), k.ended_runs(), k.archive_due(), k.delete_due()):
            await self.client.zrem(index, run_id)
        if experiment:
            await self.client.zrem(k.experiment_runs(experiment), run_id)

    async def archive_run(self, run_id: str) -> Archived | Skipped:
        """Archive the run now (and its children).

        Raises:
            NotEndedError: the run has not ended.
        """
        meta = await self._meta(run_id)
        if meta and "deleted" not in meta and meta.get("status") not in TERMINAL_STATUSES:
            raise NotEndedError(f"run {run_id} is {meta.get('status')}: only an ended run is archived")
        for child in await self._children(run_id, meta) if meta else []:
            await self.archiver.archive(child)
        result = await self.archiver.archive(run_id)
        if isinstance(result, Archived) or result == "already":
            await self.client.zrem(self.keys.archive_due(), run_id)
        return result

    async def restore_run(self, run_id: str) -> bool:
        """Put the archived run's record back into Redis (archived again when due); False if it was not archived.

        Its search summary goes too: a run is restored to take a late batch, which may change it."""
        restored = await self.archiver.restore(run_id)
        if restored:
            await self.client.hdel(self.keys.summaries(), run_id)
        return restored

    async def runs_of(self, experiment: str) -> list[str]:
        ids = cast("list[bytes]", await self.client.zrange(self.keys.experiment_runs(experiment), 0, -1))
        return [i.decode() for i in ids]

    async def delete_experiment(self, experiment: str) -> list[str]:
        """Delete every run of the experiment, and the experiment; the runs deleted.

        Raises:
            NotEndedError: a run has not ended; nothing was deleted.
        """
        runs = await self.runs_of(experiment)
        for run_id in runs:
            status = cast("bytes | None", await self.client.hget(self.keys.meta(run_id), "status"))
            if status is not None and status.decode() not in TERMINAL_STATUSES:
                raise NotEndedError(f"experiment {experiment} has a run {run_id} that is {status.decode()}")
        deleted: list[str] = []
        for run_id in runs:
            if run_id not in deleted:
                deleted.extend(await self.delete_run(run_id))
        await self.client.srem(self.keys.experiments(), experiment)
        await self.client.delete(self.keys.experiment_runs(experiment))
        await self.client.hdel(self.keys.retention(), experiment)
        return deleted
