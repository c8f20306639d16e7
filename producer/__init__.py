"""runstream: experiment tracking on Redis streams.

``import runstream`` is all a training script needs::

    from runstream import Experiment, Workspace

    ws = Workspace.from_config()
    with Experiment(ws, "mnist").start_logging() as run:
        for step in range(100):
            run.log("loss", 1 / (step + 1))

This package is the producer side: the logging API, the non-blocking logger, and the
contract every part shares (:mod:`runstream.events`, :mod:`runstream.codec`,
:mod:`runstream.keys`).  Reading lives in :mod:`runstream.consumer`, the collector
in :mod:`runstream.collector`.
"""

from __future__ import annotations

from runstream.artifacts import ArtifactStore, LocalArtifactStore, StoredFile
from runstream.config import Settings
from runstream.errors import (
    ConfigError,
    FlushTimeoutError,
    InvalidNameError,
    InvalidValueError,
    RunstreamError,
    SpoolError,
)
from runstream.experiment import Experiment
from runstream.logger import LoggerStats, get_logger
from runstream.offline_run import OfflineRun
from runstream.run import Run
from runstream.submit import Environment, ScriptRunConfig
from runstream.workspace import Workspace

__all__ = [
    "ArtifactStore",
    "ConfigError",
    "Environment",
    "Experiment",
    "FlushTimeoutError",
    "InvalidNameError",
    "InvalidValueError",
    "LocalArtifactStore",
    "LoggerStats",
    "OfflineRun",
    "Run",
    "RunstreamError",
    "ScriptRunConfig",
    "Settings",
    "SpoolError",
    "StoredFile",
    "Workspace",
    "logger_stats",
]

__version__ = "0.1.0"


def logger_stats() -> LoggerStats:
    """Counters of this process's logger: events logged and sent, batches, bytes,
    spooled batches, retries, buffer depth and what is still pending."""
    return get_logger().stats
