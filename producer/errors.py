"""Errors raised by the runstream SDK, rooted at :class:`RunstreamError`.

Input errors are raised as ``TypeError``/``ValueError`` subclasses so callers that
catch the builtins keep working; everything else derives from ``RunstreamError``.
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "DecodeError",
    "FlushTimeoutError",
    "InvalidNameError",
    "InvalidValueError",
    "LoggerError",
    "RunstreamError",
    "SpoolError",
]


class RunstreamError(Exception):
    """Base class of every error runstream raises on its own account."""


class InvalidNameError(RunstreamError, ValueError):
    """A metric, tag, property or file name was refused at the call."""


class InvalidValueError(RunstreamError, ValueError):
    """A logged value was refused at the call (wrong shape or out of range)."""


class ConfigError(RunstreamError):
    """The workspace configuration is missing or unusable."""


class FlushTimeoutError(RunstreamError, TimeoutError):
    """``flush`` could not deliver every logged event to Redis in time.

    The events are not lost: they stay queued (in memory, then in the spool
    file) and are sent when Redis answers again.
    """


class SpoolError(RunstreamError):
    """Redis is unreachable and the on-disk spool cannot be written either."""


class LoggerError(RunstreamError):
    """The logger thread hit an unexpected error; ``log`` and ``flush`` raise it from then on."""


class RunNotFoundError(RunstreamError, LookupError):
    """No run of that id in the workspace (``Run(experiment, run_id)``, ``Run.get``)."""


class DecodeError(RunstreamError):
    """A stream entry could not be decoded into events; ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
