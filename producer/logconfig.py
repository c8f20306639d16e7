"""structlog setup for runstream's own entry points (collector, server, CLI).

Only processes that runstream starts call :func:`configure_logging`; the SDK never
does, since it runs inside the user's process.  On a terminal the lines are readable
(``ConsoleRenderer``); elsewhere (services, containers, CI) one JSON object per line,
with tracebacks as structured data.
"""

from __future__ import annotations

import importlib.util
import logging
import sys
from typing import TextIO

import structlog
from structlog.tracebacks import ExceptionDictTransformer

__all__ = ["configure_logging"]


def configure_logging(*, json: bool | None = None, level: str = "info", stream: TextIO | None = None) -> None:
    """Configure structlog once, at a process entry point.

    Args:
        json: JSON lines (True) or console lines (False); default: JSON unless ``stream`` is a TTY.
        level: the lowest level written ("debug", "info", "warning", "error").
        stream: where lines go (default: stderr).
    """
    out = stream or sys.stderr
    use_json = not out.isatty() if json is None else json
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer()
        if use_json
        else structlog.dev.ConsoleRenderer(colors=out.isatty(), exception_formatter=_console_tracebacks())
    )
    processors: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    if use_json:
        # Not structlog's dict_tracebacks: it shows each frame's locals, and a frame of the
        # Redis client's login holds the password (a failed re-login logged it whole).
        processors.append(structlog.processors.ExceptionRenderer(ExceptionDictTransformer(show_locals=False)))
    processors.append(renderer)
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelNamesMapping()[level.upper()]),
        # One write per record, newline included (PrintLogger writes the two apart): processes
        # sharing a log file or a pipe then never glue two records into one line.
        logger_factory=structlog.WriteLoggerFactory(out),
        cache_logger_on_first_use=False,
    )


def _console_tracebacks() -> structlog.typing.ExceptionRenderer:
    """Tracebacks on a terminal: rich's if installed, without locals (see the JSON case); else
    plain ones (better-exceptions, structlog's other choice, prints variables too)."""
    if importlib.util.find_spec("rich") is not None:
        return structlog.dev.RichTracebackFormatter(show_locals=False)
    return structlog.dev.plain_traceback
