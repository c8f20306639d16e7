"""Offline runs: what ``Run.get_context()`` returns outside a submitted run.

Nothing goes to Redis.  Each logged item is shown through structlog (so a script run
by hand shows what it would have logged) and folded into a local record, so
``get_metrics`` and friends answer as they would for a live run.
"""

from __future__ import annotations

from typing import Any

from runstream._batcher import Item
from runstream._log import sdk_logger
from runstream.events import (
    FileUploaded,
    ImageLogged,
    ListLogged,
    PropertiesAdded,
    RowLogged,
    StatusChanged,
    TableLogged,
    TagsSet,
    Value,
)

__all__ = ["OfflineRecorder"]

#: What ``get_metrics`` returns for one metric (see the table in DESIGN §2).
MetricValue = Value | list[Any] | dict[str, list[Value]]


class OfflineRecorder:
    """Stands in for the logger of an offline run: never needs attention, keeps all."""

    flag = b"\0"  # never needs attention

    def __init__(self) -> None:
        self.series: dict[str, list[Value]] = {}
        self.tables: dict[str, dict[str, list[Value]]] = {}
        self.images: dict[str, list[str]] = {}
        self.lists: set[str] = set()
        self.tags: dict[str, str] = {}
        self.properties: dict[str, str] = {}
        self.files: list[str] = []
        self.status = "Running"
        self.error: str | None = None
        self._log = sdk_logger("runstream.offline")

    def attend(self) -> None:
        """Never called: ``attention`` is always False."""

    def flush(self, timeout: float | None = None) -> None:
        """Nothing to deliver."""

    def append(self, item: Item) -> None:
        if len(item) == 4:
            _, name, value, _ = item
            self.series.setdefault(name, []).append(value)
            self._log.info("offline_metric", name=name, value=value)
            return
        event = item[1]
        self._log.info("offline_event", type=event.TYPE, detail=repr(event))
        if isinstance(event, ListLogged | RowLogged | TableLogged | ImageLogged):
            self._fold_metric(event)
            return
        match event:
            case TagsSet(tags, _):
                self.tags.update(tags)
            case PropertiesAdded(properties, _):
                for key, value in properties.items():
                    self.properties.setdefault(key, value)
            case FileUploaded(name=name):
                self.files.append(name)
            case StatusChanged(status, error, _):
                self.status, self.error = status, error
            case _:
                pass

    def _fold_metric(self, event: ListLogged | RowLogged | TableLogged | ImageLogged) -> None:
        match event:
            case ListLogged(name, values, _):
                self.lists.add(name)
                self.series.setdefault(name, []).extend(values)
            case RowLogged(name, row, _):
                self._add_rows(name, {column: [value] for column, value in row.items()})
            case TableLogged(name, columns, _):
                self._add_rows(name, columns)
            case ImageLogged(name, file, _):
                self.images.setdefault(name, []).append(file)

    def _add_rows(self, name: str, columns: dict[str, list[Value]]) -> None:
        table = self.tables.setdefault(name, {})
        for column, values in columns.items():
            table.setdefault(column, []).extend(values)

    def metrics(self) -> dict[str, MetricValue]:
        result: dict[str, MetricValue] = {}
        for name, values in self.series.items():
            result[name] = values[0] if len(values) == 1 and name not in self.lists else list(values)
        for name, columns in self.tables.items():
            result[name] = {column: list(values) for column, values in columns.items()}
        for name, files in self.images.items():
            result[name] = files[0] if len(files) == 1 else list(files)
        return result
