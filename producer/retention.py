"""How long ended runs stay where: archived after a while, deleted after a longer one, or kept.

A workspace's collectors have defaults (``runstream collector --archive-after``,
``--delete-after``); an experiment may have its own, set with
:meth:`runstream.Experiment.set_retention`, kept in the workspace's retention hash
(``keys.retention()``: experiment -> JSON) where every collector reads it.  A figure is
seconds after the run's end, or ``None``: never (keep forever).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

__all__ = ["DEFAULT", "NEVER", "Retention", "decode_retention", "encode_retention"]

#: An experiment's retention leaves a figure to the workspace's default.
DEFAULT: Final = "default"
NEVER: Final = "never"


@dataclass(frozen=True, slots=True)
class Retention:
    """Seconds after the end that a run is archived, and deleted (None: never)."""

    archive_after: float | None
    delete_after: float | None

    def with_own(self, own: Mapping[str, float | None]) -> Retention:
        """These figures (the defaults) with what ``own`` (an experiment's) sets instead."""
        return Retention(own.get("archive_after", self.archive_after), own.get("delete_after", self.delete_after))


def _seconds(name: str, value: object) -> float | None:
    if value is None or value == NEVER:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a number of seconds (0 or more) or None for never, not {value!r}")
    return float(value)


def encode_retention(archive_after: object = DEFAULT, delete_after: object = DEFAULT) -> str | None:
    """An experiment's retention as stored; None when both figures are the workspace's.

    Raises:
        ValueError: a figure is neither seconds, None (never), nor "default".
    """
    own = {
        name: NEVER if (seconds := _seconds(name, value)) is None else seconds
        for name, value in (("archive_after", archive_after), ("delete_after", delete_after))
        if value != DEFAULT
    }
    return json.dumps(own, sort_keys=True) if own else None


def decode_retention(raw: bytes | str) -> dict[str, float | None]:
    """An experiment's own figures (those it leaves to the default are absent); {} if unreadable."""
    try:
        own = json.loads(raw)
        return {name: _seconds(name, own[name]) for name in ("archive_after", "delete_after") if name in own}
    except (ValueError, TypeError, AttributeError):
        return {}
