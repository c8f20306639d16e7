"""Runs: the logging API a training script calls (Azure ML SDK v1 ``Run`` style).

Every ``log*`` call checks its input at the door (:mod:`runstream.validation`),
appends one tuple to the process's buffer and returns: no I/O, no lock.  Files and
images are :mod:`runstream._run_files`; reading the run back is :mod:`runstream._run_reads`;
offline runs are :mod:`runstream.offline_run`.
"""

from __future__ import annotations

import os
import secrets
import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, Protocol, Self, cast

from redis.exceptions import ConnectionError as RedisConnectionError

from runstream import _lifecycle
from runstream._batcher import Item, RunHandle
from runstream._log import sdk_logger
from runstream._readback import recorded_metas
from runstream._run_files import RunFiles
from runstream._run_lookup import RunLookup
from runstream._run_reads import RunReads
from runstream._run_storage import RunStorage
from runstream.artifacts import ArtifactStore
from runstream.errors import ConfigError, InvalidValueError, RunNotFoundError, RunstreamError
from runstream.events import (
    TERMINAL_STATUSES,
    Event,
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
    check_name,
    check_row,
    check_step,
    check_str_map,
    check_table,
    check_value,
    check_values,
)
from runstream.workspace import server_url

if TYPE_CHECKING:
    from runstream.experiment import Experiment

__all__ = ["Run"]

_now = time.time


class _Pipe(Protocol):
    """Where a run's items go: the process's logger, or an offline recorder."""

    @property
    def flag(self) -> bytes | bytearray | memoryview:
        """``flag[0]``: whether ``attend`` must be called (read by every ``log``)."""

    def attend(self) -> None: ...

    def flush(self, timeout: float | None = ...) -> None: ...


class Run(RunFiles, RunReads, RunStorage, RunLookup):
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
        """Attach to the run ``run_id``, as its record has it (status, display name, parent).

        Raises:
            RunNotFoundError: the workspace has no such run (one started a moment ago
                elsewhere is waited for while a collector runs; one started in the last ten
                minutes without a record yet is attached, its status NotStarted).
            ValueError: ``run_id`` is not a run id.
        """
        known = _runs.get(check_run_id(run_id))
        if known is not None and known.experiment is not None:  # this process made it: no read
            self._attach(experiment, run_id, known.display_name, known.parent_id, live=False)
            self.status = known.status
            return
        try:
            meta = recorded_metas(experiment.workspace, [run_id], wait=True).get(run_id)
        except RedisConnectionError as exc:  # Redis out of reach: attached all the same, logs spool
            sdk_logger("runstream.run").warning("run_record_not_read", run_id=run_id, error=repr(exc))
            self._attach_recorded(experiment, run_id, {})
            return
        if meta is None and _lately_started(run_id):
            # Started in the last minutes elsewhere, its first batch still on its way (collectors
            # behind, or none running yet): attached, as its producers log to it all the same.
            sdk_logger("runstream.run").info("run_record_not_yet", run_id=run_id)
            self._attach_recorded(experiment, run_id, {})
            return
        if meta is None or "deleted" in meta:
            said = "was deleted" if meta else "does not exist"
            raise RunNotFoundError(f"run {run_id!r} of workspace {experiment.workspace.name!r} {said}")
        self._attach_recorded(experiment, run_id, meta)

    def _attach_recorded(self, experiment: Experiment, run_id: str, meta: dict[str, str]) -> None:
        """Attach to the run whose record's meta hash is ``meta`` ({}: no record to go by, so
        named by its id, without a parent, NotStarted)."""
        parent_id = meta.get("parent_id") or None
        self._attach(experiment, run_id, meta.get("display_name") or run_id, parent_id, live=False)
        self.status: Status = cast("Status", meta.get("status", "NotStarted"))

    @classmethod
    def _recorded(cls, experiment: Experiment, run_ids: Sequence[str]) -> Iterator[Self]:
        """The runs of ``run_ids`` that have a record, each as its record has it (one read)."""
        metas = recorded_metas(experiment.workspace, run_ids, wait=False)
        for run_id in run_ids:
            if (meta := metas.get(run_id)) is not None and "deleted" not in meta:
                run = cls.__new__(cls)
                run._attach_recorded(experiment, run_id, meta)
                yield run

    def _attach(
        self, experiment: Experiment, run_id: str, display_name: str, parent_id: str | None, live: bool
    ) -> None:
        workspace = experiment.workspace
        logger = get_logger()
        self.experiment = experiment
        self.id = check_run_id(run_id)  # it names a folder and a hash tag: refused before either
        _runs[self.id] = self
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
        #: The properties set so far, as far as this process knows (None: not read yet).
        self._properties: dict[str, str] | None = None
        self._pid = os.getpid()  # a forked child's copy leaves the run to this process (see __exit__)

    @classmethod
    def _start(
        cls, experiment: Experiment, display_name: str | None, parent_id: str | None, status: Status = "Running"
    ) -> Self:
        run_id = f"{experiment.name}_{int(_now())}_{secrets.token_hex(4)}"
        run = cls.__new__(cls)
        run._attach(experiment, run_id, display_name or run_id, parent_id, live=status == "Running")
        run.status = status
        run._properties = {}  # a new run: only what this object adds
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
        if self._pipe.flag[0]:
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
        if self._pipe.flag[0]:
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

    # -------------------------------------------------------------- tags, properties

    def tag(self, key: str, value: str | None = None) -> None:
        """Set a tag (a later value replaces an earlier one)."""
        self._emit(TagsSet(check_str_map("tag", {key: value}), _now()))

    def set_tags(self, tags: dict[str, Any]) -> None:
        """Set several tags at once."""
        self._emit(TagsSet(check_str_map("tag", tags), _now()))

    def add_properties(self, properties: dict[str, Any]) -> None:
        """Add properties: immutable, as Azure's, so one already set may be added again
        with its value only.

        Raises:
            InvalidValueError: a property already has another value (nothing is added).
        """
        checked = check_str_map("property", properties)
        if self._properties is None:  # attached to a run: what its record holds so far
            self._properties = self._read_now(lambda reader: reader.properties(self.id))
        if clash := sorted(k for k, v in checked.items() if self._properties.get(k, v) != v):
            shown = ", ".join(f"{k!r} is {self._properties[k]!r}" for k in clash[:5])
            raise InvalidValueError(f"properties are immutable: {shown}, not {checked[clash[0]]!r}")
        self._properties.update(checked)
        self._emit(PropertiesAdded(checked, _now()))

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
        if exc is None or (isinstance(exc, SystemExit) and exc.code in (None, 0)):
            self.complete()  # sys.exit(0) inside the block is a normal end, as Azure's Run takes it
        else:
            self.fail(exc)

    # ------------------------------------------------------------------- child runs

    def child_run(self, name: str | None = None) -> Run:
        """Start a child run in the same experiment (``get_children`` lists them)."""
        if self.experiment is None:
            raise RunstreamError("an offline run cannot have child runs")
        return Run._start(self.experiment, display_name=name, parent_id=self.id)

    def get_portal_url(self) -> str:
        """The URL of the run's page: on the server the configuration names, else on the one
        ``runstream up`` runs for the data folder.

        Raises:
            ConfigError: there is neither (or the run is offline).
        """
        if self.experiment is None:
            raise ConfigError("an offline run has no page")
        return f"{server_url(self.experiment.workspace.settings)}/runs/{self.id}"


#: Seconds after its start during which a run without a record yet is not called unknown.
_LATELY: Final = 600.0


def _lately_started(run_id: str) -> bool:
    """Whether the run id names a start within the last :data:`_LATELY` seconds."""
    from runstream.consumer.reader import created_at  # the SDK reads lazily (DESIGN §1)

    made = created_at(run_id)
    return made is not None and abs(time.time() - made) <= _LATELY


#: The runs this process holds, by id: ``Run(experiment, run_id)`` of one needs no record.
_runs: weakref.WeakValueDictionary[str, Run] = weakref.WeakValueDictionary()


def _attached(experiment: Experiment, run_id: str, display_name: str, parent_id: str | None, status: Status) -> Run:
    """A run unpickled in another process (see ``Run.__reduce__``): attached, not live there."""
    run = Run.__new__(Run)
    run._attach(experiment, run_id, display_name, parent_id, live=False)
    run.status = status
    return run
