"""Offline runs: ``Run.get_context()`` outside a submitted run, as in Azure ML.

An offline run logs to an in-memory recorder (:mod:`runstream._offline`) instead of the
process's logger: what is logged is shown and kept, and read back in the shapes of a
live run's reads; files are hashed, not kept.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import time
from collections.abc import Callable
from typing import BinaryIO

from runstream._offline import MetricValue, OfflineRecorder
from runstream.artifacts import StoredFile
from runstream.events import Status
from runstream.run import Run

__all__ = ["OfflineRun"]

_now = time.time


class OfflineRun(Run):
    """A run outside any workspace: shows what is logged and keeps it in memory."""

    def __init__(self) -> None:  # no super().__init__: nothing to attach to
        self.experiment = None
        self.id = f"OfflineRun_{int(_now())}_{secrets.token_hex(4)}"
        self.display_name = self.id
        self.parent_id = None
        self.status = "Running"
        self._recorder = OfflineRecorder()
        self._handle = None
        self._index = -1
        self._append = self._recorder.append
        self._pipe = self._recorder
        self._store = _OfflineFiles()
        self._names = set()
        self._kinds = {}
        self._image_counts = {}
        self._finished = False
        self._properties = {}  # immutable here too: what this run added
        self._pid = os.getpid()

    def __reduce__(self) -> tuple[Callable[[], OfflineRun], tuple[()]]:
        """Sent to another process, an offline run arrives as a new offline run of that process."""
        return (OfflineRun, ())

    def get_metrics(self, name: str | None = None) -> dict[str, MetricValue]:
        """What was logged, in the shapes of a live run's ``get_metrics``."""
        metrics = self._recorder.metrics()
        return metrics if name is None else {name: metrics[name]} if name in metrics else {}

    def get_tags(self) -> dict[str, str]:
        return dict(self._recorder.tags)

    def get_properties(self) -> dict[str, str]:
        return dict(self._recorder.properties)

    def get_status(self) -> Status:
        return self.status


class _OfflineFiles:
    """Offline runs record file names and digests; the bytes are not kept."""

    def __init__(self) -> None:
        self._names: list[str] = []

    def put(self, run_id: str, name: str, source: BinaryIO) -> StoredFile:
        digest, size = hashlib.sha256(), 0
        while chunk := source.read(1024 * 1024):
            digest.update(chunk)
            size += len(chunk)
        self._names.append(name)
        return StoredFile(name=name, size=size, sha256=digest.hexdigest())

    def names(self, run_id: str) -> list[str]:
        return sorted(set(self._names))

    def open(self, run_id: str, name: str) -> BinaryIO:
        raise FileNotFoundError(f"an offline run keeps no file contents ({name!r})")

    def delete(self, run_id: str) -> None:
        self._names.clear()
