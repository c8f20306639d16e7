"""Runs: the logging API a training script calls (Azure ML SDK v1 ``Run`` style).

Every ``log*`` call checks its input at the door (:mod:`runstream.validation`),
appends one tuple to the process's buffer and returns: no I/O, no lock.  Files are
stored synchronously in the workspace's artifact store, then recorded as events.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
import re
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, BinaryIO, Protocol, Self, TypeVar

from runstream import _lifecycle
from runstream._batcher import Item, RunHandle
from runstream._context import submitted_run
from runstream._offline import MetricValue, OfflineRecorder
from runstream._readback import READ_BOUND, await_applied, read_back
from runstream.artifacts import ArtifactStore, StoredFile
from runstream.connection import connect
from runstream.errors import ConfigError, RunstreamError
from runstream.events import (
    TERMINAL_STATUSES,
    Event,
    FileUploaded,
    ImageLogged,
    ListLogged,
    PropertiesAdded,
    RowLogged,
    RunStarted,
    Status,
    StatusChanged,
    TableLogged,
    TagsSet,
    Value,
)
from runstream.keys import check_run_id
from runstream.logger import EventLogger, get_logger
from runstream.validation import (
    check_file_name,
    check_name,
    check_row,
    check_step,
    check_str_map,
    check_table,
    check_value,
    check_values,
)
from runstream.workspace import Workspace

if TYPE_CHECKING:
    from runstream.consumer.reader import MetricValue as RecordMetricValue
    from runstream.consumer.reader import RecordReader
    from runstream.consumer.subscribe import Resynced, Update
    from runstream.experiment import Experiment

T = TypeVar("T")

__all__ = ["Run"]

_now = time.time
_UNSAFE_FILE_CHARS = re.compile(r"[^\w.-]+")


class _Pipe(Protocol):
    """Where a run's items go: the process's logger, or an offline recorder."""

    attention: bool

    def attend(self) -> None: ...

    def flush(self, timeout: float | None = ...) -> None: ...


class Run:
    """One run of an experiment: what a training script logs to.

    ``Run(experiment, run_id)`` attaches to an existing run (to read, tag or log
    more); ``experiment.start_logging()`` starts a new one.

    Attributes:
        id: ``<experiment>_<unix seconds>_<8 hex>``, URL-safe.
        experiment: the run's experiment (None for an offline run).
        display_name: a human name (defaults to the id).
        status: the last status this object set or saw (cached; see ``get_status``).
        parent_id: the parent run's id, for a child run.
    """

    experiment: Experiment | None

    def __init__(self, experiment: Experiment, run_id: str) -> None:
        self._attach(experiment, run_id, display_name=run_id, parent_id=None, live=False)
        self.status: Status = "Running"

    def _attach(
        self, experiment: Experiment, run_id: str, display_name: str, parent_id: str | None, live: bool
    ) -> None:
        workspace = experiment.workspace
        logger = get_logger()
        self.experiment = experiment
        self.id = check_run_id(run_id)  # it names a folder and a hash tag: refused before either
        self.display_name = display_name
        self.parent_id = parent_id
        self._handle: RunHandle | None = logger.register(run_id, workspace.settings, workspace.keys, live=live)
        self._index = self._handle.index
        self._append: Callable[[Item], None] = logger.queue.append
        self._pipe: _Pipe = logger
        self._store: ArtifactStore = workspace.artifacts
        self._names: set[str] = set()  # names logged with log(): a fast check on the hot path
        self._kinds: dict[str, str] = {}  # the other names: "series", "table" or "image"
        self._image_counts: dict[str, int] = {}
        self._finished = False
        self._pid = os.getpid()  # a forked child's copy leaves the run to this process (see __exit__)

    @classmethod
    def _start(
        cls, experiment: Experiment, display_name: str | None, parent_id: str | None, status: Status = "Running"
    ) -> Self:
        run_id = f"{experiment.name}_{int(_now())}_{secrets.token_hex(4)}"
        run = cls.__new__(cls)
        run._attach(experiment, run_id, display_name or run_id, parent_id, live=status == "Running")
        run.status = status
        run._emit(RunStarted(experiment.name, run.display_name, parent_id, status, _now()))
        if status == "Running" and run._handle is not None:  # interactive: this process finishes it at exit
            _lifecycle.opened(run._handle, run._append)
        return run

    @classmethod
    def _supervise(cls, experiment: Experiment, run_id: str) -> Self:
        """The run as its supervisor holds it: it sends the heartbeats and the statuses."""
        run = cls.__new__(cls)
        run._attach(experiment, run_id, run_id, None, live=True)
        run.status = "Starting"
        return run

    def _set_status(self, status: Status) -> None:
        """A status on the way (Starting, Running, Finalizing); final ones go through _finish."""
        self._emit(StatusChanged(status, None, _now()))
        self.status = status

    def __repr__(self) -> str:
        return f"Run(id={self.id!r}, status={self.status!r})"

    def __reduce__(self) -> tuple[Callable[..., Run], tuple[Any, ...]]:
        """Sent to another process (a multiprocessing child's arguments under spawn or
        forkserver, a Pool task's arguments), a run arrives attached to the same run: the
        other process logs to it as a producer of its own and leaves finishing it to this one."""
        return (_attached, (self.experiment, self.id, self.display_name, self.parent_id, self.status))

    # ------------------------------------------------------------------ the hot path

    def log(self, name: str, value: Value, description: str = "", step: int | None = None) -> None:
        """Log a scalar; logging the same name again makes a series.

        Args:
            name: 1-255 characters of any unicode.
            value: int, float (NaN and inf kept), bool or str; numpy/torch scalars too.
            description: accepted for compatibility; not stored.
            step: the point's step (default: one past this metric's last step, from 0).

        Raises:
            TypeError, ValueError: the name or value is refused (nothing is logged).
        """
        try:
            known = name in self._names
        except TypeError:  # unhashable: check_name says what is wrong with it
            known = False
        if not known:
            self._names.add(self._claim(check_name(name), "series"))
        if value.__class__ is not float:
            value = check_value(name, value)
        if step is not None:
            step = check_step(name, step)
        self._append((self._index, name, value, step))
        if self._pipe.attention:
            self._pipe.attend()

    def _claim(self, name: str, kind: str) -> str:
        """``name``, if it is not a metric of another kind already (a table and an image of
        one name could not be read back as either)."""
        known = "series" if name in self._names else self._kinds.get(name, kind)
        if known != kind:
            raise ValueError(f"metric {name!r} is a {known} in this run; it cannot also be a {kind}")
        self._kinds[name] = kind
        return name

    def _emit(self, event: Event) -> None:
        self._append((self._index, event))
        if self._pipe.attention:
            self._pipe.attend()

    # ------------------------------------------------------------- structured values

    def log_list(self, name: str, value: Any, description: str = "") -> None:
        """Log a list of values (a second call appends)."""
        name = self._claim(check_name(name), "series")
        self._emit(ListLogged(name, check_values(name, value), _now()))

    def log_row(self, name: str, description: str | None = None, **kwargs: Any) -> None:
        """Log one row of a table (``run.log_row("Y over X", x=1, y=0.4)``)."""
        name = self._claim(check_name(name), "table")
        self._emit(RowLogged(name, check_row(name, kwargs), _now()))

    def log_table(self, name: str, value: Any, description: str = "") -> None:
        """Log a table: a dict of column name to equal-length lists (a second call appends rows)."""
        name = self._claim(check_name(name), "table")
        self._emit(TableLogged(name, check_table(name, value), _now()))

    def log_image(
        self, name: str, path: str | os.PathLike[str] | None = None, plot: Any = None, description: str = ""
    ) -> None:
        """Log an image from a file (``path``) or a matplotlib figure or ``pyplot`` (``plot``).

        The image is stored as one of the run's files; ``get_metrics`` gives its file name.

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
            suffix = source.suffix.lower() or ".png"
            with source.open("rb") as stream:
                stored = self._store_file(self._image_file_name(name, suffix), stream)
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
        count = self._image_counts.get(name, 0)
        self._image_counts[name] = count + 1
        stem = _UNSAFE_FILE_CHARS.sub("_", name).strip("._") or "image"
        return f"images/{stem}{f'_{count}' if count else ''}{suffix}"

    # -------------------------------------------------------------- tags, properties

    def tag(self, key: str, value: str | None = None) -> None:
        """Set a tag (a later value replaces an earlier one)."""
        self._emit(TagsSet(check_str_map("tag", {key: value}), _now()))

    def set_tags(self, tags: dict[str, Any]) -> None:
        """Set several tags at once."""
        self._emit(TagsSet(check_str_map("tag", tags), _now()))

    def add_properties(self, properties: dict[str, Any]) -> None:
        """Add properties (write-once: a property already set keeps its first value)."""
        self._emit(PropertiesAdded(check_str_map("property", properties), _now()))

    # ------------------------------------------------------------------------ files

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

    # --------------------------------------------------------------------- lifecycle

    def flush(self, timeout: float | None = 10) -> None:
        """Block until everything logged so far is in Redis.

        Raises:
            FlushTimeoutError: not within ``timeout`` (the events stay queued and spooled).
        """
        self._pipe.flush(timeout)

    async def aflush(self, timeout: float | None = 10) -> None:  # noqa: ASYNC109  # mirrors flush()
        """:meth:`flush` for asyncio callers."""
        if isinstance(self._pipe, EventLogger):
            await self._pipe.aflush(timeout)

    def complete(self, *, timeout: float | None = 10) -> None:
        """Mark the run Completed and deliver everything it logged."""
        self._finish("Completed", None, timeout)

    def fail(self, error_details: BaseException | str | None = None, error_code: str | None = None) -> None:
        """Mark the run Failed, with ``error_details`` (an exception or a message) as its error."""
        if isinstance(error_details, BaseException):
            error = f"{type(error_details).__name__}: {error_details}"
        else:
            error = error_details or "failed"
        if error_code:
            error = f"[{error_code}] {error}"
        self._finish("Failed", error, 10)

    def cancel(self) -> None:
        """Mark the run Canceled.

        Raises:
            RunstreamError: the run had ended already; it stays as it ended (``status`` says how).
        """
        self._finish("Canceled", None, 10)
        if self.status != "Canceled":
            raise RunstreamError(f"run {self.id} had ended {self.status}: it stays so")

    def _finish(self, status: Status, error: str | None, timeout: float | None) -> None:
        if self._finished:
            raise RunstreamError(f"run {self.id} is already {self.status}")
        self._finished = True
        if self._handle is not None:
            ended = _lifecycle.settle(self._handle)
            if ended is not None:  # a thread or hook still running after the logger's exit finished it
                self.status = ended
                raise RunstreamError(f"run {self.id} was finished {ended} at exit")
            get_logger().retire(self._handle)  # first, so no heartbeat follows the status
        self._emit(StatusChanged(status, error, _now()))
        self.status = status
        if timeout is not None:
            self.flush(timeout)
            if self.experiment is not None:
                self.status = self._await_record(timeout) or status  # a run that had ended stays so

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._finished or self.status in TERMINAL_STATUSES or os.getpid() != self._pid:
            return  # a forked child leaving the block (SystemExit) leaves the run to its parent
        if exc is None:
            self.complete()
        else:
            self.fail(exc)

    # ---------------------------------------------------------------------- reading

    def get_metrics(self, name: str | None = None) -> dict[str, RecordMetricValue]:
        """Every metric of the run (or the one named), shaped as DESIGN §2's table says.

        Reflects everything this process logged before the call (read-your-writes).
        """
        return self._read(lambda reader: reader.metrics(self.id, name))

    def get_status(self) -> str:
        """The run's status in its record."""
        status = self._read(lambda reader: reader.status(self.id))
        return status or "NotStarted"

    def get_tags(self) -> dict[str, str]:
        return self._read(lambda reader: reader.tags(self.id))

    def get_properties(self) -> dict[str, str]:
        return self._read(lambda reader: reader.properties(self.id))

    def get_details(self) -> dict[str, Any]:
        """id, experiment, status, start/end times, properties, tags, error and files."""
        return self._read(lambda reader: reader.details(self.id))

    def get_children(self) -> list[Run]:
        """The run's child runs, as ``Run`` objects."""
        experiment = self._require_experiment()
        return [Run(experiment, child) for child in self._read(lambda reader: reader.children(self.id))]

    def wait_for_completion(self, show_output: bool = False, timeout: float | None = None) -> dict[str, Any]:
        """Block until the run is Completed, Failed or Canceled, and return its details.

        Follows the run's live stream (no polling); with ``show_output`` prints the
        run's captured output as it arrives.

        Raises:
            RunFailedError: the run failed (its error is in the message).
            TimeoutError: not finished within ``timeout`` seconds.
        """
        return get_logger().call(lambda: self.await_completion(show_output=show_output, timeout=timeout))

    async def await_completion(self, show_output: bool = False, timeout: float | None = None) -> dict[str, Any]:  # noqa: ASYNC109  # mirrors wait_for_completion
        """:meth:`wait_for_completion` for asyncio callers."""
        from runstream.consumer.wait import wait_for_completion  # lazy: DESIGN §1

        workspace = self._require_experiment().workspace
        async with asyncio.timeout(timeout), connect(workspace.settings.redis_url) as client:
            details = await wait_for_completion(client, workspace.keys, self.id, show_output=show_output)
        self.status = details["status"]
        return details

    def subscribe(self, start: str = "beginning", until_final: bool = True) -> Iterator[Update | Resynced]:
        """The run's updates as the collector applies them (a blocking iterator).

        Args:
            start: "beginning", "now", or the id of the last update seen (to resume).
            until_final: stop after the update that ends the run.
        """
        from runstream.consumer.subscribe import follow_sync, subscribe  # lazy: DESIGN §1

        workspace = self._require_experiment().workspace
        logger = get_logger()

        async def updates() -> AsyncIterator[Update | Resynced]:
            async with connect(workspace.settings.redis_url) as client:
                async for item in subscribe(client, workspace.keys, self.id, start=start, until_final=until_final):
                    yield item

        return follow_sync(updates, logger.loop())

    def _require_experiment(self) -> Experiment:
        if self.experiment is None:
            raise RunstreamError("an offline run has no record to read")
        return self.experiment

    def _read(self, query: Callable[[RecordReader], Awaitable[T]], bound: float = READ_BOUND) -> T:
        """Run ``query`` on the record once it holds everything this process logged."""
        workspace = self._require_experiment().workspace
        self.flush(bound)
        return read_back(workspace, self.id, self._handle.seq if self._handle is not None else 0, query, bound)

    def _await_record(self, bound: float) -> Status | None:
        """After a final status: wait until the record shows it, if a collector runs; its status then."""
        workspace = self._require_experiment().workspace
        recorded = await_applied(workspace, self.id, self._handle.seq if self._handle else 0, bound)
        return next((s for s in TERMINAL_STATUSES if s == recorded), None)

    # ------------------------------------------------------------------- child runs

    def child_run(self, name: str | None = None) -> Run:
        """Start a child run in the same experiment (``get_children`` lists them)."""
        if self.experiment is None:
            raise RunstreamError("an offline run cannot have child runs")
        return Run._start(self.experiment, display_name=name, parent_id=self.id)

    # ---------------------------------------------------------------------- context

    @classmethod
    def get_context(cls, allow_offline: bool = True) -> Run:
        """The submitted run this process belongs to, or an offline run.

        Inside a script started by ``exp.submit`` (``RUNSTREAM_RUN_ID`` is set) it
        returns that run.  Elsewhere it returns an offline run that shows what is
        logged and keeps it in memory, unless ``allow_offline`` is False.
        """
        submitted = submitted_run()
        if submitted is None:
            if not allow_offline:
                raise RunstreamError("not inside a submitted run: RUNSTREAM_RUN_ID is not set")
            return OfflineRun()
        from runstream.experiment import Experiment  # experiment imports run: a cycle

        experiment_name, run_id = submitted
        return cls(Experiment(Workspace.from_config(), experiment_name), run_id)

    def get_portal_url(self) -> str:
        """The URL of the run's page on ``runstream serve``."""
        if self.experiment is None or not self.experiment.workspace.settings.server_url:
            raise ConfigError("no server URL is configured: set RUNSTREAM_URL or run `runstream up`")
        return f"{self.experiment.workspace.settings.server_url.rstrip('/')}/runs/{self.id}"


def _attached(experiment: Experiment, run_id: str, display_name: str, parent_id: str | None, status: Status) -> Run:
    """A run unpickled in another process (see ``Run.__reduce__``): attached, not live there."""
    run = Run.__new__(Run)
    run._attach(experiment, run_id, display_name, parent_id, live=False)
    run.status = status
    return run


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
