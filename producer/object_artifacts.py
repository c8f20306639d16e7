"""Run files in an object store: any S3-compatible store, or a folder, through obstore.

``RUNSTREAM_ARTIFACTS_URL`` (``s3://bucket/prefix``, with the usual ``AWS_*`` variables,
or ``file:///folder``) puts every run's files at ``<prefix>/<workspace>/<run_id>/<name>``
there instead of the local folder: what ``upload_file`` and ``log_image`` store, what
the server's routes list, serve and take, and what a delete removes.  The server
streams a download from the store a chunk at a time, and spools an upload to a
temporary file that is put whole (a multipart upload for a large one), so the object
appears complete or not at all.  Names are checked as the local store checks them
(:func:`runstream.keys.check_run_id`, :func:`runstream.validation.check_file_name`), so
no name reaches outside its run's prefix.
"""

from __future__ import annotations

import io
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Final, cast

from runstream.artifacts import LocalArtifactStore, StoredFile, Upload
from runstream.config import Settings
from runstream.keys import check_run_id
from runstream.validation import check_file_name

if TYPE_CHECKING:
    from runstream.archive.store import ArchiveStore

__all__ = ["ObjectArtifactStore", "ServedStore", "artifact_store"]

_CHUNK: Final = 1024 * 1024


def artifact_store(settings: Settings) -> ServedStore:
    """The store the settings name for run files: ``artifacts_url``'s, else the local
    folder ``<data_dir>/artifacts/<workspace>``."""
    url = settings.artifacts_url
    if not url:
        return LocalArtifactStore(settings.data_dir / "artifacts" / settings.workspace)
    if url.startswith("file://"):
        return LocalArtifactStore(Path(url.removeprefix("file://")) / settings.workspace)
    from runstream.archive.store import open_store  # obstore: the archive extra's

    return ObjectArtifactStore(open_store(url), settings.workspace, settings.data_dir / "uploads")


class ObjectArtifactStore:
    """Run files as objects under ``<store>/<workspace>/``: safe to call from any thread."""

    def __init__(self, store: ArchiveStore, workspace: str, spool: Path | None = None) -> None:
        self.store = store
        self.workspace = workspace
        #: Where uploads are written before they are put (the system's temporary folder).
        self.spool = spool or Path(tempfile.gettempdir())

    def __repr__(self) -> str:
        return f"ObjectArtifactStore({self.store.url}, {self.workspace!r})"

    def _prefix(self, run_id: str) -> str:
        return f"{self.workspace}/{check_run_id(run_id)}/"

    def key_of(self, run_id: str, name: str) -> str:
        """The object's path of a run's file (:class:`~runstream.errors.InvalidNameError` for a bad name)."""
        return self._prefix(run_id) + check_file_name(name)

    def put(self, run_id: str, name: str, source: BinaryIO) -> StoredFile:
        with self.open_upload(run_id, name) as upload:
            return upload.take(source)

    def open_upload(self, run_id: str, name: str) -> Upload:
        """A file of the run being written: spooled, then put whole by :meth:`Upload.commit`."""
        import obstore

        key = self.key_of(run_id, name)
        self.spool.mkdir(parents=True, exist_ok=True)
        return Upload(self.spool, check_file_name(name), lambda tmp: obstore.put(self.store.store, key, tmp))

    def names(self, run_id: str) -> list[str]:
        import obstore

        prefix = self._prefix(run_id)
        listed = (str(entry["path"]) for batch in obstore.list(self.store.store, prefix) for entry in batch)
        return sorted(path.removeprefix(prefix) for path in listed)

    def size(self, run_id: str, name: str) -> int:
        """The file's size in bytes; ``FileNotFoundError`` if there is none."""
        import obstore
        from obstore.exceptions import NotFoundError

        try:
            return int(obstore.head(self.store.store, self.key_of(run_id, name))["size"])
        except NotFoundError:
            raise FileNotFoundError(f"run {run_id} has no file {name!r}") from None

    def open(self, run_id: str, name: str) -> BinaryIO:
        import obstore
        from obstore.exceptions import NotFoundError

        try:
            reader = obstore.open_reader(self.store.store, self.key_of(run_id, name))
        except NotFoundError:
            raise FileNotFoundError(f"run {run_id} has no file {name!r}") from None
        return cast("BinaryIO", io.BufferedReader(_ObjectReader(reader), _CHUNK))

    async def chunks(self, run_id: str, name: str) -> AsyncIterator[bytes]:
        """The file's bytes a chunk at a time, as the store sends them (``FileNotFoundError``
        before the first if there is no such file)."""
        import obstore
        from obstore.exceptions import NotFoundError

        try:
            reply = await obstore.get_async(self.store.store, self.key_of(run_id, name))
        except NotFoundError:
            raise FileNotFoundError(f"run {run_id} has no file {name!r}") from None
        async for chunk in reply.stream(min_chunk_size=_CHUNK):
            yield bytes(chunk)

    def delete(self, run_id: str) -> None:
        import obstore
        from obstore.exceptions import NotFoundError

        for name in self.names(run_id):
            try:
                obstore.delete(self.store.store, self._prefix(run_id) + name)
            except NotFoundError:
                continue


class _ObjectReader(io.RawIOBase):
    """obstore's reader as a raw file (its own has no ``with``, and reads return its ``Bytes``)."""

    def __init__(self, reader: Any) -> None:
        super().__init__()
        self._reader = reader

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = memoryview(self._reader.read(len(buffer)))
        view = memoryview(buffer).cast("B")
        view[: len(data)] = data
        return len(data)

    def close(self) -> None:
        if not self.closed:
            self._reader.close()
        super().close()


#: A store the server can stream through: uploads spooled and put, downloads streamed.
ServedStore = LocalArtifactStore | ObjectArtifactStore
