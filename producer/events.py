"""The events a producer emits: the vocabulary shared by every part of runstream.

An *event* is one thing that happened to a run.  Events travel in batches (one
batch = one stream entry = one run's events, see :mod:`runstream.codec`); the
collector folds them into the run's *record*.  Event classes are past tense; the
snake_case ``TYPE`` of each class is its discriminator on the wire.

Scalar points of one metric travel columnar (:class:`MetricsLogged` holds the
steps and values of many points), everything else one event per call.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar, Final, Literal, TypeAlias

__all__ = [
    "MAX_LIST_LEN",
    "MAX_NAME_LEN",
    "MAX_STR_LEN",
    "MAX_TABLE_CELLS",
    "RUN_STATUSES",
    "STATUS_RANK",
    "TERMINAL_STATUSES",
    "Event",
    "FileUploaded",
    "HeartbeatSent",
    "ImageLogged",
    "ListLogged",
    "MetricsLogged",
    "OutputLogged",
    "PropertiesAdded",
    "RowLogged",
    "RunStarted",
    "Status",
    "StatusChanged",
    "TableLogged",
    "TagsSet",
    "Value",
    "status_follows",
]

#: What a metric value can be; each comes back with the type it was logged with.
Value: TypeAlias = int | float | bool | str

Status = Literal[
    "NotStarted", "Queued", "Starting", "Running", "NotResponding", "Finalizing", "Completed", "Failed", "Canceled"
]
RUN_STATUSES: Final[tuple[Status, ...]] = (
    "NotStarted",
    "Queued",
    "Starting",
    "Running",
    "NotResponding",
    "Finalizing",
    "Completed",
    "Failed",
    "Canceled",
)
TERMINAL_STATUSES: Final[frozenset[Status]] = frozenset({"Completed", "Failed", "Canceled"})
#: How far along each status is.  A run's status only moves forward (to an equal or higher
#: rank) and never leaves a final one (rank 5); ``collector/apply.lua`` holds the same table.
#: ``NotResponding`` (Azure ML's status for a run whose heartbeats stopped: paused, busy or
#: gone) is the exception: any status short of final may become it, and it shares Running's
#: rank, so the run goes back to Running (or on to an end) when it is heard from again.
STATUS_RANK: Final[Mapping[str, int]] = {
    "NotStarted": 0,
    "Queued": 1,
    "Starting": 2,
    "Running": 3,
    "NotResponding": 3,
    "Finalizing": 4,
    "Completed": 5,
    "Failed": 5,
    "Canceled": 5,
}


def status_follows(current: str | None, status: Status) -> bool:
    """Whether a run whose status is ``current`` (None: none yet) may move to ``status``."""
    if current in TERMINAL_STATUSES:
        return False
    if status == "NotResponding":
        return current != "NotResponding"
    return STATUS_RANK[status] >= (-1 if current is None else STATUS_RANK.get(current, -1))


#: Longest metric, tag, property, column or file name, in characters.
MAX_NAME_LEN: Final = 255
#: Longest str value (metric value, tag or property value, output line), in characters.
MAX_STR_LEN: Final = 65_536
#: Most values one ``log_list`` call may carry.
MAX_LIST_LEN: Final = 1_000_000
#: Most cells (rows x columns) one ``log_table`` call may carry.
MAX_TABLE_CELLS: Final = 1_000_000


@dataclass(frozen=True, slots=True)
class RunStarted:
    """A run was created (by ``start_logging``, ``child_run`` or ``submit``)."""

    TYPE: ClassVar[str] = "run_started"
    experiment: str
    display_name: str
    parent_id: str | None
    status: Status
    timestamp: float


@dataclass(frozen=True, slots=True)
class MetricsLogged:
    """Points of one scalar metric, columnar: ``steps[i]`` and ``values[i]``.

    ``steps`` is a ``range`` when the steps are consecutive (the default steps
    always are), which the wire carries as its first step alone.

    ``timestamp`` is when the logger took the points from its buffer: reading the
    clock on every ``log`` would cost a system call on some machines, and the buffer
    is drained every linger (``Settings.linger_ms``, a few milliseconds; up to ten
    times that while many points flow), so it is the time of each point to that precision.
    """

    TYPE: ClassVar[str] = "metric"
    name: str
    steps: range | list[int]
    values: list[Value]
    timestamp: float


@dataclass(frozen=True, slots=True)
class ListLogged:
    """``log_list``: values appended to a list metric."""

    TYPE: ClassVar[str] = "list"
    name: str
    values: list[Value]
    timestamp: float


@dataclass(frozen=True, slots=True)
class RowLogged:
    """``log_row``: one row of a table built row by row."""

    TYPE: ClassVar[str] = "row"
    name: str
    row: dict[str, Value]
    timestamp: float


@dataclass(frozen=True, slots=True)
class TableLogged:
    """``log_table``: columns of equal length, appended as rows."""

    TYPE: ClassVar[str] = "table"
    name: str
    columns: dict[str, list[Value]]
    timestamp: float


@dataclass(frozen=True, slots=True)
class ImageLogged:
    """``log_image``: an image stored as the run's file ``file``."""

    TYPE: ClassVar[str] = "image"
    name: str
    file: str
    timestamp: float


@dataclass(frozen=True, slots=True)
class TagsSet:
    """``tag`` / ``set_tags``: tags set (a later value replaces an earlier one)."""

    TYPE: ClassVar[str] = "tag"
    tags: dict[str, str]
    timestamp: float


@dataclass(frozen=True, slots=True)
class PropertiesAdded:
    """``add_properties``: properties added (write-once, as in Azure ML)."""

    TYPE: ClassVar[str] = "property"
    properties: dict[str, str]
    timestamp: float


@dataclass(frozen=True, slots=True)
class FileUploaded:
    """A file was stored in the artifact store under the run's ``name``."""

    TYPE: ClassVar[str] = "file"
    name: str
    size: int
    sha256: str
    timestamp: float


@dataclass(frozen=True, slots=True)
class OutputLogged:
    """Lines of captured output (``stream`` is "stdout" or "stderr")."""

    TYPE: ClassVar[str] = "log_line"
    stream: Literal["stdout", "stderr"]
    lines: list[str]
    timestamp: float


@dataclass(frozen=True, slots=True)
class StatusChanged:
    """The run moved to ``status``; ``error`` holds the failure details when Failed."""

    TYPE: ClassVar[str] = "status"
    status: Status
    error: str | None
    timestamp: float


@dataclass(frozen=True, slots=True)
class HeartbeatSent:
    """The producing process is alive (sent every few seconds per live run)."""

    TYPE: ClassVar[str] = "heartbeat"
    timestamp: float


Event: TypeAlias = (
    RunStarted
    | MetricsLogged
    | ListLogged
    | RowLogged
    | TableLogged
    | ImageLogged
    | TagsSet
    | PropertiesAdded
    | FileUploaded
    | OutputLogged
    | StatusChanged
    | HeartbeatSent
)
