"""Run files: the pluggable artifact store and its default, a local folder.

A store keeps each run's files under the run's own namespace: run ids are checked by
:func:`runstream.keys.check_run_id` and names by :func:`runstream.validation.check_file_name`,
and the local store resolves every path (symlinks included) and refuses any that lands
outside the run's own folder, so nothing escapes it.  The default
:class:`LocalArtifactStore` writes to ``<data_dir>/artifacts/<workspace>/<run_id>/``,
the folder ``runstream serve`` serves.  Every stored file is also recorded as a
``FileUploaded`` event (name, size, sha256) by the run that stored it.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import BinaryIO, Protocol, Self, runtime_checkable

from runstream.errors import InvalidNameError
from runstream.keys import check_run_id
from runstream.validation import check_file_name

__all__ = ["ArtifactStore", "LocalArtifactStore", "StoredFile", "Upload"]

_CHUNK = 1024 * 1024


@dataclass(frozen=True, slots=True)
class StoredFile:
    """What the store knows of one file after storing it."""

    name: str
    size: int
    sha256: str


@runtime_checkable
class ArtifactStore(Protocol):
    """Where run files live.  Implementations must be safe to call from any thread."""

    def put(self, run_id: str, name: str, source: BinaryIO) -> StoredFile:
        """Store ``source`` (read to its end) as the run's file ``name``."""
        ...

    def names(self, run_id: str) -> list[str]:
        """The run's file names, sorted."""
        ...

    def open(self, run_id: str, name: str) -> BinaryIO:
        """Open the run's file ``name`` for reading; ``FileNotFoundError`` if absent."""
        ...

    def delete(self, run_id: str) -> None:
        """Delete every file of the run (nothing to delete is not an error)."""
        ...


class Upload:
    """One file being written to a store: a temporary file (in ``folder``), put in place by
    :meth:`commit` with ``place`` (a rename beside its target, or an object store's put:
    atomic either way, so readers see all of it or nothing).

    Its methods may be called from any thread, one at a time or not (guarded by a lock:
    an abort from one thread waits for a write in flight on another to finish).
    """

    def __init__(self, folder: Path, name: str, place: Callable[[Path], object]) -> None:
        self.name = name
        self.size = 0
        self._place = place
        self._digest = hashlib.sha256()
        self._lock = threading.Lock()
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".upload-")
        self._tmp = Path(tmp)
        self._out: BinaryIO | None = os.fdopen(fd, "wb")

    def write(self, chunk: bytes) -> None:
        """Append ``chunk`` to the file.

        Raises:
            ValueError: the upload was committed or aborted.
        """
        with self._lock:
            if self._out is None:
                raise ValueError(f"upload of {self.name!r} is closed")
            self._out.write(chunk)
            self._digest.update(chunk)
            self.size += len(chunk)

    def commit(self) -> StoredFile:
        """Put the file in place under its name and say what was stored.

        Raises:
            ValueError: the upload was committed or aborted.
            OSError: its name cannot be a file (a folder took its place meanwhile); the
                upload is aborted.
        """
        with self._lock:
            if self._out is None:
                raise ValueError(f"upload of {self.name!r} is closed")
            out, self._out = self._out, None
            try:
                out.close()
                self._place(self._tmp)
            finally:
                self._tmp.unlink(missing_ok=True)  # gone already once renamed into place
        return StoredFile(name=self.name, size=self.size, sha256=self._digest.hexdigest())

    def take(self, source: BinaryIO) -> StoredFile:
        """Write ``source`` (read to its end), then :meth:`commit`."""
        while chunk := source.read(_CHUNK):
            self.write(chunk)
        return self.commit()

    def abort(self) -> None:
        """Drop what was written (nothing shows under the name); a no-op once committed or aborted."""
        with self._lock:
            if self._out is None:
                return
            out, self._out = self._out, None
            out.close()
            self._tmp.unlink(missing_ok=True)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.abort()


class LocalArtifactStore:
    """Files in a local folder; writes are atomic (temp file, then rename)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def __repr__(self) -> str:
        return f"LocalArtifactStore({str(self.root)!r})"

    def _run_dir(self, run_id: str) -> Path:
        return self.root / check_run_id(run_id)

    def path_of(self, run_id: str, name: str) -> Path:
        """The local path of a run's file, resolved.

        Raises:
            ValueError: a bad run id or file name, or a path that resolves outside the
                run's folder (a symlink in the store pointing elsewhere).
        """
        run_dir = self._run_dir(run_id)
        path = run_dir / check_file_name(name)
        if not _inside(path, run_dir):
            raise InvalidNameError(f"file {name!r:.80} of run {run_id} resolves outside the run's folder")
        return path

    def put(self, run_id: str, name: str, source: BinaryIO) -> StoredFile:
        with self.open_upload(run_id, name) as upload:
            return upload.take(source)

    def open_upload(self, run_id: str, name: str) -> Upload:
        """A file of the run being written chunk by chunk (a streamed HTTP upload): nothing
        shows under ``name`` until :meth:`Upload.commit`, and an upload left without a
        commit (``with`` block, or :meth:`Upload.abort`) leaves nothing behind.

        Raises:
            InvalidNameError: as :meth:`path_of`.
            OSError: ``name`` cannot be a file (a folder of the run, or below one of its files).
        """
        target = self.path_of(run_id, name)
        target.parent.mkdir(parents=True, exist_ok=True)
        return Upload(target.parent, check_file_name(name), lambda tmp: tmp.replace(target))

    def names(self, run_id: str) -> list[str]:
        run_dir = self._run_dir(run_id)
        if not run_dir.is_dir():
            return []
        return sorted(
            p.relative_to(run_dir).as_posix()
            for p in run_dir.rglob("*")
            if p.is_file() and not p.name.startswith(".upload-") and _inside(p, run_dir)
        )

    def open(self, run_id: str, name: str) -> BinaryIO:
        return self.path_of(run_id, name).open("rb")

    def delete(self, run_id: str) -> None:
        # A run folder that is a link is unlinked, never followed; rmtree removes links inside
        # as links, so nothing outside the store goes.
        run_dir = self._run_dir(run_id)
        if run_dir.is_symlink():
            run_dir.unlink()
        elif run_dir.is_dir():
            shutil.rmtree(run_dir)

    def copy_to(self, run_id: str, name: str, destination: Path) -> None:
        """Copy a run's file to ``destination`` (creating its folder)."""
        destination.parent.mkdir(parents=True, exist_ok=True)
        with self.open(run_id, name) as src, destination.open("wb") as dst:
            shutil.copyfileobj(src, dst, _CHUNK)


def _inside(path: Path, run_dir: Path) -> bool:
    """Whether ``path``, every link on the way followed, stays inside the run's folder.

    The folder is taken as it must be (the resolved store root, then the run id), not as it
    resolves: a run folder that is itself a link elsewhere contains nothing of the store.
    """
    return path.resolve().is_relative_to(run_dir.parent.resolve() / run_dir.name)
