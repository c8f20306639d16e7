"""A run's files: uploads, downloads and logged images (stored in the workspace's artifact store).

Part of :class:`runstream.Run` (a base class of it): a file is stored synchronously,
then recorded as a ``FileUploaded`` event; an image is a stored file that a metric
names (``ImageLogged``).
"""

from __future__ import annotations

import io
import os
import re
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from runstream.artifacts import ArtifactStore, StoredFile
from runstream.events import FileUploaded, ImageLogged
from runstream.validation import check_file_name, check_name

if TYPE_CHECKING:
    from runstream.events import Event

__all__ = ["RunFiles"]

_now = time.time
_UNSAFE_FILE_CHARS = re.compile(r"[^\w.-]+")


class RunFiles:
    """The file methods of a run (``upload_file``, ``download_file``, ``log_image``, ...)."""

    id: str
    _store: ArtifactStore
    _image_counts: dict[str, int]

    if TYPE_CHECKING:

        def _claim(self, name: str, kind: str) -> str: ...

        def _emit(self, event: Event) -> None: ...

    def log_image(
        self, name: str, path: str | os.PathLike[str] | None = None, plot: Any = None, description: str = ""
    ) -> None:
        """Log an image from a file (``path``) or a matplotlib figure or ``pyplot`` (``plot``).

        The image is stored as one of the run's files, and ``get_metrics`` gives its file
        name: a file under the path given (``plots/roc.png``; an absolute path or one that
        leaves the folder, under its base name), as Azure's ``log_image`` keeps it; a plot
        as ``images/<name>.png``.  A name this run stored an image under already gets
        ``_1``, ``_2``, ... before its suffix: no image replaces another.

        Raises:
            ValueError: neither or both of ``path`` and ``plot``, or no file at ``path``.
            TypeError: ``plot`` cannot ``savefig``.
        """
        name = self._claim(check_name(name, "image"), "image")
        if (path is None) == (plot is None):
            raise ValueError(f"image {name!r}: give exactly one of path= or plot=")
        if path is not None:
            source = Path(path)
            if not source.is_file():
                raise ValueError(f"image {name!r}: no file at {str(source)!r}")
            with source.open("rb") as stream:
                stored = self._store_file(self._image_path_name(path), stream)
        else:
            savefig = getattr(plot, "savefig", None)
            if not callable(savefig):
                raise TypeError(
                    f"image {name!r}: plot must be a matplotlib Figure or pyplot, not {type(plot).__name__}"
                )
            buffer = io.BytesIO()
            savefig(buffer, format="png")
            buffer.seek(0)
            stored = self._store_file(self._image_file_name(name, ".png"), buffer)
        self._emit(ImageLogged(name, stored.name, _now()))

    def _image_file_name(self, name: str, suffix: str) -> str:
        stem = _UNSAFE_FILE_CHARS.sub("_", name).strip("._") or "image"
        return self._unused(f"images/{stem}{suffix}")

    def _image_path_name(self, path: str | os.PathLike[str]) -> str:
        """The file name of an image logged from ``path``: the path as given, if it is a
        relative one inside the folder, else its base name."""
        given = Path(path)
        try:
            kept = check_file_name(given.as_posix()) if not given.is_absolute() else None
        except ValueError:
            kept = None
        return self._unused(kept or check_file_name(given.name))

    def _unused(self, file_name: str) -> str:
        """``file_name``, or with ``_1``, ``_2``, ... before its suffix once this run stored an image under it."""
        count = self._image_counts.get(file_name, 0)
        self._image_counts[file_name] = count + 1
        if not count:
            return file_name
        stem, dot, suffix = file_name.rpartition(".")
        return f"{stem}_{count}{dot}{suffix}" if dot and "/" not in suffix else f"{file_name}_{count}"

    def upload_file(self, name: str, path_or_stream: str | os.PathLike[str] | BinaryIO) -> StoredFile:
        """Store a file (a path, or a binary stream read to its end) as the run's file ``name``.

        Raises:
            ValueError: the name is not a relative path inside the run, or no file at the path.
        """
        name = check_file_name(name)
        if isinstance(path_or_stream, str | os.PathLike):
            source = Path(path_or_stream)
            if not source.is_file():
                raise ValueError(f"file {name!r}: no file at {str(source)!r}")
            with source.open("rb") as stream:
                return self._store_file(name, stream)
        if not callable(getattr(path_or_stream, "read", None)):
            raise TypeError(f"file {name!r}: path_or_stream must be a path or a binary stream")
        return self._store_file(name, path_or_stream)

    def upload_folder(self, name: str, path: str | os.PathLike[str]) -> list[StoredFile]:
        """Store every file under ``path`` as ``<name>/<relative path>``."""
        name = check_file_name(name)
        folder = Path(path)
        if not folder.is_dir():
            raise ValueError(f"folder {name!r}: no folder at {str(folder)!r}")
        files = sorted(p for p in folder.rglob("*") if p.is_file())
        return [self.upload_file(f"{name}/{p.relative_to(folder).as_posix()}", p) for p in files]

    def _store_file(self, name: str, stream: BinaryIO) -> StoredFile:
        stored = self._store.put(self.id, name, stream)
        self._emit(FileUploaded(stored.name, stored.size, stored.sha256, _now()))
        return stored

    def get_file_names(self) -> list[str]:
        """The run's file names, sorted."""
        return self._store.names(self.id)

    def download_file(self, name: str, output_file_path: str | os.PathLike[str] | None = None) -> Path:
        """Copy the run's file ``name`` to ``output_file_path`` (default: its base name here).

        Raises:
            FileNotFoundError: the run has no such file.
        """
        name = check_file_name(name)
        target = Path(output_file_path) if output_file_path is not None else Path(Path(name).name)
        if target.is_dir():
            target = target / Path(name).name
        try:
            source = self._store.open(self.id, name)
        except FileNotFoundError:
            raise FileNotFoundError(f"run {self.id} has no file {name!r}") from None
        target.parent.mkdir(parents=True, exist_ok=True)
        with source, target.open("wb") as out:
            while chunk := source.read(1024 * 1024):
                out.write(chunk)
        return target
