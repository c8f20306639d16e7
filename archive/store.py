"""Object stores an archive lives in: a local folder, or any S3-compatible store.

Both are reached through obstore, so the archive's code does not care which: objects
are written whole (a put is atomic on both), read whole, listed by prefix and deleted.
The local store is a folder under the data folder (``<data>/archive``), so
``runstream up`` needs nothing new; ``RUNSTREAM_ARCHIVE_URL`` (``s3://bucket/prefix``,
with the usual ``AWS_*`` variables for credentials, region and endpoint) names another.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import obstore
from obstore.exceptions import BaseError as StoreError
from obstore.exceptions import NotFoundError
from obstore.store import LocalStore, ObjectStore, S3Store

if TYPE_CHECKING:
    from obstore.store import ClientConfig  # a TypedDict of the stubs only

__all__ = ["ArchiveStore", "NotFoundError", "StoreError", "open_store"]


@dataclass(frozen=True)
class ArchiveStore:
    """An object store and the place in it that an archive's objects are named from."""

    store: ObjectStore
    url: str
    #: The folder of a local store (whose emptied folders a delete removes too).
    folder: Path | None = None

    def __repr__(self) -> str:
        return f"ArchiveStore({self.url})"

    # obstore's blocking calls, each in a worker thread: its async ones hand their result back
    # from a runtime thread of its own, which a process leaving right after (a CLI command)
    # can catch mid-way as the interpreter shuts down, and abort (SIGABRT, seen on 3.11).

    async def put(self, path: str, data: bytes) -> None:
        await asyncio.to_thread(obstore.put, self.store, path, data)

    async def get(self, path: str) -> bytes:
        """The object's bytes; :class:`NotFoundError` if there is none."""
        return await asyncio.to_thread(lambda: bytes(obstore.get(self.store, path).bytes()))

    async def names(self, prefix: str) -> list[str]:
        """Paths of the objects under ``prefix`` (a folder: ``runs/<id>/``)."""

        def listed() -> list[str]:
            return sorted(str(entry["path"]) for batch in obstore.list(self.store, prefix) for entry in batch)

        return await asyncio.to_thread(listed)

    async def delete(self, paths: list[str]) -> None:
        """Delete what exists of ``paths`` (deleting nothing is not an error), and in a local
        store the folders that held them once empty (an object store has no folders)."""
        for path in paths:
            try:
                await asyncio.to_thread(obstore.delete, self.store, path)
            except (NotFoundError, FileNotFoundError):
                continue
        if self.folder is not None:
            for parent in sorted({(self.folder / p).parent for p in paths}, key=lambda f: len(f.parts), reverse=True):
                with contextlib.suppress(OSError):  # not empty: something else is kept there
                    parent.rmdir()


def open_store(url: str | None, data_dir: Path | None = None, environ: Mapping[str, str] = os.environ) -> ArchiveStore:
    """The store ``url`` names (``s3://bucket/prefix`` or ``file:///folder``); by default
    the folder ``archive`` in ``data_dir``."""
    if not url:
        if data_dir is None:
            raise ValueError("no archive URL and no data folder to keep the archive in")
        folder = data_dir / "archive"
        folder.mkdir(parents=True, exist_ok=True)
        return ArchiveStore(LocalStore(folder, mkdir=True), folder.as_uri(), folder)
    if url.startswith("file://"):
        folder = Path(url.removeprefix("file://"))
        folder.mkdir(parents=True, exist_ok=True)
        return ArchiveStore(LocalStore(folder, mkdir=True), folder.as_uri(), folder)
    if url.startswith("s3://"):
        bucket, _, prefix = url.removeprefix("s3://").partition("/")
        if not bucket:
            raise ValueError(f"archive URL {url!r} names no bucket (s3://bucket/prefix)")
        options: ClientConfig = {}
        endpoint = environ.get("AWS_ENDPOINT_URL_S3") or environ.get("AWS_ENDPOINT_URL")
        if endpoint and endpoint.startswith("http://"):
            options["allow_http"] = True  # an S3-compatible server on a private network or loopback
        store = S3Store(bucket, prefix=prefix.strip("/") or None, client_options=options)
        return ArchiveStore(store, url)
    raise ValueError(f"archive URL {url!r} is neither s3://bucket/prefix nor file:///folder")
